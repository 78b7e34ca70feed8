//! `ambientctl local up`: checks the machine and the config, starts the
//! supervisor detached (its own process group, stdin closed, output to
//! `STATE/logs/supervisor.log`) and waits for its verdict in `status.json`.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use mesh_netns::Topology;
use tokio::time::Instant;

use super::down;
use super::error::Error;
use super::inspect;
use super::layout::Layout;
use super::manifest;
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
    if let Some(existing) = record::load::<Record>(&layout.record())? {
        if let Some(supervisor) = existing.supervisor.filter(|s| s.alive()) {
            output::line(format_args!(
                "a local mesh is already running (supervisor pid {}, config {}, state {}); nothing changed.\n\
                 `ambientctl local status --state {}` shows it; `ambientctl local down --state {}` stops it.",
                supervisor.pid,
                existing.config_dir.display(),
                layout.root.display(),
                layout.root.display(),
                layout.root.display(),
            ));
            return Ok(ExitCode::SUCCESS);
        }
        return Err(Error::State(format!(
            "{} records a mesh that is not running (stopped or killed half way); \
             run `ambientctl local down --state {}` to clean it up first",
            layout.record().display(),
            layout.root.display()
        )));
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

    std::fs::create_dir_all(layout.logs()).map_err(Error::io("creating", layout.logs()))?;
    let record =
        Record { prefix: args.prefix.clone(), config_dir: config.clone(), ..Record::default() };
    record::save(&layout.record(), &record)?;

    let supervisor_log = layout.component_log("supervisor");
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
        .stdin(Stdio::null())
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
