//! Applying and removing the rule set inside a pod's namespace with
//! `ip[6]tables-save` and `ip[6]tables-restore --noflush`.

use mesh_netns::Netns;

use crate::exec::{CommandError, run_in};
use crate::rules::{self, IpFamily, RuleSet};

/// `iptables-save` (IPv4) of the namespace.
pub fn save(netns: &Netns) -> Result<String, CommandError> {
    save_family(netns, IpFamily::V4)
}

/// `iptables-save` or `ip6tables-save` of the namespace.
pub fn save_family(netns: &Netns, family: IpFamily) -> Result<String, CommandError> {
    run_in(netns, family.save_tool(), &[], None)
}

/// Installs (or refreshes) the rule set in `netns` with the tool of its
/// family. Idempotent.
pub fn apply(netns: &Netns, rules: &RuleSet) -> Result<(), CommandError> {
    let existing = save_family(netns, rules.family)?;
    let input = rules.render_apply(&existing);
    tracing::debug!(netns = %netns.path().display(), rules = %input, "applying capture rules");
    run_in(netns, rules.family.restore_tool(), &["--noflush"], Some(&input)).map(drop)
}

/// Removes every jump to our chains and the chains themselves, IPv4 and
/// IPv6, from `netns`; nothing to do is not an error.
pub fn remove(netns: &Netns) -> Result<(), CommandError> {
    for family in [IpFamily::V4, IpFamily::V6] {
        let existing = save_family(netns, family)?;
        let input = rules::render_remove(&existing);
        if input.is_empty() {
            continue;
        }
        tracing::debug!(netns = %netns.path().display(), rules = %input, "removing capture rules");
        run_in(netns, family.restore_tool(), &["--noflush"], Some(&input))?;
    }
    Ok(())
}

/// Whether any chain of ours is in `netns`, IPv4 or IPv6.
pub fn installed(netns: &Netns) -> Result<bool, CommandError> {
    for family in [IpFamily::V4, IpFamily::V6] {
        if rules::has_trace(&save_family(netns, family)?) {
            return Ok(true);
        }
    }
    Ok(false)
}
