//! Directory scanning and the per-poll diff.
//!
//! Each poll reads every config file; a file whose bytes changed is parsed
//! again. A file with errors (unreadable, syntax, validation, duplicates)
//! keeps the objects it had when it was last valid. The union of the accepted
//! objects is compared by value with what was last reported, and only the
//! difference is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::error::{LocalError, Place, Problem};
use super::parse::{Parsed, parse_file};
use crate::source::{Object, ObjectRef, SourceEvent};

/// The current errors, by file (the directory itself when it cannot be read).
pub type FileErrors = BTreeMap<PathBuf, Vec<LocalError>>;

/// Whether a directory entry is a config file: `.yaml`, `.yml` or `.json`,
/// not hidden (which also covers editor swap and backup files like
/// `.x.yaml.swp`, `.#x.yaml`; `x.yaml~` has another extension).
fn is_config_file(name: &str) -> bool {
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// What a scan of the directory found.
#[derive(Debug)]
enum Scan {
    /// The directory does not exist (any more).
    Gone,
    /// The directory could not be listed (kept as it was).
    Failed(String),
    Listed {
        /// Contents, or why a file could not be read.
        files: BTreeMap<PathBuf, Result<Vec<u8>, String>>,
        /// Subdirectories that could not be listed (and why): files under
        /// them are kept.
        unreadable: Vec<(PathBuf, String)>,
    },
}

fn scan(dir: &Path) -> Scan {
    let mut files = BTreeMap::new();
    let mut unreadable = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Really gone, not just unreadable for a moment.
            return match std::fs::symlink_metadata(dir) {
                Err(e) if e.kind() == ErrorKind::NotFound => Scan::Gone,
                _ => Scan::Failed(e.to_string()),
            };
        }
        Err(e) => return Scan::Failed(e.to_string()),
    }
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                unreadable.push((current, e.to_string()));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    unreadable.push((current.clone(), e.to_string()));
                    continue;
                }
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else { continue };
            if file_type.is_dir() {
                pending.push(path);
                continue;
            }
            // Symlinks to files are followed (ConfigMap volumes); symlinks to
            // directories are not.
            let is_file = file_type.is_file()
                || (file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file()));
            if is_file && is_config_file(&name) {
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        files.insert(path, Ok(bytes));
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        files.insert(path, Err(e.to_string()));
                    }
                }
            }
        }
    }
    Scan::Listed { files, unreadable }
}

#[derive(Debug)]
struct FileState {
    /// Bytes last read.
    content: Vec<u8>,
    /// What those bytes parse to.
    parsed: Result<Vec<Parsed>, Vec<LocalError>>,
    /// Why the file could not be read this time, if so.
    read_error: Option<LocalError>,
    /// The objects last accepted from this file.
    accepted: Vec<Parsed>,
}

impl FileState {
    fn errors(&self) -> Option<Vec<LocalError>> {
        match (&self.read_error, &self.parsed) {
            (Some(e), _) => Some(vec![e.clone()]),
            (None, Err(e)) => Some(e.clone()),
            (None, Ok(_)) => None,
        }
    }
}

/// The directory's state between polls.
#[derive(Debug)]
pub(crate) struct Watcher {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// What was last reported.
    view: BTreeMap<ObjectRef, Object>,
    /// Errors already logged, by file.
    logged: BTreeMap<PathBuf, BTreeSet<String>>,
    errors: watch::Sender<FileErrors>,
}

impl Watcher {
    pub(crate) fn new(dir: PathBuf, errors: watch::Sender<FileErrors>) -> Self {
        Watcher {
            dir,
            files: BTreeMap::new(),
            view: BTreeMap::new(),
            logged: BTreeMap::new(),
            errors,
        }
    }

    /// Scans the directory and returns the events for what changed.
    pub(crate) async fn step(&mut self) -> Vec<SourceEvent> {
        let dir = self.dir.clone();
        let scan = tokio::task::spawn_blocking(move || scan(&dir))
            .await
            .unwrap_or_else(|e| Scan::Failed(e.to_string()));
        self.apply(scan)
    }

