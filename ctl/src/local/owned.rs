//! What the mesh created inside the state directory, and removing exactly
//! that at `down`.
//!
//! Every path is recorded in `state.json` ([`Record::created`]) before it
//! is created ([`claim`]); a path that already exists is not claimed (it
//! is someone else's). `down` ([`remove`]) walks the record newest first
//! and removes each path by its [`Kind`]:
//!
//! - a file (or socket, or a link we made) is unlinked;
//! - a directory is removed only if it is empty by then: a file a user put
//!   into it keeps it, and the user's file, in place;
//! - a tree (a directory handed whole to a component that fills it:
//!   istiod's state, the generated config, a node's socket directory) is
//!   removed with its contents.
//!
//! Nothing is followed out of the state directory: a recorded path must be
//! inside it, every directory between it and the state directory must be
//! a real directory (not a symlink), and removal never follows a symlink
//! (`remove_dir_all` removes a link, not its target).

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::Error;
use super::layout::Layout;
use super::record::{self, Record};

/// How a created path is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Tree,
}

/// One path the mesh created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Created {
    pub(crate) path: PathBuf,
    pub(crate) kind: Kind,
}

/// The entries for `path` (of `kind`) and each missing directory between
/// the state directory and it (as [`Kind::Dir`]), outermost first; empty
/// if `path` exists. `path` must be inside the state directory.
pub(crate) fn missing(layout: &Layout, path: &Path, kind: Kind) -> Result<Vec<Created>, Error> {
    let relative = inside(&layout.root, path)?;
    let mut out = Vec::new();
    let mut at = layout.root.clone();
    let components: Vec<Component<'_>> = relative.components().collect();
    for (i, part) in components.iter().enumerate() {
        at.push(part);
        if at.symlink_metadata().is_ok() {
            continue;
        }
        let last = i + 1 == components.len();
        out.push(Created { path: at.clone(), kind: if last { kind } else { Kind::Dir } });
    }
    Ok(out)
}

/// Records `path` (and its missing parents) in `state.json` before the
/// caller creates it. Returns whether anything was new.
pub(crate) fn claim(layout: &Layout, path: &Path, kind: Kind) -> Result<bool, Error> {
    let new = missing(layout, path, kind)?;
    if new.is_empty() {
        return Ok(false);
    }
    let mut record: Record = record::load(&layout.record())?.unwrap_or_default();
    let before = record.created.len();
    for entry in new {
        if !record.created.iter().any(|c| c.path == entry.path) {
            record.created.push(entry);
        }
    }
    if record.created.len() == before {
        return Ok(false);
    }
    record::save(&layout.record(), &record)?;
    Ok(true)
}

/// [`claim`], then `create_dir_all`.
pub(crate) fn create_dir(layout: &Layout, dir: &Path, kind: Kind) -> Result<(), Error> {
    claim(layout, dir, kind)?;
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))
}

/// `path` relative to `root`, if it is inside it (no `..`, not `root`).
fn inside(root: &Path, path: &Path) -> Result<PathBuf, Error> {
    let outside = || {
        Error::State(format!(
            "{} is not inside the state directory {}",
            path.display(),
            root.display()
        ))
    };
    let relative = path.strip_prefix(root).map_err(|_| outside())?;
    let normal = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if !normal || relative.as_os_str().is_empty() {
        return Err(outside());
    }
    Ok(relative.to_owned())
}

/// Whether every directory between `root` and `path` (exclusive) is a
/// real directory, so that acting on `path` stays inside `root`.
fn no_links_between(root: &Path, path: &Path) -> bool {
    let Ok(relative) = inside(root, path) else { return false };
    let mut at = root.to_owned();
    let mut parts: Vec<Component<'_>> = relative.components().collect();
    parts.pop();
    parts.iter().all(|part| {
        at.push(part);
        at.symlink_metadata().is_ok_and(|m| m.file_type().is_dir())
    })
}

/// What [`remove`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Removal {
    /// Paths removed.
    pub(crate) removed: usize,
    /// Directories kept because something not ours is in them.
    pub(crate) kept: Vec<PathBuf>,
}

