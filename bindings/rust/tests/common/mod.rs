//! What the integration tests share: fresh directories and hex.
#![allow(dead_code)]
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh directory for one test (under QV_TEST_TMP when ctest sets it), so
/// entries left by an earlier run can never answer this run's calls.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let base = env::var_os("QV_TEST_TMP").map(PathBuf::from).unwrap_or_else(env::temp_dir);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let dir =
            base.join(format!("rust-{tag}-{}-{nanos}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "odd hex {s:?}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The shared vectors' directory: QV_VECTORS (ctest sets it), else
/// ../shared/vectors beside the source tree.
pub fn vectors() -> PathBuf {
    env::var_os("QV_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"))
}
