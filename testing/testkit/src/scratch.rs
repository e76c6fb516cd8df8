//! Temporary directories for this crate's unit tests, removed when dropped.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(purpose: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "shipshape-testkit-{purpose}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
