//! Validated domain types of the mesh.
//!
//! Wire types from `mesh-proto` are converted here, at the edge, with
//! `TryFrom`; everything past this point can rely on the invariants the
//! types encode (addresses of the right length, known enum values, non-empty
//! keys, well-formed SPIFFE IDs, ports in range). Bad input is a
//! [`ModelError`] naming the offending field, never a panic. This crate does
//! no I/O.
#![forbid(unsafe_code)]

/// Declares a domain enum mirroring a generated proto enum, with a
/// conversion from the raw wire value that names the field when the value is
/// unknown. The match is exhaustive, so a new upstream variant is a compile
/// error here rather than a silent default.
macro_rules! mirror_enum {
    (
        $(#[$meta:meta])*
        $name:ident from $pb:path, field $field:literal {
            $($(#[$vmeta:meta])* $variant:ident = $pb_variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub(crate) fn from_wire(value: i32) -> Result<Self, $crate::ModelError> {
                match <$pb>::try_from(value) {
                    $(Ok(<$pb>::$pb_variant) => Ok(Self::$variant),)+
                    Err(_) => Err($crate::ModelError::UnknownEnum { field: $field, value }),
                }
            }
        }
    };
}

mod address;
mod authorization;
pub mod enrolment;
mod error;
mod identity;
pub mod ownership;
mod service;
mod workload;

pub use address::{
    GatewayAddress, GatewayDestination, NamespacedHostname, NetworkAddress, NetworkPrefix,
    ip_from_bytes, prefix_from_bytes,
};
pub use authorization::{
    Action, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
};
pub use enrolment::{Enrolment, PodFacts};
pub use error::{ModelError, Resource};
pub use identity::{Identity, IdentityError};
pub use ownership::{Claim, Claimant};
pub use service::{
    HealthPolicy, IpFamilies, LoadBalancing, LoadBalancingMode, LocalityScope, Service, Visibility,
    WeightedWaypoint,
};
pub use workload::{
    AppProtocol, ApplicationTunnel, DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Locality,
    NetworkMode, Port, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use mesh_proto::workload as pb;

/// An `istio.workload.Address` resource: a workload or a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Workload(Box<Workload>),
    Service(Box<Service>),
}

impl TryFrom<pb::Address> for Address {
    type Error = ModelError;

    fn try_from(value: pb::Address) -> Result<Self, Self::Error> {
        match value.r#type {
            Some(pb::address::Type::Workload(w)) => Ok(Self::Workload(Box::new(w.try_into()?))),
            Some(pb::address::Type::Service(s)) => Ok(Self::Service(Box::new(s.try_into()?))),
            None => Err(ModelError::Missing { field: "Address.type" }),
        }
    }
}

/// Rejects an empty string for a required field.
pub(crate) fn required(field: &'static str, value: String) -> Result<String, ModelError> {
    if value.is_empty() { Err(ModelError::Missing { field }) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_without_a_type_is_rejected() {
        let err = Address::try_from(pb::Address { r#type: None }).unwrap_err();
        assert_eq!(err, ModelError::Missing { field: "Address.type" });
    }

    #[test]
    fn address_dispatches_to_workload_and_service() {
        let w = pb::Workload {
            uid: "c/core/Pod/ns/a".into(),
            name: "a".into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        let got = Address::try_from(pb::Address { r#type: Some(pb::address::Type::Workload(w)) })
            .unwrap();
        assert!(matches!(got, Address::Workload(w) if w.uid == "c/core/Pod/ns/a"));

        let s = pb::Service {
            name: "s".into(),
            namespace: "ns".into(),
            hostname: "s.ns.svc.cluster.local".into(),
            ..Default::default()
        };
        let got =
            Address::try_from(pb::Address { r#type: Some(pb::address::Type::Service(s)) }).unwrap();
        assert!(matches!(got, Address::Service(s) if s.name == "s"));
    }
}
