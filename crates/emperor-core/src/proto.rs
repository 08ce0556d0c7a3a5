//! The emperor ↔ vassal control channel (spec §1): single bytes on a `SOCK_STREAM`
//! socketpair, and the config pipe's 4-byte header.
//!
//! Pure: no fds, no syscalls.

use thiserror::Error;

/// A byte the emperor writes to a vassal (spec §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToVassal {
    /// 0: stop now (brutal shutdown, exit 0).
    Stop,
    /// 1: reload gracefully, in place (same pid).
    Reload,
    /// 2: stop gracefully.
    GracefulStop,
}

impl ToVassal {
    /// The byte on the wire.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            Self::Stop => 0,
            Self::Reload => 1,
            Self::GracefulStop => 2,
        }
    }

    /// Reads a byte from the emperor; `None` for bytes uWSGI never sends (a vassal logs
    /// and ignores them).
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Stop),
            1 => Some(Self::Reload),
            2 => Some(Self::GracefulStop),
            _ => None,
        }
    }
}

/// A byte a vassal writes to its emperor (spec §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FromVassal {
    /// 1: ready (the master, on its first start only).
    Ready,
    /// 2: "send me my config" (before a self re-exec, config pipe mode).
    ConfigRequest,
    /// 5: accepting (worker 1 entered its request loop).
    Accepting,
    /// 17: loyal (a worker completed its first request).
    Loyal,
    /// 22: "stop me" (`--die-on-idle`).
    VoluntaryShutdown,
    /// 26: heartbeat.
    Heartbeat,
    /// 30: SOS, asking for broodlord zergs.
    Sos,
}

impl FromVassal {
    /// The byte on the wire.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            Self::Ready => 1,
            Self::ConfigRequest => 2,
            Self::Accepting => 5,
            Self::Loyal => 17,
            Self::VoluntaryShutdown => 22,
            Self::Heartbeat => 26,
            Self::Sos => 30,
        }
    }

    /// Reads a byte from a vassal; `None` for bytes with no meaning (the emperor ignores
    /// them silently, as uWSGI does).
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Ready),
            2 => Some(Self::ConfigRequest),
            5 => Some(Self::Accepting),
            17 => Some(Self::Loyal),
            22 => Some(Self::VoluntaryShutdown),
            26 => Some(Self::Heartbeat),
            30 => Some(Self::Sos),
            _ => None,
        }
    }
}

/// `modifier1` of the config pipe header.
pub const CONFIG_MODIFIER1: u8 = 115;

/// Length of the config pipe header.
pub const CONFIG_HEADER_LEN: usize = 4;

/// The largest config the 16-bit size field can carry. uWSGI 2.0.21 silently truncates the
/// size of a larger one and corrupts the stream (spec §1.3); this crate refuses it.
pub const MAX_CONFIG_LEN: usize = u16::MAX as usize;

/// Why a config cannot be pushed or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigPipeError {
    /// More than [`MAX_CONFIG_LEN`] bytes.
    #[error("config of {0} bytes: the config pipe carries at most {MAX_CONFIG_LEN}")]
    TooLarge(usize),
    /// An empty config (a vassal exits on size 0).
    #[error("empty config")]
    Empty,
    /// The header's `modifier1` is not 115.
    #[error("config pipe header starts with {0}, not {CONFIG_MODIFIER1}")]
    BadModifier(u8),
}

/// Frames `config` for the config pipe: `73 LL LL 00` + the bytes.
pub fn encode_config(config: &[u8]) -> Result<Vec<u8>, ConfigPipeError> {
    let len = u16::try_from(config.len()).map_err(|_| ConfigPipeError::TooLarge(config.len()))?;
    if len == 0 {
        return Err(ConfigPipeError::Empty);
    }
    let mut out = Vec::with_capacity(CONFIG_HEADER_LEN + config.len());
    out.push(CONFIG_MODIFIER1);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(0);
    out.extend_from_slice(config);
    Ok(out)
}

/// Reads a config pipe header: the size of the config that follows.
pub fn decode_config_header(header: [u8; CONFIG_HEADER_LEN]) -> Result<usize, ConfigPipeError> {
    if header[0] != CONFIG_MODIFIER1 {
        return Err(ConfigPipeError::BadModifier(header[0]));
    }
    let len = usize::from(u16::from_le_bytes([header[1], header[2]]));
    if len == 0 {
        return Err(ConfigPipeError::Empty);
    }
    Ok(len)
}

