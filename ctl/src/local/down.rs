//! `ambientctl local down`: removes everything a mesh made, from its
//! record, whether the supervisor is alive, dead, or was killed half way
//! through start-up. Order: the supervisor (SIGTERM: it stops and reaps
//! its processes; SIGKILL if it does not exit, so nothing is restarted),
//! every process inside the mesh's namespaces (`ip netns pids`; SIGTERM,
//! SIGKILL after a grace period), the namespaces themselves (their veths,
//! the bridge, capture rules and routes go with them), the files outside
//! the state directory, then the state directory's own files.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use mesh_netns::Topology;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::error::Error;
use super::layout::Layout;
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
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(Error::io("removing", path))?;
            removed.files += 1;
        }
    }
    for dir in [layout.config(), layout.istiod_state(), layout.root.join("nodes"), layout.logs()] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io("removing", &dir))?;
            removed.files += 1;
        }
    }
    for file in [
        layout.status(),
        layout.status().with_extension("json.tmp"),
        layout.record().with_extension("json.tmp"),
        layout.record(),
    ] {
        if file.exists() {
            std::fs::remove_file(&file).map_err(Error::io("removing", &file))?;
            removed.files += 1;
        }
    }
    // The directory itself if it is now empty (it may be the user's).
    let _ = std::fs::remove_dir(&layout.root);
    Ok(removed)
}
