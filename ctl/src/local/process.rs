//! Processes the supervisor runs inside network namespaces (istiod, the
//! ztunnels, the pods' containers): started with `ip netns exec`, in their
//! own process group, output appended to a log file, restarted per policy
//! with a capped exponential backoff.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use tokio::time::Instant;

use super::error::Error;
use super::layout::Layout;
use super::manifest::RestartPolicy;
use super::owned::{self, Kind};

/// How to start one process.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// Shown in logs and errors: `istiod`, `ztunnel node-a`, `container demo/client/app`.
    pub(crate) what: String,
    pub(crate) netns: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: Option<PathBuf>,
    pub(crate) log: PathBuf,
    /// The state directory the log is in (its path is recorded there
    /// before it is created).
    pub(crate) layout: Layout,
}

impl Launch {
    fn spawn(&self) -> Result<Child, Error> {
        let spawn_err = |source| Error::Spawn { what: self.what.clone(), source };
        owned::claim(&self.layout, &self.log, Kind::File)?;
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io("opening", &self.log))?;
        let err = log.try_clone().map_err(Error::io("opening", &self.log))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        cmd.spawn().map_err(spawn_err)
    }
}

/// A process kept running per its restart policy.
#[derive(Debug)]
pub(crate) struct Supervised {
    pub(crate) launch: Launch,
    policy: RestartPolicy,
    child: Option<Child>,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<String>,
    next_start: Option<Instant>,
    started: Instant,
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Running this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);

impl Supervised {
    pub(crate) fn start(launch: Launch, policy: RestartPolicy) -> Result<Self, Error> {
        let child = launch.spawn()?;
        Ok(Self {
            launch,
            policy,
            child: Some(child),
            restarts: 0,
            last_exit: None,
            next_start: None,
            started: Instant::now(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if it has exited since the last call (start-up checks).
    pub(crate) fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok()??;
        self.child = None;
        let text = status.to_string();
        self.last_exit = Some(text.clone());
        Some(text)
    }

    /// Reaps an exited process and restarts it when its policy and backoff
    /// say so. Returns a line for the supervisor's log when something happened.
    pub(crate) fn tick(&mut self) -> Option<String> {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            self.child = None;
            self.last_exit = Some(status.to_string());
            let restart = match self.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::Never => false,
            };
            if self.started.elapsed() > STABLE {
                self.restarts = 0;
            }
            if restart {
                let exp = self.restarts.min(5);
                let delay = Duration::from_secs(1u64 << exp).min(MAX_BACKOFF);
                self.next_start = Some(Instant::now() + delay);
                return Some(format!(
                    "{} exited ({status}); restarting in {delay:?}",
                    self.launch.what
                ));
            }
            return Some(format!(
                "{} exited ({status}); not restarted (restartPolicy)",
                self.launch.what
            ));
        }
        self.next_start.filter(|at| *at <= Instant::now())?;
        self.next_start = None;
        self.restarts = self.restarts.saturating_add(1);
        match self.launch.spawn() {
            Ok(child) => {
                self.child = Some(child);
                self.started = Instant::now();
                Some(format!("{} restarted (restart {})", self.launch.what, self.restarts))
            }
            Err(e) => {
                self.next_start = Some(Instant::now() + MAX_BACKOFF);
                Some(format!("{}: {e}", self.launch.what))
            }
        }
    }

    /// Sends `signal` to its process group (our processes lead their own).
    pub(crate) fn signal(&mut self, signal: Signal) {
        self.next_start = None;
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            // Already gone is fine.
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// Stops it for good: SIGTERM now, never restarted (reaped by `tick`).
    pub(crate) fn retire(&mut self) {
        self.policy = RestartPolicy::Never;
        self.signal(Signal::SIGTERM);
    }

    /// Waits for it to exit (after SIGKILL).
    pub(crate) fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}
