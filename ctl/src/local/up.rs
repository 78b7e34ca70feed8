//! `ambientctl local up`: checks the state directory (new, empty, or a
//! mesh's: never someone else's files), the machine and the config, takes
//! the state directory's lock ([`super::lock`]), records what it creates
//! ([`super::owned`]), starts the supervisor detached (its own process
//! group, the lock as its stdin, output to `STATE/logs/supervisor.log`)
//! and waits for its verdict in `status.json`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use mesh_netns::Topology;
use tokio::time::Instant;

use super::down;
use super::error::Error;
use super::inspect;
use super::layout::Layout;
use super::lock::{LockError, StateLock};
use super::manifest;
use super::owned::{self, Created, Kind};
use super::preflight;
use super::record::{self, Phase, Record, Status};
use crate::cli::UpArgs;
use crate::output;

/// How long `up` waits for the supervisor's verdict.
const UP_TIMEOUT: Duration = Duration::from_secs(150);

/// `--bin-dir`, or the directory of this executable.
pub(crate) fn bin_dir(args: &UpArgs) -> Result<PathBuf, Error> {
    if let Some(dir) = &args.bin_dir {
        return Ok(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
    }
    let exe =
        std::env::current_exe().map_err(Error::io("locating", "the ambientctl executable"))?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

pub(crate) fn up(args: &UpArgs) -> Result<ExitCode, Error> {
    let layout = Layout::new(&args.state);
    // Read-only checks first: a refused start creates nothing.
    recognised(&layout)?;
    if let Some(existing) = record::load::<Record>(&layout.record())? {
        return Err(existing_mesh(&layout, &existing));
    }
    let bin = bin_dir(args)?;
    preflight::check(&bin)?;
    let leftovers = Topology::leftovers(&args.prefix);
    if !leftovers.is_empty() {
        return Err(Error::State(format!(
            "network namespaces of prefix {:?} already exist ({}); another mesh uses it: pass --prefix, \
             or remove them with `ambientctl local down` on that mesh's --state",
            args.prefix,
            leftovers.join(", ")
        )));
    }
    let config = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let manifests = manifest::load(&config).map_err(Error::Config)?;
    // Unix socket paths are limited to 107 bytes (sun_path).
    for node in manifests.nodes() {
        let socket = layout.zds_socket(&node);
        if socket.as_os_str().len() > 107 {
            return Err(Error::State(format!(
                "the ZDS socket path {} is longer than 107 bytes; use a shorter --state",
                socket.display()
            )));
        }
    }

    // The directory (if new) and its lock come before the record that
    // lists them: the record lives in the directory, and only the lock's
    // holder may write it.
    let made_root = !layout.root.exists();
    std::fs::create_dir_all(&layout.root).map_err(Error::io("creating", &layout.root))?;
    let lock = match StateLock::take(&layout) {
        Ok(lock) => lock,
        Err(LockError::Held) => return Err(in_use(&layout)),
        Err(LockError::Io(e)) => return Err(e),
        Err(e) => return Err(Error::State(e.to_string())),
    };
    // Another `up` may have come and gone between the checks and the lock.
    if let Some(existing) = record::load::<Record>(&layout.record())? {
        return Err(existing_mesh(&layout, &existing));
    }
    let mut created = Vec::new();
    if made_root {
        created.push(Created { path: layout.root.clone(), kind: Kind::Dir });
    }
    // The lock file is ours even if a crashed `up` left it (`recognised`).
    for file in [layout.lock(), layout.record(), layout.record().with_extension("json.tmp")] {
        created.push(Created { path: file, kind: Kind::File });
    }
    let record = Record {
        prefix: args.prefix.clone(),
        config_dir: config.clone(),
        created,
        ..Record::default()
    };
    record::save(&layout.record(), &record)?;
    owned::create_dir(&layout, &layout.logs(), Kind::Dir)?;

    let supervisor_log = layout.component_log("supervisor");
    owned::claim(&layout, &supervisor_log, Kind::File)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&supervisor_log)
        .map_err(Error::io("opening", &supervisor_log))?;
    let log_err = log.try_clone().map_err(Error::io("opening", &supervisor_log))?;
    let exe =
        std::env::current_exe().map_err(Error::io("locating", "the ambientctl executable"))?;
    let mut child = Command::new(exe)
        .args(["local", "supervise", "--config"])
        .arg(&config)
        .arg("--state")
        .arg(&layout.root)
        .args(["--prefix", &args.prefix, "--bin-dir"])
        .arg(&bin)
        // The lock, held through the supervisor's life (see `super::lock`).
        .stdin(lock.share()?)
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|source| Error::Spawn { what: "the supervisor".into(), source })?;

    let deadline = Instant::now() + UP_TIMEOUT;
    let failure = loop {
        std::thread::sleep(Duration::from_millis(200));
        let status: Option<Status> = record::load(&layout.status()).unwrap_or(None);
        match status {
            Some(s) if s.phase == Phase::Ready => {
                output::line(format_args!(
                    "local mesh up (config {}, state {})\n{}",
                    config.display(),
                    layout.root.display(),
                    inspect::render(&s)
                ));
                return Ok(ExitCode::SUCCESS);
            }
            Some(s) if s.phase == Phase::Failed => {
                break s.error.unwrap_or_else(|| "unknown error".into());
            }
            _ => {}
        }
        if let Ok(Some(exit)) = child.try_wait() {
            break format!(
                "the supervisor exited ({exit}) before the mesh was ready; see {}",
                supervisor_log.display()
            );
        }
        if Instant::now() > deadline {
            break format!(
                "not ready within {} s; see {}",
                UP_TIMEOUT.as_secs(),
                supervisor_log.display()
            );
        }
    };
    // Leave nothing behind; the reason is what matters.
    let record = record::load::<Record>(&layout.record())?.unwrap_or(record);
    if let Err(e) = down::clean(&layout, &record) {
        output::error(format_args!("cleaning up after the failed start: {e}"));
    }
    let _ = child.try_wait();
    Err(Error::Failed(failure))
}

