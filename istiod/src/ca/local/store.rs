//! The root and the trust bundle as files in the state directory:
//! `ca-key.pem` (0600), `ca-cert.pem` (0644), `root-cert.pem` (0644).

use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::fs::{private_dir, read_private, write_atomic};
use crate::ca::CaError;
use crate::ca::publish::{BundlePublisher, ROOT_CERT_KEY};
use crate::ca::root::{RootStore, StoredCa};

const CERT_FILE: &str = "ca-cert.pem";
const KEY_FILE: &str = "ca-key.pem";

/// Keeps the self-signed root in a directory.
#[derive(Debug, Clone)]
pub struct FileRootStore {
    dir: PathBuf,
}

impl FileRootStore {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self { dir: state_dir.into() }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    fn load_now(&self) -> Result<Option<StoredCa>, CaError> {
        let (key, cert) = (self.key_path(), self.cert_path());
        match (key.exists(), cert.exists()) {
            (false, false) => Ok(None),
            (true, true) => {
                let key_pem = read_private(&key)?;
                let cert_pem = std::fs::read(&cert)
                    .map_err(CaError::io(format!("reading {}", cert.display())))?;
                Ok(Some(StoredCa { cert_pem, key_pem }))
            }
            (true, false) => Err(self.incomplete(KEY_FILE, CERT_FILE)),
            (false, true) => Err(self.incomplete(CERT_FILE, KEY_FILE)),
        }
    }

    fn incomplete(&self, present: &'static str, missing: &'static str) -> CaError {
        CaError::IncompleteState { dir: self.dir.clone(), present, missing }
    }

    fn create_now(&self, ca: StoredCa) -> Result<StoredCa, CaError> {
        if let Some(existing) = self.load_now()? {
            return Ok(existing);
        }
        private_dir(&self.dir)?;
        write_atomic(&self.key_path(), &ca.key_pem, 0o600)?;
        write_atomic(&self.cert_path(), &ca.cert_pem, 0o644)?;
        Ok(ca)
    }
}

impl RootStore for FileRootStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<StoredCa>, CaError>> {
        std::future::ready(self.load_now()).boxed()
    }

    fn create(&self, ca: StoredCa) -> BoxFuture<'_, Result<StoredCa, CaError>> {
        std::future::ready(self.create_now(ca)).boxed()
    }
}

/// Writes the trust bundle to a file (default `<state>/root-cert.pem`).
#[derive(Debug, Clone)]
pub struct FileBundlePublisher {
    path: PathBuf,
}

impl FileBundlePublisher {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `<state_dir>/root-cert.pem`.
    pub fn in_state_dir(state_dir: &Path) -> Self {
        Self::new(state_dir.join(ROOT_CERT_KEY))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BundlePublisher for FileBundlePublisher {
    fn publish<'a>(&'a self, bundle_pem: &'a str) -> BoxFuture<'a, Result<(), CaError>> {
        let result = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => private_dir(dir),
            _ => Ok(()),
        }
        .and_then(|()| write_atomic(&self.path, bundle_pem.as_bytes(), 0o644));
        std::future::ready(result).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::ca::root::load_or_create_root;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn root_is_generated_once_and_reloaded_identically() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = FileRootStore::new(&state);
        let first = load_or_create_root(&store, "cluster.local").await.unwrap();
        assert_eq!(mode(&store.key_path()), 0o600);
        assert_eq!(mode(&store.cert_path()), 0o644);
        assert_eq!(mode(&state), 0o700);
        let key_before = std::fs::read(store.key_path()).unwrap();

        // A restart: a new store over the same directory.
        let second =
            load_or_create_root(&FileRootStore::new(&state), "cluster.local").await.unwrap();
        assert_eq!(first.trust_bundle_pem().unwrap(), second.trust_bundle_pem().unwrap());
        assert_eq!(std::fs::read(store.key_path()).unwrap(), key_before);
        assert_eq!(first.roots().len(), 1);
    }

    #[tokio::test]
    async fn readable_key_or_half_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileRootStore::new(dir.path());
        load_or_create_root(&store, "cluster.local").await.unwrap();
        std::fs::set_permissions(store.key_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_root(&store, "cluster.local").await,
            Err(CaError::Permissions { mode: 0o644, .. })
        ));
        std::fs::remove_file(store.cert_path()).unwrap();
        assert!(matches!(
            load_or_create_root(&store, "cluster.local").await,
            Err(CaError::IncompleteState { .. })
        ));
    }

    #[tokio::test]
    async fn bundle_file_is_written_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let publisher = FileBundlePublisher::in_state_dir(dir.path());
        publisher.publish("one\n").await.unwrap();
        publisher.publish("two\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(publisher.path()).unwrap(), "two\n");
        assert_eq!(mode(publisher.path()), 0o644);
    }
}
