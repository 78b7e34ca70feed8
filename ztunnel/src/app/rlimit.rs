//! The descriptor limit: every proxied connection costs descriptors (the
//! client's, the upstream's, and a duplicate per pod-side socket), and the
//! usual soft limit (1024) is far below what a node's pods need, while the
//! hard limit a container gets is large. upstream: ztunnel raises
//! RLIMIT_NOFILE's soft limit to the hard limit at start.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft and hard limits before and after a raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimits {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("reading RLIMIT_NOFILE: {0}")]
    Read(#[source] nix::Error),
    #[error("raising RLIMIT_NOFILE to {hard}: {source}")]
    Raise {
        hard: u64,
        #[source]
        source: nix::Error,
    },
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and logs what it did.
pub fn raise_nofile_limit() -> Result<NofileLimits, RlimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(RlimitError::Read)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|source| RlimitError::Raise { hard, source })?;
    }
    let (after, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(RlimitError::Read)?;
    tracing::info!(before = soft, after, hard, "raised the open file limit (RLIMIT_NOFILE)");
    Ok(NofileLimits { before: soft, after, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "ZTUNNEL_RLIMIT_TEST_CHILD";

    /// Lowering the limit would starve the other tests of this process, so
    /// the check runs in a child: this test binary again, this test only.
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        if std::env::var_os(CHILD).is_some() {
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            let low = hard.min(256);
            setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
            let limits = raise_nofile_limit().unwrap();
            assert_eq!(limits.before, low);
            assert_eq!(limits.after, hard);
            assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "app::rlimit::tests::the_soft_limit_is_raised_to_the_hard_limit"])
            .env(CHILD, "1")
            .status()
            .unwrap();
        assert!(status.success(), "the child's check failed");
    }
}