/// Refuses a state directory that is neither new, empty, nor ours: one
/// without our record holding anything but our lock file. (`down` only
/// removes what the record lists; this keeps `up` from adopting a
/// directory of someone else's files.)
fn recognised(layout: &Layout) -> Result<(), Error> {
    let entries = match std::fs::read_dir(&layout.root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Io { what: "reading", path: layout.root.clone(), source: e }),
    };
    if layout.record().symlink_metadata().is_ok() {
        return Ok(());
    }
    let lock = layout.lock();
    let foreign: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| *p != lock)
        .map(|p| p.display().to_string())
        .take(5)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::State(format!(
        "{} is not empty and is not a local mesh's state directory (no state.json); \
         refusing to use it (it holds {}). Pass an empty or new directory as --state.",
        layout.root.display(),
        foreign.join(", ")
    )))
}

/// The error for a state directory whose lock someone holds.
fn in_use(layout: &Layout) -> Error {
    let record = record::load::<Record>(&layout.record()).ok().flatten();
    let by = match record.and_then(|r| r.supervisor) {
        Some(s) if s.alive() => format!("its mesh runs (supervisor pid {})", s.pid),
        _ => "another `ambientctl local up` is starting a mesh there".to_owned(),
    };
    Error::State(format!(
        "the state directory {} is in use: {by}. One mesh per state directory: \
         `ambientctl local status --state {}` shows it, `ambientctl local down --state {}` stops it.",
        layout.root.display(),
        layout.root.display(),
        layout.root.display()
    ))
}

/// The error for a state directory that already records a mesh.
fn existing_mesh(layout: &Layout, existing: &Record) -> Error {
    if existing.supervisor.is_some_and(|s| s.alive()) || StateLock::is_held(layout) {
        return in_use(layout);
    }
    Error::State(format!(
        "{} records a mesh that is not running (stopped or killed half way); \
         run `ambientctl local down --state {}` to clean it up first",
        layout.record().display(),
        layout.root.display()
    ))
}