    fn apply(&mut self, scan: Scan) -> Vec<SourceEvent> {
        let mut errors = FileErrors::new();
        let (files, unreadable) = match scan {
            Scan::Listed { files, unreadable } => (files, unreadable),
            Scan::Gone => {
                // Reported (and so logged once) like any error, but it empties.
                let problem = Problem::Read("the directory is gone; treated as empty".to_owned());
                errors.insert(self.dir.clone(), vec![LocalError::file(self.dir.clone(), problem)]);
                (BTreeMap::new(), Vec::new())
            }
            Scan::Failed(e) => {
                // Nothing changes; the previous errors stay, plus this one.
                let mut errors = self.errors.borrow().clone();
                let error = LocalError::file(self.dir.clone(), Problem::Read(e));
                errors.insert(self.dir.clone(), vec![error]);
                self.publish(errors);
                return Vec::new();
            }
        };
        self.files.retain(|path, _| {
            files.contains_key(path) || unreadable.iter().any(|(dir, _)| path.starts_with(dir))
        });
        for (dir, e) in unreadable {
            let error = LocalError::file(dir.clone(), Problem::Read(e));
            errors.entry(dir).or_default().push(error);
        }
        for (path, read) in files {
            match read {
                Ok(bytes) => match self.files.get_mut(&path) {
                    Some(state) if state.content == bytes => state.read_error = None,
                    Some(state) => {
                        state.parsed = parse_file(&path, &bytes);
                        state.content = bytes;
                        state.read_error = None;
                    }
                    None => {
                        let parsed = parse_file(&path, &bytes);
                        let state = FileState {
                            content: bytes,
                            parsed,
                            read_error: None,
                            accepted: Vec::new(),
                        };
                        self.files.insert(path, state);
                    }
                },
                Err(e) => {
                    let error = LocalError::file(path.clone(), Problem::Read(e));
                    match self.files.get_mut(&path) {
                        Some(state) => state.read_error = Some(error),
                        None => {
                            errors.insert(path, vec![error]);
                        }
                    }
                }
            }
        }
        for (path, state) in &self.files {
            if let Some(e) = state.errors() {
                errors.insert(path.clone(), e);
            }
        }
        self.reject_duplicates(&mut errors);
        for (path, state) in &mut self.files {
            if !errors.contains_key(path)
                && let Ok(parsed) = &state.parsed
            {
                state.accepted = parsed.clone();
            }
        }
        let events = self.diff();
        self.publish(errors);
        events
    }

    /// Objects defined in two files: the file that already had the object
    /// keeps it, every other file defining it fails (naming the other place);
    /// with no such file, all of them fail. Files that fail keep their old
    /// objects, which may clash with yet another file, so this repeats until
    /// nothing changes.
    fn reject_duplicates(&self, errors: &mut FileErrors) {
        loop {
            let mut owners: BTreeMap<ObjectRef, Vec<(&PathBuf, &Place)>> = BTreeMap::new();
            for (path, state) in &self.files {
                let objects = match (&state.parsed, errors.contains_key(path)) {
                    (Ok(parsed), false) => parsed.as_slice(),
                    _ => state.accepted.as_slice(),
                };
                for p in objects {
                    owners.entry(p.object.reference()).or_default().push((path, &p.place));
                }
            }
            let mut failed: Vec<(PathBuf, LocalError)> = Vec::new();
            for (key, places) in owners.iter().filter(|(_, places)| places.len() > 1) {
                // The file that already had the object keeps it.
                let had = |path: &PathBuf| {
                    let state = self.files.get(path);
                    state.is_some_and(|s| s.accepted.iter().any(|p| p.object.reference() == *key))
                };
                let incumbent = places.iter().find(|(path, _)| had(path)).copied();
                for &(path, place) in places {
                    if errors.contains_key(path) || incumbent.is_some_and(|(p, _)| p == path) {
                        continue;
                    }
                    let mut others = incumbent.into_iter().chain(places.iter().copied());
                    let Some((_, other)) = others.find(|(p, _)| *p != path) else {
                        continue;
                    };
                    let problem = Problem::Duplicate { other: other.clone() };
                    let error = LocalError::at(place, Some(key.to_string()), problem);
                    failed.push((path.clone(), error));
                }
            }
            if failed.is_empty() {
                return;
            }
            for (path, error) in failed {
                errors.entry(path).or_default().push(error);
            }
        }
    }

    /// Events turning the last reported view into the accepted objects.
    fn diff(&mut self) -> Vec<SourceEvent> {
        let mut next: BTreeMap<ObjectRef, Object> = BTreeMap::new();
        for state in self.files.values() {
            for p in &state.accepted {
                next.insert(p.object.reference(), p.object.clone());
            }
        }
        let mut events: Vec<SourceEvent> = self
            .view
            .keys()
            .filter(|key| !next.contains_key(key))
            .map(|key| SourceEvent::Deleted(key.clone()))
            .collect();
        events.extend(
            next.iter()
                .filter(|(key, object)| self.view.get(key) != Some(object))
                .map(|(_, object)| SourceEvent::Applied(object.clone())),
        );
        self.view = next;
        events
    }

    /// Logs each distinct error once and publishes the current set.
    fn publish(&mut self, errors: FileErrors) {
        self.logged.retain(|path, _| errors.contains_key(path));
        for (path, list) in &errors {
            let seen = self.logged.entry(path.clone()).or_default();
            let now: BTreeSet<String> = list.iter().map(ToString::to_string).collect();
            for message in now.difference(seen) {
                tracing::warn!(error = %message, "local config: ignoring changes to a file with errors");
            }
            *seen = now;
        }
        self.errors.send_if_modified(|current| {
            let changed = *current != errors;
            if changed {
                *current = errors;
            }
            changed
        });
    }
}
