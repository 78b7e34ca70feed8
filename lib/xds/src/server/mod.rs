//! istiod's side of delta ADS.

mod connections;
mod session;
mod stream;

pub use connections::{Connections, SharedSession, XdsMetrics, lock};

pub use session::{
    MAX_SUBSCRIBED_NAMES, RequestOutcome, ResourceView, Session, SessionError, TypeStatus,
    VersionedResource,
};
pub use stream::{ResponseStream, ViewSource, serve};
