//! The state directory's lock: one `up` (and then its supervisor) per
//! state directory.
//!
//! `up` takes an exclusive `flock` on `STATE/lock` before it looks at or
//! writes anything else, and hands the locked open file to the supervisor
//! as its standard input: a `flock` belongs to the open file description,
//! so the lock stays held while the supervisor lives, also after `up` has
//! exited, and is released by the kernel when the supervisor dies however
//! it dies. The supervisor's own children get `/dev/null` as stdin and
//! every other descriptor is close-on-exec, so none of them hold it.
//! A second `up` fails at once with a clear error.

use std::fs::{File, OpenOptions};
use std::mem::ManuallyDrop;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::Error;
use super::layout::Layout;

/// The held lock. Never unlocked explicitly: `Flock`'s drop would unlock
/// the description the supervisor shares, so it is kept un-dropped and the
/// kernel releases it when the last holder exits.
#[derive(Debug)]
pub(crate) struct StateLock {
    lock: ManuallyDrop<Flock<File>>,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("{0}")]
    Io(#[from] Error),
    #[error("locking {path}: {errno}")]
    Lock { path: String, errno: Errno },
    #[error("held by another process")]
    Held,
}

impl StateLock {
    /// Takes the lock of `layout`'s state directory, creating the lock
    /// file if needed (the caller claimed it). Fails at once if held.
    pub(crate) fn take(layout: &Layout) -> Result<Self, LockError> {
        let path = layout.lock();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("opening", &path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { lock: ManuallyDrop::new(lock) }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held),
            Err((_, errno)) => Err(LockError::Lock { path: path.display().to_string(), errno }),
        }
    }

    /// Whether someone holds the lock of `layout`'s state directory (an
    /// `up` starting a mesh, or a running supervisor). Probes with a
    /// separate open file, released again at once.
    pub(crate) fn is_held(layout: &Layout) -> bool {
        let Ok(file) = File::open(layout.lock()) else { return false };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_probe) => false,
            Err((_, errno)) => errno == Errno::EWOULDBLOCK,
        }
    }

    /// Another open file on the same description, for the supervisor's
    /// stdin.
    pub(crate) fn share(&self) -> Result<File, Error> {
        let fd = self
            .lock
            .as_fd()
            .try_clone_to_owned()
            .map_err(Error::io("sharing", "the state lock"))?;
        Ok(File::from(fd))
    }

    /// The lock `up` handed over as stdin, checked to be this state
    /// directory's lock file and held through it. The supervisor refuses to
    /// run without it (it was not started by `up`).
    pub(crate) fn inherited(layout: &Layout) -> Result<Self, Error> {
        let refused = |why: &str| {
            Error::State(format!(
                "the supervisor runs only under `ambientctl local up`, which hands it the lock of {} as its stdin: {why}",
                layout.root.display()
            ))
        };
        let stdin =
            std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| refused(&e.to_string()))?;
        let file = File::from(stdin);
        let ours = layout.lock().metadata().map_err(|e| refused(&e.to_string()))?;
        let got = file.metadata().map_err(|e| refused(&e.to_string()))?;
        if (ours.dev(), ours.ino()) != (got.dev(), got.ino()) {
            return Err(refused("stdin is not the lock file"));
        }
        // Same description: succeeds only if `up` holds it through it (an
        // unlocked file would be locked now, and that is fine too: ours).
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { lock: ManuallyDrop::new(lock) }),
            Err((_, errno)) => Err(refused(&format!("it is held by another process ({errno})"))),
        }
    }
}
