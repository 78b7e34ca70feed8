//! `ambientctl`: the mesh's command line. Today one command group,
//! `ambientctl local`, which runs the whole mesh on one machine from a
//! directory of Kubernetes YAML (see `ctl/README.md`).
#![forbid(unsafe_code)]

mod cli;
mod local;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            output::error(format_args!("ambientctl: {e}\n\n{}", cli::USAGE));
            return ExitCode::from(2);
        }
    };
    match local::run(command) {
        Ok(code) => code,
        Err(e) => {
            output::error(format_args!("ambientctl: {e}"));
            ExitCode::FAILURE
        }
    }
}
