//! istiod's side of delta ADS.

mod connections;
mod session;
mod stream;

pub use connections::{Connections, SharedSession, XdsMetrics, lock};

pub use session::{
    RequestOutcome, ResourceView, Session, SessionError, TypeStatus, VersionedResource,
};
pub use stream::{ResponseStream, ViewSource, serve};
