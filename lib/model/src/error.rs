//! Conversion errors. Each names the field it came from; errors inside a
//! resource are wrapped with the resource's key so a log line or a NACK says
//! exactly which object was bad.

use crate::identity::IdentityError;

/// Which resource a nested error belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Workload(String),
    Service(String),
    Authorization(String),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Workload(uid) => write!(f, "workload {uid:?}"),
            Self::Service(key) => write!(f, "service {key:?}"),
            Self::Authorization(key) => write!(f, "authorization {key:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field} is required but missing or empty")]
    Missing { field: &'static str },
    #[error("{field}: an IP address is 4 or 16 bytes, got {len}")]
    AddressLength { field: &'static str, len: usize },
    #[error("{field}: prefix length {length} is longer than the address ({max} bits)")]
    PrefixLength { field: &'static str, length: u32, max: u8 },
    #[error("{field}: unknown enum value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{field}: port {value} is outside 1-65535")]
    Port { field: &'static str, value: u32 },
    #[error("{field}: expected \"<namespace>/<hostname>\", got {value:?}")]
    NamespacedHostname { field: &'static str, value: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{field}: {source}")]
    Identity {
        field: &'static str,
        #[source]
        source: IdentityError,
    },
    #[error("{resource}: {source}")]
    In {
        resource: Resource,
        #[source]
        source: Box<ModelError>,
    },
}

impl ModelError {
    /// Attaches the key of the resource being converted.
    pub(crate) fn within(self, resource: Resource) -> Self {
        Self::In { resource, source: Box::new(self) }
    }
}
