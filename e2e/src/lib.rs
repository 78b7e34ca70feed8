//! End-to-end tests live in `tests/`. This library holds their shared
//! fixtures: finding the mesh's binaries in the cargo target directory,
//! running a mesh with `ambientctl local`, YAML for the attack scenarios
//! and a packet sniffer.
#![forbid(unsafe_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test fixtures: a failed step panics with what it was doing, which is the test's report; \
              serde_json's Value indexing yields Null instead of panicking"
)]

pub mod binaries;
pub mod fixtures;
pub mod local_mesh;
pub mod sniff;