/// Removes what `created` lists, newest first (see the module docs). The
/// state directory itself goes only if it is listed and empty by then.
pub(crate) fn remove(root: &Path, created: &[Created]) -> Result<Removal, Error> {
    let mut removal = Removal::default();
    for entry in created.iter().rev() {
        let path = &entry.path;
        let is_root = path == root;
        if !is_root && !no_links_between(root, path) {
            report_skipped(path);
            continue;
        }
        let Ok(meta) = path.symlink_metadata() else { continue };
        let kind = meta.file_type();
        let result = match entry.kind {
            _ if kind.is_symlink() => std::fs::remove_file(path),
            Kind::File if kind.is_dir() => {
                // Not what we made: leave it.
                removal.kept.push(path.clone());
                continue;
            }
            Kind::File => std::fs::remove_file(path),
            Kind::Tree if kind.is_dir() && !is_root => std::fs::remove_dir_all(path),
            Kind::Dir | Kind::Tree if kind.is_dir() => match std::fs::remove_dir(path) {
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    removal.kept.push(path.clone());
                    continue;
                }
                other => other,
            },
            Kind::Dir | Kind::Tree => {
                removal.kept.push(path.clone());
                continue;
            }
        };
        match result {
            Ok(()) => removal.removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { what: "removing", path: path.clone(), source: e }),
        }
    }
    Ok(removal)
}

fn report_skipped(path: &Path) {
    crate::output::error(format_args!(
        "not removing {}: a directory on its way is not the one the mesh made (a symlink?)",
        path.display()
    ));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn entry(path: PathBuf, kind: Kind) -> Created {
        Created { path, kind }
    }

    #[test]
    fn missing_lists_the_new_parents_then_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&dir.path().join("state"));
        let log = layout.logs().join("demo").join("a.log");
        let got = missing(&layout, &log, Kind::File).unwrap();
        let paths: Vec<&Path> = got.iter().map(|c| c.path.as_path()).collect();
        assert_eq!(
            paths,
            [layout.logs().as_path(), &layout.logs().join("demo"), &log],
            "the state directory itself is the caller's to claim"
        );
        assert_eq!(got[2].kind, Kind::File);
        assert!(missing(&layout, Path::new("/etc/passwd"), Kind::File).is_err());
        assert!(missing(&layout, &layout.root.join("../x"), Kind::File).is_err());
    }

    #[test]
    fn only_what_was_created_goes_and_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("precious"), "x").unwrap();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("ours.log"), "x").unwrap();
        std::fs::write(logs.join("users.txt"), "mine").unwrap();
        std::fs::create_dir_all(root.join("istiod/tokens")).unwrap();
        std::fs::write(root.join("istiod/tokens/node"), "t").unwrap();
        // A recorded tree replaced by a link to somewhere else.
        symlink(&victim, root.join("config")).unwrap();
        // A recorded file behind a directory that became a link.
        symlink(&victim, root.join("nodes")).unwrap();
        let created = vec![
            entry(root.clone(), Kind::Dir),
            entry(logs.clone(), Kind::Dir),
            entry(logs.join("ours.log"), Kind::File),
            entry(root.join("istiod"), Kind::Tree),
            entry(root.join("config"), Kind::Tree),
            entry(root.join("nodes/precious"), Kind::File),
        ];
        let removal = remove(&root, &created).unwrap();
        assert_eq!(std::fs::read_to_string(logs.join("users.txt")).unwrap(), "mine");
        assert!(!logs.join("ours.log").exists());
        assert!(!root.join("istiod").exists(), "a tree goes whole");
        assert!(root.join("config").symlink_metadata().is_err(), "the link itself goes");
        assert_eq!(std::fs::read_to_string(victim.join("precious")).unwrap(), "x");
        assert_eq!(removal.kept, [logs.clone(), root.clone()]);
        std::fs::remove_file(logs.join("users.txt")).unwrap();
        std::fs::remove_file(root.join("nodes")).unwrap();
        remove(&root, &created).unwrap();
        assert!(!root.exists(), "empty once the user's file is gone");
    }
}
