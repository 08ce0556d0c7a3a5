//! The hand-off message against what uWSGI 2.0.21 put on the wire (`shared/vectors/zerg`,
//! spec §2 and §9).
//!
//! * Every `*.data.hex` decodes to the count its README table gives and re-encodes byte
//!   for byte.
//! * Every `*.control-tx.hex` / `*.control-rx.hex` is one `SOL_SOCKET`/`SCM_RIGHTS` cmsg
//!   with `cmsg_len = 16 + 4n`, laid out in a buffer of [`proto::cmsg_space`] bytes (the
//!   one exception, `server-dedup-2of3`'s sender buffer, is sized for the 3 configured
//!   sockets, as the README records).
//! * `zergpool-0fd` announces 0 and has no receiver control data; the client accepts it
//!   only with `strict_count` off and 0 fds.
//! * The abstract `sockaddr_un` uWSGI uses for `@zergspec-zs2` is exactly what
//!   [`ZergAddr::parse`] produces, and the kernel agrees on the name and its length.
//! * The Broodlord SOS byte (`vassal-sos.hex`) is not a hand-off.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]
#![allow(
    clippy::disallowed_methods,
    reason = "a base Instant for virtual time; nothing depends on its value"
)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use zerg_fdpass::ZergAddr;
use zerg_fdpass::client::{Attach, AttachError, AttachOptions, Step};
use zerg_fdpass::proto::{self, DecodeError, HEADER_LEN, Header, MAGIC};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/zerg"));
    assert!(
        dir.join("README.md").is_file(),
        "shared zerg vectors not found at {}: the project's shared/ folder must sit beside the checkout",
        dir.display()
    );
    dir.to_path_buf()
}

fn hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn read(name: &str) -> Option<Vec<u8>> {
    let path = vectors_dir().join(name);
    path.is_file().then(|| hex(&std::fs::read_to_string(&path).expect("readable vector")))
}

/// The README's table: name, announced count, fds in the cmsg, sender `msg_controllen`.
const HANDOFFS: [(&str, usize, usize, usize); 6] = [
    ("server-1fd", 1, 1, 24),
    ("server-3fd-mixed", 3, 3, 32),
    // 3 configured entries, 2 unique names: uWSGI sizes its buffer for 3 (spec §2.3).
    ("server-dedup-2of3", 2, 2, 32),
    ("server-10fd", 10, 10, 56),
    ("zergpool-2fd", 2, 2, 24),
    ("zergpool-0fd", 0, 0, 16),
];

#[test]
fn every_vector_file_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hex"))
        .collect();
    names.sort();
    let mut known: Vec<String> = HANDOFFS
        .iter()
        .flat_map(|(n, _, fds, _)| {
            let mut files = vec![format!("{n}.data.hex"), format!("{n}.control-tx.hex")];
            if *fds > 0 {
                files.push(format!("{n}.control-rx.hex"));
            }
            files
        })
        .chain(["vassal-sos.hex".to_owned(), "sockaddr-abstract-zergspec-zs2.hex".to_owned()])
        .collect();
    known.sort();
    assert_eq!(names, known, "a vector was added or removed: cover it here");
}

