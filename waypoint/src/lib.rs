//! The waypoint, the mesh's optional L7 proxy (also ingress and egress gateway).
//!
//! Not built yet: this crate reserves its place in the crate graph (see
//! `ARCHITECTURE.md`). It will terminate HBONE, apply the routes and L7
//! policies of `mesh.waypoint.v1` resources and forward over HBONE.
#![forbid(unsafe_code)]
