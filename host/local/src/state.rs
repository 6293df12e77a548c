//! `state.json`: what a restarted host needs to take over from a killed
//! one: every service (definition, front port), slot (release, replicas),
//! weight, and the process group of every instance so that it can be
//! reaped. Written whole to a temporary file and renamed over the old one,
//! so a host killed mid-write leaves the previous version, never half of
//! one.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LocalError;
use crate::spec::{ServiceDef, WeightEntry};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub services: Vec<ServiceState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub definition: ServiceDef,
    pub front: SocketAddr,
    pub slots: Vec<SlotState>,
    pub weights: Vec<WeightEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    pub name: String,
    pub release: String,
    pub replicas: u32,
    /// Running processes, including those of a release being replaced.
    pub processes: Vec<ProcessRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub instance: usize,
    pub port: u16,
    /// The process's pid, which is also its process group id.
    pub pid: u32,
    /// Its start time, to tell it from a later process given the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

impl State {
    /// Every recorded process group, with its start time.
    pub fn groups(&self) -> Vec<(u32, Option<u64>)> {
        self.services
            .iter()
            .flat_map(|s| &s.slots)
            .flat_map(|s| &s.processes)
            .map(|p| (p.pid, p.started))
            .collect()
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The recorded state, or `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<State>, LocalError> {
    let path = path(dir);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LocalError::Io { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| LocalError::State { path, source })
}

/// Replace the recorded state. No fsync: the rename is what protects
/// against a killed host, and a power cut also ends the processes the
/// file describes.
pub fn save(dir: &Path, state: &State) -> io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    crate::private::write(&tmp, &serde_json::to_vec_pretty(state)?)?;
    fs::rename(&tmp, path(dir))
}

pub fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_file(path(dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            services: vec![ServiceState {
                name: "api".into(),
                definition: serde_json::from_str(r#"{"command":["srv","{port}"]}"#).unwrap(),
                front: "127.0.0.1:4100".parse().unwrap(),
                slots: vec![SlotState {
                    name: "stable".into(),
                    release: "1.0".into(),
                    replicas: 2,
                    processes: vec![
                        ProcessRecord {
                            instance: 0,
                            port: 4101,
                            pid: 1234,
                            started: Some(99),
                        },
                        ProcessRecord {
                            instance: 1,
                            port: 4102,
                            pid: 1235,
                            started: None,
                        },
                    ],
                }],
                weights: vec![WeightEntry {
                    slot: "stable".into(),
                    weight: 100,
                }],
            }],
        }
    }

    #[test]
    fn round_trips_and_lists_groups() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), &sample()).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, sample());
        assert_eq!(loaded.groups(), [(1234, Some(99)), (1235, None)]);
        assert!(!dir.path().join("state.json.tmp").exists());
        remove(dir.path()).unwrap();
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "{").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("remove it"),
            "{err}"
        );
    }
}