#[test]
fn data_decodes_to_the_announced_count_and_re_encodes_byte_for_byte() {
    for (name, count, _, _) in HANDOFFS {
        let data = read(&format!("{name}.data.hex")).unwrap();
        assert_eq!(data.len(), HEADER_LEN, "{name}");
        assert_eq!(&data[..MAGIC.len()], MAGIC, "{name}");
        let header = Header::decode(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(header.count, count, "{name}");
        assert_eq!(Header::new(count).unwrap(), header, "{name}");
        assert_eq!(header.encode().as_slice(), data.as_slice(), "{name} re-encodes byte for byte");
        // The count is a host-order i32 (little-endian on the capture machine).
        assert_eq!(i32::from_le_bytes(data[10..14].try_into().unwrap()), i32::try_from(count).unwrap());
    }
}

/// One cmsg in a control buffer: `(cmsg_len, level, type, fds, the bytes after the cmsg)`.
fn parse_cmsg(control: &[u8]) -> (usize, u32, u32, Vec<i32>, &[u8]) {
    let len = usize::try_from(u64::from_le_bytes(control[..8].try_into().unwrap())).unwrap();
    let level = u32::from_le_bytes(control[8..12].try_into().unwrap());
    let kind = u32::from_le_bytes(control[12..16].try_into().unwrap());
    assert!(len >= 16 && (len - 16).is_multiple_of(4) && len <= control.len(), "cmsg_len {len}");
    let fds = control[16..len].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    (len, level, kind, fds, &control[len..])
}

#[test]
#[cfg(all(target_pointer_width = "64", target_endian = "little"))]
fn control_buffers_are_one_scm_rights_cmsg_of_cmsg_space_bytes() {
    const SOL_SOCKET: u32 = 1;
    const SCM_RIGHTS: u32 = 1;
    for (name, _, n, tx_len) in HANDOFFS {
        let tx = read(&format!("{name}.control-tx.hex")).unwrap();
        assert_eq!(tx.len(), tx_len, "{name}: sender msg_controllen");
        let (len, level, kind, fds, tail) = parse_cmsg(&tx);
        assert_eq!((len, level, kind), (16 + 4 * n, SOL_SOCKET, SCM_RIGHTS), "{name} tx");
        assert_eq!(fds.len(), n, "{name} tx");
        assert!(fds.iter().all(|fd| *fd >= 0), "{name} tx fds");
        assert!(tail.iter().all(|b| *b == 0), "{name}: tx padding is written as 00");
        if name == "server-dedup-2of3" {
            // uWSGI sizes for every configured socket, de-duplicated or not (spec §2.3).
            assert_eq!(tx.len(), proto::cmsg_space(3));
        } else {
            assert_eq!(tx.len(), proto::cmsg_space(n), "{name}: tx is CMSG_SPACE(4n)");
        }

        let Some(rx) = read(&format!("{name}.control-rx.hex")) else {
            // Linux drops an SCM_RIGHTS cmsg with no fds: msg_controllen = 0 (spec §2.3).
            assert_eq!(n, 0, "{name}: only the 0-fd hand-off has no receiver control data");
            continue;
        };
        assert_eq!(rx.len(), proto::cmsg_space(n), "{name}: the receiver's msg_controllen is CMSG_SPACE(4n)");
        let (len, level, kind, fds, tail) = parse_cmsg(&rx);
        assert_eq!((len, level, kind), (16 + 4 * n, SOL_SOCKET, SCM_RIGHTS), "{name} rx");
        assert_eq!(fds.len(), n, "{name} rx");
        assert!(tail.iter().all(|b| *b == 0xee), "{name}: the kernel leaves the padding alone");
        assert_eq!(tail.len(), proto::cmsg_space(n) - (16 + 4 * n));
    }
}

#[test]
fn the_client_takes_each_vector_with_its_fds() {
    let now = Instant::now();
    for (name, count, n, _) in HANDOFFS {
        let data = read(&format!("{name}.data.hex")).unwrap();
        let fds: Vec<usize> = (0..n).collect();
        let step = Attach::new(now, &AttachOptions::default()).handle_recv(now, &data, fds.clone(), false);
        match step {
            Ok(Step::Done(h)) => assert_eq!((h.announced, h.fds), (count, fds), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn zergpool_0fd_announces_nothing() {
    let data = read("zergpool-0fd.data.hex").unwrap();
    assert_eq!(Header::decode(&data), Ok(Header { count: 0 }));
    assert!(read("zergpool-0fd.control-rx.hex").is_none(), "no control data reaches the receiver");
    // 0 announced, 0 received: consistent, so even the strict client takes the empty
    // list (uWSGI's client fails on it: "no cmsg", spec §2.8).
    let now = Instant::now();
    let step = Attach::<i32>::new(now, &AttachOptions::default()).handle_recv(now, &data, vec![], false);
    let Ok(Step::Done(h)) = step else { panic!("{step:?}") };
    assert_eq!((h.announced, h.fds.len()), (0, 0));
}

#[test]
fn the_abstract_sockaddr_is_what_zerg_addr_produces() {
    let vector = read("sockaddr-abstract-zergspec-zs2.hex").unwrap();
    let addr = ZergAddr::parse("@zergspec-zs2").unwrap();
    assert_eq!(addr, ZergAddr::parse("\\0zergspec-zs2").unwrap(), "uWSGI's other spelling");
    let name = addr.abstract_bytes().unwrap();
    assert_eq!(name, b"zergspec-zs2\0", "uWSGI's trailing NUL is part of the name");
    // sockaddr_un: sun_family = AF_UNIX (1, little-endian u16), then sun_path = NUL + name.
    let mut sockaddr = vec![1u8, 0, 0];
    sockaddr.extend_from_slice(&name);
    assert_eq!(sockaddr, vector);
    assert_eq!(sockaddr.len(), 16, "addrlen 16, as strace showed");

    use std::os::linux::net::SocketAddrExt;
    let std_addr = addr.to_socket_addr().unwrap();
    assert_eq!(std_addr.as_abstract_name(), Some(name.as_slice()));
    // Without the opt-in NUL the name differs: such a peer does not meet uWSGI (spec §1).
    let bare = addr.without_uwsgi_nul().abstract_bytes().unwrap();
    assert_eq!(bare, b"zergspec-zs2");
}

#[test]
fn the_kernel_binds_the_abstract_name_with_its_nul() {
    // A name of the vector's length, unique to this run: the kernel's addrlen is 16.
    let text = format!("@zs{:010}", std::process::id());
    assert_eq!(text.len(), "@zergspec-zs2".len());
    let addr = ZergAddr::parse(&text).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr.to_socket_addr().unwrap()).unwrap();
    let local = rustix::net::getsockname(&listener).unwrap();
    assert_eq!(local.addr_len(), 16);
    let unix = rustix::net::SocketAddrUnix::try_from(local).unwrap();
    assert_eq!(unix.abstract_name(), addr.abstract_bytes().as_deref());
    // /proc/net/unix shows NULs as '@': uWSGI's `@zergspec-zs1@` (spec §1).
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let shown = format!(" {text}@");
    assert!(table.lines().any(|l| l.ends_with(&shown)), "{shown:?} not in /proc/net/unix");
}

#[test]
fn the_vassal_sos_byte_is_not_a_hand_off() {
    let sos = read("vassal-sos.hex").unwrap();
    assert_eq!(sos, [0x1e]);
    assert_eq!(Header::decode(&sos), Err(DecodeError::Short(1)));
    let mut padded = sos.clone();
    padded.resize(HEADER_LEN, 0);
    assert_eq!(Header::decode(&padded), Err(DecodeError::BadMagic));
    // Read from a stream, the client wants the rest, then sees the close.
    let now = Instant::now();
    let step = Attach::<i32>::new(now, &AttachOptions::default()).handle_recv(now, &sos, vec![], false);
    let Ok(Step::NeedMore(attach)) = step else { panic!("{step:?}") };
    assert_eq!(attach.wants(), HEADER_LEN - 1);
    assert_eq!(attach.handle_eof(), AttachError::Eof { got: 1 });
}

#[test]
#[cfg(target_pointer_width = "64")]
fn cmsg_space_for_every_count_a_message_can_carry() {
    // CMSG_SPACE(4n) on LP64: a 16-byte header, then the fds padded to 8 bytes.
    for n in 0..=proto::MAX_FDS {
        assert_eq!(proto::cmsg_space(n), 16 + (4 * n).div_ceil(8) * 8, "n = {n}");
    }
}
