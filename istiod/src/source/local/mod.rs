//! Local mode: config from a directory of Kubernetes YAML, the manifests a
//! user would `kubectl apply` (see "Local directory source" in
//! `istiod/README.md` for the rules).
//!
//! [`LocalSource::spawn`] scans the directory, reports every valid object and
//! then [`SourceEvent::Synced`], and polls for changes, reporting only the
//! difference. Errors are per file: a file with errors keeps the objects it
//! had when it was last valid; the current errors are on a `watch` channel
//! ([`LocalSource::errors`]) for the debug endpoint and `ambientctl`.

mod decode;
mod error;
mod meta;
mod parse;
mod validate;
mod watch;

#[cfg(test)]
mod parse_error_tests;
#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod validate_tests;
#[cfg(test)]
mod watch_tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

pub use error::{LocalError, Place, Problem, StartError};
pub use parse::SKIPPED;
pub use watch::FileErrors;

use crate::source::{EventSender, SourceEvent};
use watch::Watcher;

/// How often the directory is scanned unless told otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// The shortest poll interval accepted (shorter ones are raised to it).
const MIN_POLL: Duration = Duration::from_millis(10);

/// A running local directory source.
#[derive(Debug)]
pub struct LocalSource {
    errors: tokio::sync::watch::Receiver<FileErrors>,
    task: JoinHandle<()>,
}

impl LocalSource {
    /// Starts watching `dir`: fails if it does not exist or is not a
    /// directory; otherwise the first scan's objects and `Synced` follow on
    /// `events`, then changes every `poll`. Stops when `events` is closed.
    pub async fn spawn(
        dir: PathBuf,
        events: EventSender,
        poll: Duration,
    ) -> Result<Self, StartError> {
        check_dir(&dir).await?;
        let (tx, errors) = tokio::sync::watch::channel(FileErrors::new());
        let task = tokio::spawn(drive(Watcher::new(dir, tx), events, poll));
        Ok(LocalSource { errors, task })
    }

    /// The current errors by file (empty when every file is valid).
    pub fn errors(&self) -> tokio::sync::watch::Receiver<FileErrors> {
        self.errors.clone()
    }

    /// Stops polling.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits until the source stops (its event receiver was dropped).
    pub async fn join(self) {
        // A panicked or aborted task has nothing more to report.
        let _ = self.task.await;
    }
}

/// Runs the source in the current task until `events` is closed; errors are
/// only logged (use [`LocalSource::spawn`] to query them).
pub async fn run(dir: PathBuf, events: EventSender, poll: Duration) -> Result<(), StartError> {
    check_dir(&dir).await?;
    let (tx, _errors) = tokio::sync::watch::channel(FileErrors::new());
    drive(Watcher::new(dir, tx), events, poll).await;
    Ok(())
}

async fn check_dir(dir: &Path) -> Result<(), StartError> {
    match tokio::fs::metadata(dir).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StartError::NotADirectory(dir.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StartError::Missing(dir.to_owned()))
        }
        Err(source) => Err(StartError::Io { path: dir.to_owned(), source }),
    }
}

async fn send_all(events: &EventSender, batch: Vec<SourceEvent>) -> Result<(), ()> {
    for event in batch {
        events.send(event).await.map_err(|_| ())?;
    }
    Ok(())
}

async fn drive(mut watcher: Watcher, events: EventSender, poll: Duration) {
    let initial = watcher.step().await;
    if send_all(&events, initial).await.is_err() || events.send(SourceEvent::Synced).await.is_err()
    {
        return;
    }
    let mut ticks = tokio::time::interval(poll.max(MIN_POLL));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = events.closed() => return,
        }
        if send_all(&events, watcher.step().await).await.is_err() {
            return;
        }
    }
}
