//! The announce: the one message of the Legion protocol, as plain data.
//!
//! Encoding and encryption are in [`wire`](crate::wire); this module only holds the fields.

use core::fmt;

/// Length of a uuid on the wire: 36 ASCII characters, lowercase canonical form.
pub const UUID_LEN: usize = 36;

/// A node's uuid as uWSGI sends it: 36 bytes, compared byte-wise.
///
/// uWSGI generates a new random uuid every time a legion starts (spec §1.4, key 7). Between
/// two nodes of equal valor the **greater** uuid wins the election (spec §3.5, edge case
/// 4.1), so the ordering here is the byte-wise order of the 36 characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeUuid([u8; UUID_LEN]);

impl NodeUuid {
    /// 36 NUL bytes: what uWSGI announces as `lord_uuid` before its first election round,
    /// and what it stores for a uuid that is not exactly 36 bytes long (spec §1.4).
    pub const NIL: Self = Self([0; UUID_LEN]);

    /// Wraps 36 bytes as they are.
    pub const fn from_array(bytes: [u8; UUID_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a uuid field as uWSGI does: exactly 36 bytes are taken as they are; any
    /// other length gives [`NodeUuid::NIL`] (spec §1.4, edge case 4.9).
    pub fn from_wire(bytes: &[u8]) -> Self {
        bytes.try_into().map_or(Self::NIL, Self)
    }

    /// A random (version 4) uuid in canonical lowercase form, from 16 random bytes the
    /// caller provides (the core has no randomness of its own).
    pub fn from_random(random: [u8; 16]) -> Self {
        let mut b = random;
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; UUID_LEN];
        let mut o = 0;
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[o] = b'-';
                o += 1;
            }
            out[o] = HEX[usize::from(byte >> 4)];
            out[o + 1] = HEX[usize::from(byte & 0x0f)];
            o += 2;
        }
        Self(out)
    }

    /// The 36 bytes.
    pub const fn as_bytes(&self) -> &[u8; UUID_LEN] {
        &self.0
    }

    /// Whether this is [`NodeUuid::NIL`].
    pub fn is_nil(&self) -> bool {
        self.0 == [0; UUID_LEN]
    }

    /// The sum of the 36 bytes, as the membership checksum adds them (spec §3.6).
    pub fn byte_sum(&self) -> u64 {
        self.0.iter().map(|&b| u64::from(b)).sum()
    }
}

impl fmt::Display for NodeUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_nil() {
            return f.write_str("(nil)");
        }
        write!(f, "{}", self.0.escape_ascii())
    }
}

impl fmt::Debug for NodeUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUuid({self})")
    }
}

/// Our extension to the announce, carried in one extra key that uWSGI ignores
/// (spec edge case 4.21: unknown keys are ignored, so the wire stays compatible).
///
/// Its presence marks the sender as one of ours: such peers may be sent triggered and
/// fast-timer announces, which would starve a uWSGI node (spec §3.2, edge case 4.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extension {
    /// Extension format version; this crate writes 1 and reads any version ≥ 1.
    pub version: u32,
    /// The sender's lord epoch: the fencing token of the newest lord it knows of.
    pub epoch: u64,
}

/// One Legion announce, decrypted and decoded.
///
/// Field names and meanings are uWSGI's (spec §1.4). Numbers are the values on the wire.
/// Missing keys read as uWSGI reads them: 0, empty, or [`NodeUuid::NIL`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Announce {
    /// `legion`: the legion's name; receivers drop announces for another name.
    pub legion: Vec<u8>,
    /// `valor`: priority, higher wins; 0 is an arbiter (votes, never lord).
    pub valor: u64,
    /// `unix`: the sender's wall clock at send time, in seconds.
    pub unix: u64,
    /// `lord`: the unix time the sender became lord, 0 if it is not lord (informational).
    pub lord: u64,
    /// `name`: the sender's host name; part of its identity.
    pub name: Vec<u8>,
    /// `pid`: the sender's process id; used only for loop detection.
    pub pid: u64,
    /// `uuid`: the sender's identity, new at every start.
    pub uuid: NodeUuid,
    /// `checksum`: the sender's membership checksum from its last election round.
    pub checksum: u64,
    /// `lord_valor`: valor of the sender's current best candidate (its vote).
    pub lord_valor: u64,
    /// `lord_uuid`: uuid of that candidate.
    pub lord_uuid: NodeUuid,
    /// `scroll`: the sender's opaque blob; sent only when non-empty.
    pub scroll: Vec<u8>,
    /// `dead`: present in death announces (leaving, or suspended).
    pub dead: bool,
    /// Our extension key, absent in announces from uWSGI.
    pub ext: Option<Extension>,
}

impl fmt::Debug for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announce")
            .field("legion", &self.legion.escape_ascii().to_string())
            .field("valor", &self.valor)
            .field("unix", &self.unix)
            .field("lord", &self.lord)
            .field("name", &self.name.escape_ascii().to_string())
            .field("pid", &self.pid)
            .field("uuid", &self.uuid)
            .field("checksum", &self.checksum)
            .field("lord_valor", &self.lord_valor)
            .field("lord_uuid", &self.lord_uuid)
            .field("scroll_len", &self.scroll.len())
            .field("dead", &self.dead)
            .field("ext", &self.ext)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_order_is_bytewise_and_checksum_is_the_byte_sum() {
        let a = NodeUuid::from_wire(b"58be0885-c1e5-40ad-b7b5-0bc07f46c3ad");
        let f = NodeUuid::from_wire(b"f0000000-0000-4000-8000-000000000000");
        assert!(f > a, "'f...' beats '5...'");
        // Spec §3.6 example: valor 10 + byte sum = 2517.
        assert_eq!(10 + a.byte_sum(), 2517);
        assert_eq!(NodeUuid::from_wire(b"short"), NodeUuid::NIL);
    }

    #[test]
    fn random_uuids_are_canonical_v4() {
        let u = NodeUuid::from_random([0xab; 16]);
        assert_eq!(u.as_bytes(), b"abababab-abab-4bab-abab-abababababab");
    }
}
