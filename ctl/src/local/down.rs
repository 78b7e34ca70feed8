//! `ambientctl local down`: removes everything a mesh made, from its
//! record, whether the supervisor is alive, dead, or was killed half way
//! through start-up. Order: the supervisor (SIGTERM: it stops and reaps
//! its processes; SIGKILL if it does not exit, so nothing is restarted),
//! every process inside the mesh's namespaces (`ip netns pids`; SIGTERM,
//! SIGKILL after a grace period), the namespaces themselves (their veths,
//! the bridge, capture rules and routes go with them), the files outside
//! the state directory, then what the record says was created inside the
//! state directory, and nothing else there (see `super::owned`: a file a
//! user put into it stays, and so do the directories holding one).

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use mesh_netns::Topology;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::error::Error;
use super::layout::Layout;
use super::owned;
use super::record::{self, ProcRef, Record};
use crate::output;

/// How long processes get to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

/// What `clean` removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub(crate) processes: usize,
    pub(crate) namespaces: usize,
    pub(crate) files: usize,
    /// Directories left because they hold something not made by the mesh.
    pub(crate) kept: Vec<std::path::PathBuf>,
}

pub(crate) fn down(state: &Path) -> Result<ExitCode, Error> {
    let layout = Layout::new(state);
    let Some(record) = record::load::<Record>(&layout.record())? else {
        output::line(format_args!(
            "no local mesh recorded in {}; nothing to do",
            layout.root.display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let removed = clean(&layout, &record)?;
    output::line(format_args!(
        "local mesh down: stopped {} process(es), removed {} network namespace(s) and {} file(s)/director(ies); \
         nothing of it is left",
        removed.processes, removed.namespaces, removed.files
    ));
    if !removed.kept.is_empty() {
        let kept: Vec<String> = removed.kept.iter().map(|p| p.display().to_string()).collect();
        output::line(format_args!(
            "kept (they hold files the mesh did not make): {}",
            kept.join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn netns_pids(name: &str) -> Vec<ProcRef> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter_map(ProcRef::of)
        .collect()
}

fn signal(procs: &[ProcRef], signal: Signal) {
    for p in procs.iter().filter(|p| p.alive()) {
        // Gone already is fine.
        let _ = kill(Pid::from_raw(p.pid), signal);
    }
}

fn wait_gone(procs: &[ProcRef], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if procs.iter().all(|p| !p.alive()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn clean(layout: &Layout, record: &Record) -> Result<Removed, Error> {
    let mut removed = Removed::default();
    if !record.prefix.is_empty() {
        let names = Topology::leftovers(&record.prefix);
        removed.processes = names.iter().map(|n| netns_pids(n).len()).sum();
    }
    if let Some(supervisor) = record.supervisor.filter(ProcRef::alive) {
        // It stops (and reaps) its processes on SIGTERM; if it cannot, the
        // sweep below does.
        signal(&[supervisor], Signal::SIGTERM);
        if !wait_gone(&[supervisor], GRACE + GRACE) {
            signal(&[supervisor], Signal::SIGKILL);
            wait_gone(&[supervisor], GRACE);
        }
        removed.processes += 1;
    }
    if !record.prefix.is_empty() {
        // Processes can be started while we look (a restart in flight from a
        // supervisor that was just killed): look twice.
        for _ in 0..2 {
            let names = Topology::leftovers(&record.prefix);
            let procs: Vec<ProcRef> = names.iter().flat_map(|n| netns_pids(n)).collect();
            if procs.is_empty() {
                continue;
            }
            signal(&procs, Signal::SIGTERM);
            if !wait_gone(&procs, GRACE) {
                signal(&procs, Signal::SIGKILL);
                wait_gone(&procs, GRACE);
            }
        }
        removed.namespaces = Topology::remove_leftovers(&record.prefix)?;
    }
    for path in &record.outside_files {
        // Only what the mesh makes outside: `/etc/netns/<prefix>-...`.
        let ours = path.parent() == Some(Path::new("/etc/netns"))
            && !record.prefix.is_empty()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}-", record.prefix)));
        if !ours {
            output::error(format_args!(
                "not removing {}: not a file the mesh makes",
                path.display()
            ));
            continue;
        }
        if path.symlink_metadata().is_ok() {
            std::fs::remove_dir_all(path).map_err(Error::io("removing", path))?;
            removed.files += 1;
        }
    }
    // Inside the state directory: what was recorded, newest first (the
    // record itself, the lock and the directory, if `up` made them, last).
    let removal = owned::remove(&layout.root, &record.created)?;
    removed.files += removal.removed;
    removed.kept = removal.kept;
    Ok(removed)
}
