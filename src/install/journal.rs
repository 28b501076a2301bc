//! The operator-side journal of a cluster: what is installed where, kept under
//! `<store>/clusters/<name>/` next to the Clusterfile it came from (without secrets).
//!
//! 1. [`Journal::load`] reads `journal.json` (a `version` field; an unknown version is
//!    refused rather than guessed at).
//! 2. [`Journal::record`] folds each progress [`Event`] into per-host step states.
//! 3. [`Journal::save`] writes it temp-then-rename, so a killed operator never leaves a
//!    torn file; the same JSON is copied to `<data root>/cluster/state.json` on the first
//!    master so another operator machine can manage the cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::event::{Event, StepState};

/// The journal format version this airlock writes and reads.
pub const JOURNAL_VERSION: u32 = 1;
/// The journal's file name in the cluster directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// The Clusterfile's file name in the cluster directory.
pub const CLUSTERFILE: &str = "Clusterfile";

/// Where a cluster's journal and Clusterfile live.
pub fn cluster_dir(store_root: &Path, name: &str) -> PathBuf {
    store_root.join("clusters").join(name)
}

/// A journal that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing it failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not a journal this airlock understands.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What the last operation on the cluster came to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Outcome {
    /// Running, or killed while running.
    #[default]
    Running,
    /// Every step finished.
    Installed,
    /// A step failed.
    Failed {
        /// The host.
        host: IpAddr,
        /// The step.
        step: String,
        /// Why.
        reason: String,
    },
}

/// One host in the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its roles.
    pub roles: Vec<String>,
    /// Step name -> `done`, `skipped`, `started` or `failed: why`.
    pub steps: BTreeMap<String, String>,
}

/// The journal of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// The cluster's name.
    pub cluster: String,
    /// The image, as stored.
    pub image: String,
    /// The digest of its top-level index.
    pub image_digest: String,
    /// The data root on hosts.
    pub data_root: String,
    /// Every host of the cluster.
    pub hosts: BTreeMap<IpAddr, HostRecord>,
    /// How the last operation ended.
    pub outcome: Outcome,
    /// When it was last written (seconds since the epoch).
    pub updated: u64,
}

impl Journal {
    /// A journal for a new operation on `cluster`.
    pub fn new(cluster: &str, image: &str, image_digest: &str, data_root: &str) -> Self {
        Self {
            version: JOURNAL_VERSION,
            cluster: cluster.to_string(),
            image: image.to_string(),
            image_digest: image_digest.to_string(),
            data_root: data_root.to_string(),
            ..Self::default()
        }
    }

    /// Read the journal in `dir`, `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let bytes = match fs_err::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JournalError::Io { path, source }),
        };
        Self::from_json(&bytes)
            .map(Some)
            .map_err(|reason| JournalError::Invalid { path, reason })
    }

    /// Parse a journal, refusing other versions.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(JOURNAL_VERSION)) {
            return Err(format!(
                "journal version {version:?} is not {JOURNAL_VERSION}; use the airlock that wrote it"
            ));
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// The journal as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Write it atomically into `dir` (created if missing), stamped with `now`.
    pub fn save(&mut self, dir: &Path, now: u64) -> Result<(), JournalError> {
        self.updated = now;
        write_atomic(&dir.join(JOURNAL_FILE), &self.to_json())
    }

    /// Fold one progress event in.
    pub fn record(&mut self, event: &Event) {
        if let Event::Step {
            host, step, state, ..
        } = event
        {
            let text = match state {
                StepState::Started => "started".to_string(),
                StepState::Done => "done".to_string(),
                StepState::Skipped => "skipped".to_string(),
                StepState::Failed(why) => {
                    self.outcome = Outcome::Failed {
                        host: *host,
                        step: step.as_str().to_string(),
                        reason: why.clone(),
                    };
                    format!("failed: {why}")
                }
            };
            self.hosts
                .entry(*host)
                .or_default()
                .steps
                .insert(step.as_str().to_string(), text);
        }
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("airlock-tmp");
    {
        use std::io::Write as _;
        let mut f = fs_err::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs_err::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::StepId;

    #[test]
    fn round_trips_and_records_steps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Journal::load(dir.path()).unwrap().is_none());
        let mut j = Journal::new("c", "img:v1", "sha256:ab", "/var/lib/airlock");
        let host: IpAddr = "198.18.0.2".parse().unwrap();
        j.record(&Event::Step {
            host,
            step: StepId::Blobs,
            state: StepState::Done,
            elapsed_ms: 5,
        });
        j.record(&Event::Step {
            host,
            step: StepId::Unpack,
            state: StepState::Failed("exit 1".into()),
            elapsed_ms: 5,
        });
        j.save(dir.path(), 7).unwrap();
        let back = Journal::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, j);
        assert_eq!(back.hosts[&host].steps["blobs"], "done");
        assert!(matches!(back.outcome, Outcome::Failed { ref step, .. } if step == "unpack"));
        fs_err::write(dir.path().join(JOURNAL_FILE), br#"{"version": 9}"#).unwrap();
        let e = Journal::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("journal version Some(9) is not 1"), "{e}");
    }
}
