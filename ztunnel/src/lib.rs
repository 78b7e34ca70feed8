//! ztunnel, the per-node zero-trust tunnel.
//!
//! Not built yet: this crate reserves its place in the crate graph (see
//! `ARCHITECTURE.md`). It will own the capture listeners (15001, 15006, 15008,
//! 15053) inside each enrolled pod's network namespace, the ZDS endpoint for
//! the CNI agent, L4 authorization and load balancing.
#![forbid(unsafe_code)]
