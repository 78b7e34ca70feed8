//! Running a rule tool inside a pod's namespace.

use std::io::Write as _;
use std::process::{Command, Stdio};

use mesh_netns::{Netns, NetnsError};

/// A rule command that could not run or failed, with its stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("running `{command}` in {netns}: {source}")]
    Spawn {
        command: String,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in {netns} failed ({status}): {stderr}")]
    Failed { command: String, netns: String, status: String, stderr: String },
}

/// Runs `program args` inside `netns`, feeding it `stdin`; returns stdout.
pub(crate) fn run_in(
    netns: &Netns,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let command =
        std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let label = netns.path().display().to_string();
    // A child forked from a thread that entered the namespace starts in it.
    let output = netns.run(|| {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })?;
    let output = output.map_err(|source| CommandError::Spawn {
        command: command.clone(),
        netns: label.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command,
            netns: label,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
