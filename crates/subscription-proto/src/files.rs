//! The few file look-ups the protocol needs, behind a trait so the cores stay sans-IO.
//!
//! A signed router reads `DIR/<key>.pem` when a pool is created (spec §3.1); a router with a
//! credentials check stats `PREFIX<key>` (§2.11); a subscriber's `check` file decides
//! whether a subscription is sent (§4.3). The cores ask a [`Files`]; [`RealFiles`] asks the
//! filesystem, [`MemoryFiles`] a table (tests, simulations, embedders with their own store).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File look-ups, as the cores need them.
pub trait Files {
    /// The whole content of `path`, or `None` if it cannot be read.
    fn read(&mut self, path: &Path) -> Option<Vec<u8>>;
    /// The `(uid, gid)` owning `path`, or `None` if it does not exist.
    fn owner(&mut self, path: &Path) -> Option<(u32, u32)>;
    /// Whether `path` exists.
    fn exists(&mut self, path: &Path) -> bool {
        self.owner(path).is_some()
    }
}

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFiles;

impl Files for RealFiles {
    fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }

    fn owner(&mut self, path: &Path) -> Option<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.uid(), m.gid()))
    }
}

/// An in-memory file table: `path → (content, uid, gid)`.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    files: BTreeMap<PathBuf, (Vec<u8>, u32, u32)>,
}

impl MemoryFiles {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file owned by `uid:gid`.
    #[must_use]
    pub fn with(mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>, uid: u32, gid: u32) -> Self {
        self.files.insert(path.into(), (content.into(), uid, gid));
        self
    }

    /// Removes a file.
    pub fn remove(&mut self, path: &Path) {
        self.files.remove(path);
    }
}

impl Files for MemoryFiles {
    fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        self.files.get(path).map(|(c, _, _)| c.clone())
    }

    fn owner(&mut self, path: &Path) -> Option<(u32, u32)> {
        self.files.get(path).map(|(_, u, g)| (*u, *g))
    }
}
