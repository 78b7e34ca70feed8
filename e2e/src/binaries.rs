//! The mesh's binaries (`ambientctl`, `istiod`, `ztunnel`) in the cargo
//! target directory the running test was built into.
//!
//! An integration test of this crate cannot use another crate's
//! `CARGO_BIN_EXE_*`, so the binaries are found from the test executable
//! itself: `target/<profile>/deps/<test>-<hash>` -> `target/<profile>/`,
//! where `cargo build --bins` puts them. `MESH_E2E_BIN_DIR` names another
//! directory holding all three instead (binaries kept from one build while
//! the shared target directory is rebuilt from other checkouts).

use std::path::{Path, PathBuf};

/// Why a binary could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("locating the test executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("the test executable {0} is not in a cargo target directory (target/<profile>/deps/)")]
    NotInTarget(PathBuf),
    #[error(
        "{} is missing: run `cargo build --bins -p ambientctl -p istiod -p ztunnel` \
         (with the same CARGO_TARGET_DIR and profile as the tests) first",
        .0.display()
    )]
    Missing(PathBuf),
}

/// The environment variable naming a directory of binaries to use
/// instead of the test's profile directory.
pub const BIN_DIR_ENV: &str = "MESH_E2E_BIN_DIR";

/// `target/<profile>/`, from the test executable's path, or
/// `$MESH_E2E_BIN_DIR` when set.
pub fn profile_dir() -> Result<PathBuf, BinaryError> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(BinaryError::CurrentExe)?;
    profile_dir_of(&exe)
}

fn profile_dir_of(exe: &Path) -> Result<PathBuf, BinaryError> {
    let deps = exe.parent().filter(|d| d.file_name().is_some_and(|n| n == "deps"));
    deps.and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| BinaryError::NotInTarget(exe.to_path_buf()))
}

/// The path of binary `name` (e.g. `ambientctl`) beside the test's profile
/// directory; an error naming the build command when it is not there.
pub fn binary(name: &str) -> Result<PathBuf, BinaryError> {
    let path = profile_dir()?.join(name);
    if path.is_file() { Ok(path) } else { Err(BinaryError::Missing(path)) }
}

/// `ambientctl`, after checking that `istiod` and `ztunnel` are beside it
/// (`ambientctl local up` starts them from its own directory).
pub fn ambientctl() -> Result<PathBuf, BinaryError> {
    for name in ["istiod", "ztunnel"] {
        binary(name)?;
    }
    binary("ambientctl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_directory_is_the_parent_of_deps() {
        let dir = profile_dir_of(Path::new("/t/target/debug/deps/attacks-0123")).ok();
        assert_eq!(dir, Some(PathBuf::from("/t/target/debug")));
        assert!(profile_dir_of(Path::new("/usr/bin/attacks")).is_err());
    }
}
