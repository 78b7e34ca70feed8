//! Observability shared by ztunnel, waypoint and istiod.
//!
//! - [`admin`]: a small HTTP/1.1 server for `/metrics` (OpenMetrics text),
//!   readiness (`/healthz/ready`, `/ready`), `/config_dump` (JSON from a
//!   callback) and `/logging` (read or change the log filter at run time).
//!   Each binary binds it where its ports table says (15000 admin on
//!   localhost, 15020 metrics, 15021 readiness, 15014 for istiod).
//! - [`http_server`]: the accept loop and connection limits those servers
//!   share (header and idle timeouts, bounded heads, accept backoff).
//! - [`logging`]: tracing setup (text or JSON) with a reloadable filter.
//! - [`cli`]: `--help`/`--version` for binaries configured from the environment.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod http_server;
pub mod logging;
