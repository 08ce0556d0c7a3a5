//! A subscription request as plain data: the pairs of one datagram (spec §1.4).

use core::fmt;

/// What a datagram asks for: header byte 3 (spec §1.2). uWSGI treats every value but 0 as
/// an unsubscribe; senders use 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Header byte 3 = 0: subscribe, or refresh an existing node.
    Subscribe,
    /// Header byte 3 ≠ 0 (1 when we send): unsubscribe.
    Unsubscribe,
}

impl Command {
    /// The header byte 3 this crate sends: 0 or 1.
    pub const fn modifier2(self) -> u8 {
        match self {
            Self::Subscribe => 0,
            Self::Unsubscribe => 1,
        }
    }
}

/// The pairs of one subscription datagram, decoded (spec §1.4).
///
/// Byte strings stay bytes. Absent optional keys are `None`; absent numbers are 0, as the
/// uWSGI router reads them. `weight` is kept as sent (uWSGI stores 0 as 1: that is the
/// table's business, not the codec's).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Request {
    /// `key`: the pool name (domain, `host:port`, …). At most 255 bytes.
    pub key: Vec<u8>,
    /// `address`: where the router connects: `host:port` (TCP) or a unix path.
    pub address: Vec<u8>,
    /// `modifier1` the router writes into requests it forwards to this node.
    pub modifier1: u8,
    /// `modifier2` the router writes into requests it forwards to this node.
    pub modifier2: u8,
    /// `cores`: informational.
    pub cores: u64,
    /// `load`: informational.
    pub load: u64,
    /// `weight`: balancing weight (0 counts as 1).
    pub weight: u64,
    /// `sni_key`: key file of an SNI context (SSL routers).
    pub sni_key: Option<Vec<u8>>,
    /// `sni_crt`: certificate file of an SNI context.
    pub sni_crt: Option<Vec<u8>>,
    /// `sni_ca`: client CA file of an SNI context.
    pub sni_ca: Option<Vec<u8>>,
    /// `notify`: unix datagram socket path that receives the "new node" acknowledgement.
    pub notify: Option<Vec<u8>>,
    /// `unix`: anti-replay stamp of signed requests (send time + command).
    pub unix: Option<u64>,
    /// `sign`: the signature; always the last pair on the wire.
    pub sign: Option<Vec<u8>>,
    /// `backup` (uWSGI 2.1): backup level.
    pub backup: Option<u64>,
    /// `algo` (uWSGI 2.1): balancing algorithm for a pool this request creates.
    pub algo: Option<Vec<u8>>,
    /// `proto` (uWSGI 2.1): first byte only: `u` uwsgi, `h` http, `f` fastcgi, `s` scgi.
    pub proto: Option<u8>,
    /// `vassal` (uWSGI 2.1): vassal name.
    pub vassal: Option<Vec<u8>>,
    /// `clear` (uWSGI 2.1): erase the address, keep the vassal node.
    pub clear: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |b: &[u8]| b.escape_ascii().to_string();
        let o = |b: &Option<Vec<u8>>| b.as_deref().map(s);
        f.debug_struct("Request")
            .field("key", &s(&self.key))
            .field("address", &s(&self.address))
            .field("modifier1", &self.modifier1)
            .field("modifier2", &self.modifier2)
            .field("cores", &self.cores)
            .field("load", &self.load)
            .field("weight", &self.weight)
            .field("sni_key", &o(&self.sni_key))
            .field("sni_crt", &o(&self.sni_crt))
            .field("sni_ca", &o(&self.sni_ca))
            .field("notify", &o(&self.notify))
            .field("unix", &self.unix)
            .field("sign_len", &self.sign.as_ref().map(Vec::len))
            .field("backup", &self.backup)
            .field("algo", &o(&self.algo))
            .field("proto", &self.proto)
            .field("vassal", &o(&self.vassal))
            .field("clear", &self.clear)
            .finish()
    }
}
