//! `ambientctl local`: the whole mesh on one machine.
//!
//! - [`up`] checks the machine and the config, then starts a detached
//!   [`supervisor`] (`ambientctl local supervise`) and waits until it says
//!   the mesh is ready (or why it is not).
//! - The supervisor owns the mesh: the namespace topology (mesh_netns),
//!   istiod in the fabric namespace, one ztunnel per node namespace, pod
//!   enrolment ([`enroll`]), the pods' containers as processes
//!   ([`process`]), and the generated config copy istiod reads
//!   ([`generate`]), re-synced from the user's directory.
//! - [`down`] removes everything the mesh made, and only that, from the
//!   record in `state.json` ([`record`], [`owned`]) and the namespace
//!   prefix, whether or not the supervisor is still alive.
//! - [`lock`]: one `up` (then its supervisor) per state directory.
//! - [`inspect`]: `status`, `exec`, `logs`.

mod down;
mod enroll;
mod error;
mod generate;
mod http;
mod inspect;
mod layout;
mod lock;
mod manifest;
mod owned;
mod preflight;
mod process;
mod record;
mod supervisor;
mod up;

use std::process::ExitCode;

pub(crate) use error::Error;

use crate::cli::Command;

/// Runs one `ambientctl local` command.
pub(crate) fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Up(args) => up::up(&args),
        Command::Supervise(args) => supervisor::supervise(&args),
        Command::Status { state, json } => inspect::status(&state, json),
        Command::Exec { state, pod, namespace, command } => {
            inspect::exec(&state, &namespace, &pod, &command)
        }
        Command::Logs { state, target, namespace, container } => {
            inspect::logs(&state, &namespace, &target, container.as_deref())
        }
        Command::Down { state } => down::down(&state),
    }
}
