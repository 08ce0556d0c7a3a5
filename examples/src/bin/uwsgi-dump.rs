//! `uwsgi-dump`: decode one uwsgi packet from stdin and print it as JSON.
//!
//! Demonstrates [`uwsgi_packet::Packet::parse`] and [`uwsgi_packet::ArrayPacket::parse`]
//! with [`uwsgi_packet::Limits`] and [`uwsgi_packet::Status::at_eof`] on a whole input:
//! the strict decoder, its limits and its error kinds, on bytes you captured yourself
//! (`tcpdump`, `socat -x`, a `.hex` test vector). It opens no socket.
//!
//! ```text
//! cargo run -p examples --bin uwsgi-dump -- --hex < ../shared/vectors/uwsgi-packet/v06-minimal-get.hex
//! printf '\x00\x0a\x00\x00\x04\x00PATH\x02\x00/xBODY' | cargo run -p examples --bin uwsgi-dump
//! echo 'ad0d0000 0500 68656c6c6f 0100 61 0100 62' | cargo run -p examples --bin uwsgi-dump -- --hex --array
//! ```
//!
//! Options:
//!
//! * `--hex`: stdin is hex text (either case; whitespace anywhere is ignored), not raw bytes.
//! * `--max-size N`: largest accepted `datasize`, 0..=65535, default 4096 (uWSGI's default
//!   `--buffer-size`). The var limit is uWSGI's default, 128.
//! * `--array`: the body is an array (RPC, modifier1 173), not a vars dictionary.
//!
//! What to expect: one JSON object on stdout, in the format of the shared test vectors'
//! `.json` files (and of the reference tool `tools/uwsgi_packet.py decode`):
//!
//! ```text
//! {
//!  "modifier1": 0,
//!  "modifier2": 0,
//!  "datasize": 10,
//!  "vars": [
//!   ["PATH", "/x"]
//!  ],
//!  "after_vars": "BODY"
//! }
//! ```
//!
//! `vars` are `[key, value]` pairs in wire order, duplicates kept. With `--array`,
//! `"encoding": "array"` and `items` replace `vars`. Every string is a byte string: byte
//! `0xNN` is the character U+00NN (latin-1), so nothing is lost; the output escapes every
//! byte outside printable ASCII as `\u00NN` and is pure ASCII. `after_vars` holds every
//! input byte after the packet (on a request stream, the request body).
//!
//! Exit status: 0 when the packet decodes; 2 when it does not, with
//! `error: <Kind>: <detail>` on stderr, `<Kind>` being the decoder's error kind
//! (`TruncatedHeader`, `TooLarge`, `KeyOverrun`, … and `InvalidHex` for bad `--hex`
//! input); 2 for bad options; 1 when stdin cannot be read.

// A command-line program: printing the result and the errors is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::process::ExitCode;

use clap::Parser;
use uwsgi_packet::{ArrayPacket, DecodeError, Header, Limits, Packet};

/// Decode one uwsgi packet read from stdin and print it as JSON.
#[derive(Parser, Debug)]
#[command(name = "uwsgi-dump", version)]
struct Args {
    /// Read hex text from stdin instead of raw bytes (whitespace is ignored).
    #[arg(long)]
    hex: bool,

    /// Largest accepted datasize (uWSGI's --buffer-size), 0..=65535.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_MAX_DATASIZE)]
    max_size: u16,

    /// The body is an array (RPC, modifier1 173) instead of vars.
    #[arg(long)]
    array: bool,
}

/// Why the input could not be dumped: the part of the message after `error: `.
enum Failure {
    /// `--hex` input that is not hex.
    InvalidHex(String),
    /// The packet is malformed.
    Decode(DecodeError),
}

