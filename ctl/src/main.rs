//! `ambientctl`: the mesh's command line. Today one command group,
//! `ambientctl local`, which runs the whole mesh on one machine from a
//! directory of Kubernetes YAML (see `ctl/README.md`).
#![forbid(unsafe_code)]

mod cli;
mod local;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    match local::run(cli::parse_or_exit()) {
        Ok(code) => code,
        Err(e) => {
            output::error(format_args!("ambientctl: {e}"));
            ExitCode::FAILURE
        }
    }
}
