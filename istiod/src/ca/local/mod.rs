//! Local mode: no cluster. The CA keeps its root in a state directory,
//! publishes the trust bundle as a file there, and authenticates node agents
//! with per-node bearer tokens (see `istiod/README.md`).

mod auth;
mod fs;
mod store;

pub use auth::{LocalNodeDirectory, LocalTokenAuthenticator, NODE_TOKENS_DIR};
pub use store::{FileBundlePublisher, FileRootStore};
