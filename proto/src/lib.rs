//! Wire types of the mesh, generated from `proto/schema/*.proto`.
//!
//! Everything that crosses a process boundary is defined here and nowhere
//! else. The Istio packages keep upstream's package names, message names (as
//! far as they appear in type URLs and gRPC paths), field numbers, types and
//! enum values, so our binaries interoperate with upstream ones; the test
//! `tests/wire_compat.rs` guards that field by field. Validation into domain
//! types happens in `mesh-model`, not here.
#![forbid(unsafe_code)]
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    unused_qualifications,
    reason = "generated code"
)]

// The module tree mirrors the protobuf packages, as prost's generated code
// refers across packages by relative paths.

pub mod istio {
    pub mod workload {
        tonic::include_proto!("istio.workload");

        pub mod zds {
            tonic::include_proto!("istio.workload.zds");
        }
    }

    pub mod security {
        tonic::include_proto!("istio.security");
    }

    pub mod v1 {
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

pub mod envoy {
    pub mod service {
        pub mod discovery {
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
    }
}

pub mod mesh {
    pub mod waypoint {
        pub mod v1 {
            tonic::include_proto!("mesh.waypoint.v1");
        }
    }
}

/// `envoy.service.discovery.v3`: the aggregated discovery service.
pub use envoy::service::discovery::v3 as discovery;
/// `istio.security`: L4 authorization policies.
pub use istio::security;
/// `istio.v1.auth`: the certificate signing service.
pub use istio::v1::auth as ca;
/// `istio.workload`: workloads and services; `zds` inside it.
pub use istio::workload;
/// `mesh.waypoint.v1`: our waypoint configuration resources.
pub use mesh::waypoint::v1 as waypoint;

/// xDS type URLs of the resources the mesh exchanges.
pub mod type_url {
    /// Workloads and services, pushed to node proxies and waypoints.
    pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
    /// L4 authorization policies.
    pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
    /// Per-destination L7 configuration of a waypoint.
    pub const WAYPOINT_SERVICE: &str = "type.googleapis.com/mesh.waypoint.v1.WaypointService";
    /// L7 authorization policies enforced at a waypoint.
    pub const L7_AUTHORIZATION: &str = "type.googleapis.com/mesh.waypoint.v1.L7Authorization";
}

/// The encoded `FileDescriptorSet` of every schema file, for reflection and
/// for the wire-compatibility test.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mesh_descriptor.bin"));
