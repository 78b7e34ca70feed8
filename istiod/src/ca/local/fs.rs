//! Small file helpers: atomic writes with an exact mode, private-file checks.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::ca::CaError;

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(super) fn private_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CaError::io(format!("creating {}", dir.display())))
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// reader never sees a partial file; the result has exactly `mode`.
pub(super) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let context = |what: &str| format!("{what} {}", tmp.display());
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CaError::io(context("removing stale"))(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(CaError::io(context("creating")))?;
    // The umask may have removed bits; set exactly what was asked.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(CaError::io(context("setting the mode of")))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(CaError::io(context("writing")))?;
    std::fs::rename(&tmp, path).map_err(CaError::io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))
}

/// Reads a file that must not be readable by group or others.
pub(super) fn read_private(path: &Path) -> Result<Vec<u8>, CaError> {
    let meta =
        std::fs::metadata(path).map_err(CaError::io(format!("reading {}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::Permissions { path: path.to_owned(), mode });
    }
    std::fs::read(path).map_err(CaError::io(format!("reading {}", path.display())))
}
