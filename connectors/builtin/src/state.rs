//! Small JSON state files written atomically: the durable positions of
//! sources that have no broker to keep them (`generate`'s `state_file`,
//! `file`'s `commit_file`).
//!
//! A write goes to a uniquely named temporary file beside the target, is
//! synced, then renamed over the target, so a crash leaves either the old or
//! the new content, never a torn mix. On Unix the directory is synced after
//! the rename so the rename itself survives a power cut. The blocking work
//! runs on tokio's blocking pool and completes even if the awaiting future is
//! dropped; unique temporary names keep two overlapping writes apart.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// A state file could not be read or written.
#[derive(Debug, Error)]
pub(crate) enum StateFileError {
    /// Reading, writing, syncing or renaming failed.
    #[error("cannot {action} state file {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`).
        action: &'static str,
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file exists but does not hold what spate wrote there.
    #[error("state file {} is corrupt ({source}); delete it to start from the beginning", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Why it could not be parsed.
        #[source]
        source: serde_json::Error,
    },
}

/// One JSON state file.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// A state file at `path` (created on the first [`StateFile::store`]).
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored value, or `None` if the file does not exist yet.
    pub(crate) async fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StateFileError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateFileError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateFileError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the stored value atomically and durably.
    pub(crate) async fn store<T: Serialize>(&self, value: &T) -> Result<(), StateFileError> {
        let io_error = |source| StateFileError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(value).map_err(|e| io_error(io::Error::other(e)))?;
        bytes.push(b'\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|join| io_error(io::Error::other(join)))?
            .map_err(io_error)
    }
}

/// Writes `bytes` to a fresh temporary file beside `path`, syncs it and
/// renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(dir) {
        // Best effort: makes the rename durable; some file systems refuse it.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[tokio::test]
    async fn store_then_load_round_trips_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateFile::new(dir.path().join("nested/positions.json"));
        assert!(state
            .load::<BTreeMap<u32, u64>>()
            .await
            .expect("load")
            .is_none());
        for n in 0..5u64 {
            let value: BTreeMap<u32, u64> = [(0, n), (3, n * 10)].into_iter().collect();
            state.store(&value).await.expect("store");
            assert_eq!(
                state.load::<BTreeMap<u32, u64>>().await.expect("load"),
                Some(value)
            );
        }
        let names: Vec<_> = fs::read_dir(dir.path().join("nested"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec!["positions.json"]);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("positions.json");
        fs::write(&path, b"{not json").expect("write");
        let err = StateFile::new(&path)
            .load::<BTreeMap<u32, u64>>()
            .await
            .unwrap_err();
        assert!(matches!(err, StateFileError::Corrupt { .. }), "{err}");
    }
}
