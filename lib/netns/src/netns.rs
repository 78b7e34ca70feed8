//! Entering network namespaces.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespaces need root (running as uid {uid})")]
    NotRoot { uid: u32 },
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread running in {path} panicked")]
    Panicked { path: PathBuf },
    #[error("spawning a thread for {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Fails with a clear error unless the process runs as root.
pub fn require_root() -> Result<(), NetnsError> {
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 { Ok(()) } else { Err(NetnsError::NotRoot { uid }) }
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens a namespace file: `/var/run/netns/<name>`, `/proc/<pid>/ns/net`,
    /// or a file descriptor path received from the CNI agent.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_owned();
        let file =
            File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        Ok(Self { file, path })
    }

    /// A namespace from an open descriptor, such as the one the CNI agent
    /// passes over ZDS. Its path is only a label, `/proc/self/fd/<n>`.
    pub fn from_fd(fd: OwnedFd) -> Self {
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Self { file: File::from(fd), path }
    }

    /// The open namespace file, to pass on (for example over ZDS).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A namespace created with `ip netns add <name>`.
    pub fn named(name: &str) -> Result<Self, NetnsError> {
        Self::open(Path::new("/var/run/netns").join(name))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh thread that has entered this namespace and
    /// returns its result. The calling thread's namespace is untouched.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path.clone();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".to_owned())
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|source| NetnsError::Enter { path: path.clone(), source })?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Spawn { path: path.clone(), source })?;
            handle.join().map_err(|_| NetnsError::Panicked { path: path.clone() })?
        })
    }

    /// Spawns a long-lived thread named `name` that enters this namespace
    /// and then runs `f` (for example a loop serving socket requests). The
    /// thread's result is `Err` if entering failed.
    pub fn spawn<F, T>(
        &self,
        name: &str,
        f: F,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path.clone();
        let file = self
            .file
            .try_clone()
            .map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { path: thread_path, source })?;
                drop(file);
                Ok(f())
            })
            .map_err(|source| NetnsError::Spawn { path, source })
    }
}
