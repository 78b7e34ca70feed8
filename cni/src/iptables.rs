//! Applying and removing the rule set inside a pod's namespace with
//! `iptables-save` and `iptables-restore --noflush`.

use mesh_netns::Netns;

use crate::exec::{CommandError, run_in};
use crate::rules::{self, RuleSet};

/// `iptables-save` of the namespace.
pub fn save(netns: &Netns) -> Result<String, CommandError> {
    run_in(netns, "iptables-save", &[], None)
}

/// Installs (or refreshes) the rule set in `netns`. Idempotent.
pub fn apply(netns: &Netns, rules: &RuleSet) -> Result<(), CommandError> {
    let existing = save(netns)?;
    let input = rules.render_apply(&existing);
    tracing::debug!(netns = %netns.path().display(), rules = %input, "applying capture rules");
    run_in(netns, "iptables-restore", &["--noflush"], Some(&input)).map(drop)
}

/// Removes every jump to our chains and the chains themselves from
/// `netns`; nothing to do is not an error.
pub fn remove(netns: &Netns) -> Result<(), CommandError> {
    let existing = save(netns)?;
    let input = rules::render_remove(&existing);
    if input.is_empty() {
        return Ok(());
    }
    tracing::debug!(netns = %netns.path().display(), rules = %input, "removing capture rules");
    run_in(netns, "iptables-restore", &["--noflush"], Some(&input)).map(drop)
}
