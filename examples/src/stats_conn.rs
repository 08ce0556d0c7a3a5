//! A stats connection being written, shared by `fastrouter` and `legiond` (each includes
//! this file with `#[path]`): the document is rendered once at accept, then written as the
//! socket takes it, and the connection closes when it is all out or the peer goes away.

use std::io::{self, Write};

/// A stats document on its way out through `stream`.
pub(crate) struct StatsConn<S> {
    pub(crate) stream: S,
    out: Vec<u8>,
    written: usize,
}

impl<S: Write> StatsConn<S> {
    /// `out` to be written to `stream`.
    pub(crate) fn new(stream: S, out: Vec<u8>) -> Self {
        Self { stream, out, written: 0 }
    }

    /// Writes what the socket takes now. `true` once the connection is finished: the whole
    /// document written, or the peer gone. `false` while the socket would block.
    pub(crate) fn write_some(&mut self) -> bool {
        while let Some(rest) = self.out.get(self.written..).filter(|r| !r.is_empty()) {
            match self.stream.write(rest) {
                Ok(0) => return true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }
}
