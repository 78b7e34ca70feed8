//! The proxy side of delta ADS.

mod runner;
mod state;

pub use runner::{Demander, XdsClient, XdsConfig, XdsError};
pub use state::{Rejection, ResourceHandler, Subscription, TypeState, Update};
