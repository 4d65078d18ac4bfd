use std::path::PathBuf;
use std::time::Duration;

use crate::error::{SyncError, SyncResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The file being written; rotated files are `<path>.<n>`, the highest `n` the newest.
    pub path: PathBuf,
    /// Rotate once the file reaches this size.
    pub rotate_bytes: u64,
    /// Rotate a non-empty file this long after it was started (none: by size only).
    pub rotate_every: Option<Duration>,
    /// Rotated files kept; older ones are deleted.
    pub keep_files: usize,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync before a batch counts as written: it survives a machine crash.
    #[default]
    Batch,
    /// Written to the OS only: survives the process crashing, not the machine.
    Never,
}

impl FileConfig {
    pub const DEFAULT_ROTATE_BYTES: u64 = 100 * 1024 * 1024;
    pub const DEFAULT_KEEP_FILES: usize = 5;

    pub fn validate(&self, field: &str) -> SyncResult<()> {
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.is_empty() {
            return Err(SyncError::config(format!("{field}.path: \"{}\" does not name a file", self.path.display())));
        }
        if self.path.is_dir() {
            return Err(SyncError::config(format!("{field}.path: \"{}\" is a directory", self.path.display())));
        }
        if self.rotate_bytes < 1024 {
            return Err(SyncError::config(format!("{field}.rotateBytes: {} is below the minimum of 1024", self.rotate_bytes)));
        }
        if self.keep_files == 0 {
            return Err(SyncError::config(format!("{field}.keepFiles: must be at least 1")));
        }
        Ok(())
    }
}
