//! Local-mode authentication and placement.
//!
//! Each node agent gets a random bearer token, one file per node:
//! `<state>/node-tokens/<node>` (mode 0600, 64 hex characters). istiod creates
//! missing ones at start and loads every file in the directory; whoever can
//! read a node's file can act as that node's agent, so the files are only
//! readable by their owner (a file readable by others is refused). A token
//! authenticates as the node agent identity (by default
//! `<istiod-ns>/ztunnel`) on that node, so the agent may obtain certificates
//! for the workloads the local configuration places on that node
//! ([`LocalNodeDirectory`]) and for nothing else. There is no anonymous
//! access.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use mesh_model::Identity;

use super::fs::{private_dir, read_private, write_atomic};
use crate::ca::authn::{Authenticator, Caller, PodRef};
use crate::ca::config::ServiceAccountRef;
use crate::ca::node_authz::NodeDirectory;
use crate::ca::{CaError, Refusal, RefusalReason};

/// Directory under the state directory holding one token file per node.
pub const NODE_TOKENS_DIR: &str = "node-tokens";
/// Random bytes per token (hex-encoded in the file and on the wire).
const TOKEN_BYTES: usize = 32;

struct NodeToken {
    node: String,
    token: Vec<u8>,
}

/// Authenticates node agents by their per-node token.
pub struct LocalTokenAuthenticator {
    tokens: Vec<NodeToken>,
    agent: Identity,
}

impl std::fmt::Debug for LocalTokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<&str> = self.tokens.iter().map(|t| t.node.as_str()).collect();
        f.debug_struct("LocalTokenAuthenticator")
            .field("agent", &self.agent.to_string())
            .field("nodes", &nodes)
            .finish()
    }
}

/// A Kubernetes-style node name: lower-case alphanumerics, `-` and `.`, at
/// most 253 bytes; also safe as a file name.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

fn new_token() -> Result<String, CaError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    boring::rand::rand_bytes(&mut bytes).map_err(CaError::boring("generating a node token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl LocalTokenAuthenticator {
    /// The token file of `node`.
    pub fn token_path(state_dir: &Path, node: &str) -> PathBuf {
        state_dir.join(NODE_TOKENS_DIR).join(node)
    }

    /// Creates a token for each of `nodes` that has none, then loads every
    /// token in `<state_dir>/node-tokens`. Callers authenticate as `agent`.
    pub fn load_or_create(
        state_dir: &Path,
        nodes: &[&str],
        agent: Identity,
    ) -> Result<Self, CaError> {
        let dir = state_dir.join(NODE_TOKENS_DIR);
        private_dir(&dir)?;
        for node in nodes {
            if !valid_node_name(node) {
                return Err(CaError::Config(format!("node name {node:?} is not valid")));
            }
            let path = dir.join(node);
            if !path.exists() {
                write_atomic(&path, format!("{}\n", new_token()?).as_bytes(), 0o600)?;
            }
        }
        let entries =
            std::fs::read_dir(&dir).map_err(CaError::io(format!("listing {}", dir.display())))?;
        let mut tokens = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CaError::io(format!("listing {}", dir.display())))?;
            let node = entry.file_name().to_string_lossy().into_owned();
            if !valid_node_name(&node) {
                // Temporary files of an interrupted write, editor backups.
                continue;
            }
            let raw = read_private(&entry.path())?;
            let token = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
            if token.len() < TOKEN_BYTES {
                return Err(CaError::Config(format!(
                    "token file {} is shorter than {TOKEN_BYTES} characters",
                    entry.path().display()
                )));
            }
            tokens.push(NodeToken { node, token });
        }
        Ok(Self { tokens, agent })
    }

    fn lookup(&self, presented: &str) -> Option<&str> {
        let presented = presented.as_bytes();
        // Compare against every token in constant time per token; the length
        // check first is needed by `memcmp::eq` and leaks nothing secret.
        let mut found = None;
        for entry in &self.tokens {
            if entry.token.len() == presented.len() && boring::memcmp::eq(&entry.token, presented) {
                found = Some(entry.node.as_str());
            }
        }
        found
    }
}