/// A streaming reader of one pushed config (the vassal side): feed bytes, get the config
/// once complete. Bytes after the config are left for the next blob.
#[derive(Debug, Clone, Default)]
pub struct ConfigReader {
    header: Vec<u8>,
    want: Option<usize>,
    body: Vec<u8>,
}

impl ConfigReader {
    /// An empty reader.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes bytes from `input`; returns how many were used and the config once it is
    /// complete (the reader is then reset for the next blob).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Vec<u8>>), ConfigPipeError> {
        let mut used = 0;
        if self.want.is_none() {
            let take = (CONFIG_HEADER_LEN - self.header.len()).min(input.len());
            self.header.extend_from_slice(&input[..take]);
            used += take;
            if self.header.len() < CONFIG_HEADER_LEN {
                return Ok((used, None));
            }
            let mut h = [0u8; CONFIG_HEADER_LEN];
            h.copy_from_slice(&self.header);
            let want = decode_config_header(h)?;
            self.want = Some(want);
            self.body.reserve(want);
        }
        let want = self.want.unwrap_or(0);
        let rest = &input[used..];
        let take = (want - self.body.len()).min(rest.len());
        self.body.extend_from_slice(&rest[..take]);
        used += take;
        if self.body.len() == want {
            let config = std::mem::take(&mut self.body);
            *self = Self::default();
            return Ok((used, Some(config)));
        }
        Ok((used, None))
    }
}

/// The command-line flag a vassal gets for its config name, chosen by extension
/// (spec §1.2); for zerg names (`NAME:zerg`) the part before the last `:` decides.
/// `None` when the extension is not a config extension (the name is ignored).
#[must_use]
pub fn config_flag<'a>(name: &str, extra_extensions: &'a [String]) -> Option<&'a str> {
    let base = if name.contains(':') { name.rsplit_once(':').map_or(name, |(b, _)| b) } else { name };
    const KNOWN: [(&str, &str); 6] = [
        (".xml", "--xml"),
        (".ini", "--ini"),
        (".yml", "--yaml"),
        (".yaml", "--yaml"),
        (".js", "--json"),
        (".json", "--json"),
    ];
    if let Some((_, flag)) = KNOWN.iter().find(|(ext, _)| base.ends_with(ext)) {
        return Some(flag);
    }
    if extra_extensions.iter().any(|e| !e.is_empty() && base.ends_with(e.as_str())) {
        return Some("--config");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(m) = FromVassal::from_byte(b) {
                assert_eq!(m.byte(), b);
            }
            if let Some(m) = ToVassal::from_byte(b) {
                assert_eq!(m.byte(), b);
            }
        }
        assert_eq!(FromVassal::from_byte(99), None);
    }

    #[test]
    fn config_header_matches_the_capture() {
        let blob = encode_config(&[b'x'; 193]).expect("fits");
        assert_eq!(&blob[..4], [0x73, 0xc1, 0x00, 0x00]);
        assert_eq!(encode_config(&vec![0; 65536]), Err(ConfigPipeError::TooLarge(65536)));
        assert_eq!(encode_config(b""), Err(ConfigPipeError::Empty));
        let mut r = ConfigReader::new();
        let mut got = None;
        for b in &blob {
            let (used, done) = r.feed(std::slice::from_ref(b)).expect("valid");
            assert_eq!(used, 1);
            if done.is_some() {
                got = done;
            }
        }
        assert_eq!(got, Some(vec![b'x'; 193]));
    }

    #[test]
    fn flags_by_extension() {
        let extra = vec![".conf".to_owned()];
        assert_eq!(config_flag("a.ini", &extra), Some("--ini"));
        assert_eq!(config_flag("a.ini:zerg", &extra), Some("--ini"));
        assert_eq!(config_flag("/x/b.yaml", &extra), Some("--yaml"));
        assert_eq!(config_flag("c.js", &extra), Some("--json"));
        assert_eq!(config_flag("d.conf", &extra), Some("--config"));
        assert_eq!(config_flag("bad.txt", &extra), None);
    }
}