fn main() -> ExitCode {
    let args = Args::parse();

    let mut input = Vec::new();
    if let Err(e) = io::stdin().lock().read_to_end(&mut input) {
        eprintln!("error: reading stdin: {e}");
        return ExitCode::from(1);
    }

    match dump(&args, &input) {
        Ok(json) => {
            let mut out = io::stdout().lock();
            match out.write_all(json.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // `uwsgi-dump | head` closing the pipe early is not worth a message.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing stdout: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(Failure::InvalidHex(detail)) => {
            eprintln!("error: InvalidHex: {detail}");
            ExitCode::from(2)
        }
        Err(Failure::Decode(e)) => {
            eprintln!("error: {}: {e}", e.kind().as_str());
            ExitCode::from(2)
        }
    }
}

/// Decodes `input` as `args` say and renders the JSON document (newline-terminated).
fn dump(args: &Args, input: &[u8]) -> Result<String, Failure> {
    let decoded;
    let wire = if args.hex {
        decoded = decode_hex(input).map_err(Failure::InvalidHex)?;
        &decoded[..]
    } else {
        input
    };
    // max_vars stays at uWSGI's default 128 (2 x --max-vars 64): vector m12 expects it.
    let limits = Limits::new().max_datasize(args.max_size);

    if args.array {
        let (packet, consumed) =
            ArrayPacket::parse(wire, &limits).and_then(|s| s.at_eof()).map_err(Failure::Decode)?;
        let items: Vec<String> = packet.items().iter().map(json_latin1).collect();
        Ok(render(packet.header(), Body::Array(&items), wire.get(consumed..).unwrap_or_default()))
    } else {
        let (packet, consumed) =
            Packet::parse(wire, &limits).and_then(|s| s.at_eof()).map_err(Failure::Decode)?;
        let vars: Vec<String> =
            packet.vars().iter().map(|(k, v)| format!("[{}, {}]", json_latin1(k), json_latin1(v))).collect();
        Ok(render(packet.header(), Body::Vars(&vars), wire.get(consumed..).unwrap_or_default()))
    }
}

/// The body's JSON elements, already rendered.
enum Body<'a> {
    /// `[key, value]` pairs.
    Vars(&'a [String]),
    /// Item strings.
    Array(&'a [String]),
}

/// Renders the document as the vectors' `.json` files are laid out: one-space indent,
/// one list element per line.
fn render(header: Header, body: Body<'_>, after: &[u8]) -> String {
    let mut out = String::from("{\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, " \"modifier1\": {},", header.modifier1);
    let _ = writeln!(out, " \"modifier2\": {},", header.modifier2);
    let _ = writeln!(out, " \"datasize\": {},", header.datasize);
    let (key, elements) = match body {
        Body::Vars(vars) => ("vars", vars),
        Body::Array(items) => {
            out.push_str(" \"encoding\": \"array\",\n");
            ("items", items)
        }
    };
    if elements.is_empty() {
        let _ = writeln!(out, " \"{key}\": [],");
    } else {
        let _ = writeln!(out, " \"{key}\": [");
        out.push_str(&elements.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join(",\n"));
        out.push_str("\n ],\n");
    }
    let _ = writeln!(out, " \"after_vars\": {}", json_latin1(after));
    out.push_str("}\n");
    out
}

/// A JSON string literal holding `bytes` as latin-1 text (byte 0xNN = U+00NN), escaped to
/// pure ASCII like Python's `json.dumps`, so the output matches the vector files.
fn json_latin1(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x08 => s.push_str("\\b"),
            0x0c => s.push_str("\\f"),
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\u{b:04x}");
            }
        }
    }
    s.push('"');
    s
}

/// Decodes hex text, ignoring ASCII whitespace anywhere.
fn decode_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    for (offset, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let Some(nibble) = char::from(c).to_digit(16) else {
            return Err(format!("byte {:?} at offset {offset} is not a hex digit", char::from(c)));
        };
        // to_digit(16) is at most 15.
        let nibble = nibble as u8;
        digits += 1;
        match high.take() {
            None => high = Some(nibble),
            Some(h) => out.push(h << 4 | nibble),
        }
    }
    if high.is_some() {
        return Err(format!("odd number of hex digits ({digits})"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ignores_whitespace_and_case() {
        assert_eq!(decode_hex(b" 0a FF\n1\t2 ").unwrap(), [0x0a, 0xff, 0x12]);
        assert!(decode_hex(b"abc").unwrap_err().contains("odd number"));
        assert!(decode_hex(b"zz").unwrap_err().contains("offset 0"));
    }

    #[test]
    fn strings_are_latin1_and_ascii_escaped() {
        assert_eq!(json_latin1(b"a\"\\\n\x00\x7f\xff"), r#""a\"\\\n\u0000\u007f\u00ff""#);
        let back: String = serde_json::from_str(&json_latin1(&[0, 0x80, 0xe9, b'x'])).unwrap();
        assert_eq!(back, "\u{0}\u{80}\u{e9}x");
    }
}