impl Authenticator for LocalTokenAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        let result = match self.lookup(token) {
            Some(node) => {
                Ok(Caller { identity: self.agent.clone(), node: Some(node.to_owned()), pod: None })
            }
            None => Err(Refusal::new(RefusalReason::InvalidToken, "unknown node token")),
        };
        std::future::ready(result).boxed()
    }
}

/// Which service accounts run on which node, as the local configuration says.
#[derive(Debug, Default)]
pub struct LocalNodeDirectory {
    placement: RwLock<BTreeMap<String, BTreeSet<ServiceAccountRef>>>,
}

impl LocalNodeDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole placement with `(node, service account)` pairs.
    pub fn replace(&self, placement: impl IntoIterator<Item = (String, ServiceAccountRef)>) {
        let mut map: BTreeMap<String, BTreeSet<ServiceAccountRef>> = BTreeMap::new();
        for (node, sa) in placement {
            map.entry(node).or_default().insert(sa);
        }
        *self.placement.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    fn contains(&self, node: &str, workload: &Identity) -> bool {
        let key = ServiceAccountRef::new(workload.namespace(), workload.service_account());
        self.placement
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .is_some_and(|accounts| accounts.contains(&key))
    }
}

impl NodeDirectory for LocalNodeDirectory {
    fn caller_pod_node<'a>(
        &'a self,
        caller: &'a Identity,
        _pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<String, Refusal>> {
        let refusal = Refusal::new(
            RefusalReason::CallerNodeUnknown,
            format!("local mode has no pods; {caller} must use a node token"),
        );
        std::future::ready(Err(refusal)).boxed()
    }

    fn runs_on<'a>(
        &'a self,
        node: &'a str,
        workload: &'a Identity,
    ) -> BoxFuture<'a, Result<bool, Refusal>> {
        std::future::ready(Ok(self.contains(node, workload))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn agent() -> Identity {
        Identity::new("cluster.local", "istio-system", "ztunnel").unwrap()
    }

    #[tokio::test]
    async fn tokens_are_created_private_and_map_to_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let auth =
            LocalTokenAuthenticator::load_or_create(dir.path(), &["node-a", "node-b"], agent())
                .unwrap();
        let path = LocalTokenAuthenticator::token_path(dir.path(), "node-b");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        let caller = auth.authenticate(token.trim()).await.unwrap();
        assert_eq!(caller.node.as_deref(), Some("node-b"));
        assert_eq!(caller.identity, agent());

        // Reloading keeps the same tokens.
        let again =
            LocalTokenAuthenticator::load_or_create(dir.path(), &["node-a"], agent()).unwrap();
        assert!(again.authenticate(token.trim()).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_tokens_and_unsafe_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let auth = LocalTokenAuthenticator::load_or_create(dir.path(), &["n1"], agent()).unwrap();
        let refusal = auth.authenticate("0123").await.unwrap_err();
        assert_eq!(refusal.reason(), RefusalReason::InvalidToken);
        let path = LocalTokenAuthenticator::token_path(dir.path(), "n1");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            LocalTokenAuthenticator::load_or_create(dir.path(), &[], agent()),
            Err(CaError::Permissions { .. })
        ));
        assert!(LocalTokenAuthenticator::load_or_create(dir.path(), &["../etc"], agent()).is_err());
    }

    #[tokio::test]
    async fn directory_answers_from_the_placement() {
        let directory = LocalNodeDirectory::new();
        directory.replace([("n1".to_owned(), ServiceAccountRef::new("default", "app"))]);
        let app = Identity::new("cluster.local", "default", "app").unwrap();
        let db = Identity::new("cluster.local", "default", "db").unwrap();
        assert!(directory.runs_on("n1", &app).await.unwrap());
        assert!(!directory.runs_on("n2", &app).await.unwrap());
        assert!(!directory.runs_on("n1", &db).await.unwrap());
    }
}
