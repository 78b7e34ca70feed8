//! Applying and removing the rule set inside a pod's namespace with
//! `iptables-save` and `iptables-restore --noflush`.

use std::io::Write as _;
use std::process::{Command, Stdio};

use mesh_netns::{Netns, NetnsError};

use crate::rules::{self, RuleSet};

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
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
fn run_in(
    netns: &Netns,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, IptablesError> {
    let command =
        std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    let label = netns.path().display().to_string();
    let spawn_err =
        |source| IptablesError::Spawn { command: command.clone(), netns: label.clone(), source };
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
    let output = output.map_err(spawn_err)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(IptablesError::Failed {
            command,
            netns: label,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `iptables-save` of the namespace.
pub fn save(netns: &Netns) -> Result<String, IptablesError> {
    run_in(netns, "iptables-save", &[], None)
}

/// Installs (or refreshes) the rule set in `netns`. Idempotent.
pub fn apply(netns: &Netns, rules: &RuleSet) -> Result<(), IptablesError> {
    let existing = save(netns)?;
    let input = rules.render_apply(&existing);
    tracing::debug!(netns = %netns.path().display(), rules = %input, "applying capture rules");
    run_in(netns, "iptables-restore", &["--noflush"], Some(&input)).map(drop)
}

/// Removes every jump to our chains and the chains themselves from
/// `netns`; nothing to do is not an error.
pub fn remove(netns: &Netns) -> Result<(), IptablesError> {
    let existing = save(netns)?;
    let input = rules::render_remove(&existing);
    if input.is_empty() {
        return Ok(());
    }
    tracing::debug!(netns = %netns.path().display(), rules = %input, "removing capture rules");
    run_in(netns, "iptables-restore", &["--noflush"], Some(&input)).map(drop)
}
