//! istiod's side of delta ADS.

mod session;
mod stream;

pub use session::{
    RequestOutcome, ResourceView, Session, SessionError, TypeStatus, VersionedResource,
};
pub use stream::{ResponseStream, ViewSource, serve};
