//! `state.json`: what the mesh created, written before each resource is
//! created so `down` can always clean up; and `status.json`: the
//! supervisor's view of the running mesh, read by `up` and `status`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::owned::Created;

/// A process: its pid and its start time (field 22 of `/proc/<pid>/stat`),
/// so a reused pid is never mistaken for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcRef {
    pub(crate) pid: i32,
    pub(crate) start: u64,
}

impl ProcRef {
    /// The process `pid`, if it exists.
    pub(crate) fn of(pid: i32) -> Option<Self> {
        let (start, _) = stat(pid)?;
        Some(Self { pid, start })
    }

    /// Whether it still runs (a zombie does not).
    pub(crate) fn alive(&self) -> bool {
        stat(self.pid)
            .is_some_and(|(start, state)| start == self.start && state != 'Z' && state != 'X')
    }
}

/// Start time and state of `pid`.
fn stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let (_, after) = text.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the name: state is field 3; starttime is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// Resources of one mesh (`STATE/state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Every network namespace of the mesh is named `<prefix>-*`.
    pub(crate) prefix: String,
    pub(crate) config_dir: PathBuf,
    pub(crate) supervisor: Option<ProcRef>,
    /// Files and directories outside the state directory (`/etc/netns/<ns>`).
    pub(crate) outside_files: Vec<PathBuf>,
    /// Every path created inside the state directory, in creation order
    /// (see `super::owned`): `down` removes these and nothing else.
    #[serde(default)]
    pub(crate) created: Vec<Created>,
}

/// Readiness of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeStatus {
    pub(crate) name: String,
    pub(crate) netns: String,
    pub(crate) ip: String,
    pub(crate) ztunnel_pid: Option<i32>,
    pub(crate) ready: bool,
    pub(crate) metrics: String,
    pub(crate) log: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContainerStatus {
    pub(crate) name: String,
    pub(crate) pid: Option<i32>,
    pub(crate) running: bool,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<String>,
    pub(crate) log: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodStatus {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) ip: String,
    pub(crate) netns: String,
    pub(crate) service_account: String,
    /// Handed to the node's ztunnel (captured and served by the mesh).
    pub(crate) enrolled: bool,
    /// Every container runs (what the pod's `Ready` condition tells istiod).
    pub(crate) ready: bool,
    pub(crate) containers: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceStatus {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) cluster_ip: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    #[default]
    Starting,
    Ready,
    Failed,
}

/// The supervisor's view (`STATE/status.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) phase: Phase,
    /// Why start-up failed.
    pub(crate) error: Option<String>,
    pub(crate) supervisor_pid: i32,
    pub(crate) config_dir: PathBuf,
    pub(crate) istiod: IstiodStatus,
    pub(crate) nodes: Vec<NodeStatus>,
    pub(crate) pods: Vec<PodStatus>,
    pub(crate) services: Vec<ServiceStatus>,
    /// Problems in the user's directory since the last good sync (the mesh
    /// keeps running on the last good config).
    pub(crate) config_errors: Vec<String>,
    pub(crate) logs: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IstiodStatus {
    pub(crate) netns: String,
    pub(crate) xds: String,
    pub(crate) monitoring: String,
    pub(crate) pid: Option<i32>,
    pub(crate) ready: bool,
    pub(crate) log: PathBuf,
}

/// Reads a JSON file; `None` if it does not exist.
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Json { path: path.to_owned(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { what: "reading", path: path.to_owned(), source: e }),
    }
}

/// Loads the record at `path` (a default one if there is none), changes it
/// with `change` and saves it: every writer starts from what is on disk.
pub(crate) fn update(path: &Path, change: impl FnOnce(&mut Record)) -> Result<Record, Error> {
    let mut record: Record = load(path)?.unwrap_or_default();
    change(&mut record);
    save(path, &record)?;
    Ok(record)
}

/// Writes a JSON file atomically (write then rename).
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Json { path: path.to_owned(), message: e.to_string() })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(Error::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("renaming into", path))
}
