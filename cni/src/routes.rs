//! The policy routing that lets ztunnel's transparent sockets in a pod get
//! their replies (upstream ztunnel's in-pod mode installs the same):
//!
//! ```text
//! ip rule add fwmark 0x111/0xfff pref 32764 lookup 100
//! ip route add local 0.0.0.0/0 dev lo table 100      (and ::/0 for IPv6)
//! ```
//!
//! ztunnel connects to the application from the pod's namespace bound to
//! the client's address (`IP_TRANSPARENT`). The application's replies go to
//! that foreign address; the capture rules restore connection mark 0x111
//! on them, and this rule routes them to the local stack instead of out of
//! the pod, where the proxy's socket receives them.

use mesh_netns::Netns;

use crate::exec::{CommandError, run_in};
use crate::rules::{CaptureConfig, IpFamily};

/// The routing table holding the local default route.
pub const ROUTE_TABLE: &str = "100";
/// The rule's priority, ahead of `main` (32766).
pub const RULE_PRIORITY: &str = "32764";

fn family_flag(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "-4",
        IpFamily::V6 => "-6",
    }
}

fn default_route(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "0.0.0.0/0",
        IpFamily::V6 => "::/0",
    }
}

/// The `ip rule` selector, e.g. `fwmark 0x111/0xfff lookup 100`.
/// The connection mark the rule matches, `0x111/0xfff` by default.
fn mark_text(cfg: &CaptureConfig) -> String {
    format!("0x{:x}/0x{:x}", cfg.conn_mark, cfg.mark_mask)
}

/// The rule as `ip rule show` prints it (after the priority).
fn rule_text(cfg: &CaptureConfig) -> String {
    format!("fwmark {} lookup {ROUTE_TABLE}", mark_text(cfg))
}

/// `ip rule add` or `ip rule del` of our rule for one family.
fn change_rule(
    netns: &Netns,
    family: IpFamily,
    verb: &str,
    cfg: &CaptureConfig,
) -> Result<(), CommandError> {
    let mark = mark_text(cfg);
    let args = [
        family_flag(family),
        "rule",
        verb,
        "fwmark",
        &mark,
        "pref",
        RULE_PRIORITY,
        "lookup",
        ROUTE_TABLE,
    ];
    run_in(netns, "ip", &args, None).map(drop)
}

fn has_rule(netns: &Netns, family: IpFamily, rule: &str) -> Result<bool, CommandError> {
    let shown =
        run_in(netns, "ip", &[family_flag(family), "rule", "show", "pref", RULE_PRIORITY], None)?;
    Ok(shown.lines().any(|l| l.trim_end().ends_with(rule)))
}

/// Installs the rule and route for each family `cfg` asks for. Idempotent.
pub fn apply(netns: &Netns, cfg: &CaptureConfig) -> Result<(), CommandError> {
    let rule = rule_text(cfg);
    for &family in IpFamily::wanted(cfg) {
        let flag = family_flag(family);
        if !has_rule(netns, family, &rule)? {
            change_rule(netns, family, "add", cfg)?;
        }
        let route = default_route(family);
        let args = [flag, "route", "replace", "local", route, "dev", "lo", "table", ROUTE_TABLE];
        run_in(netns, "ip", &args, None)?;
    }
    Ok(())
}

/// Removes the rule and the route, IPv4 and IPv6; nothing to do is not an
/// error.
pub fn remove(netns: &Netns, cfg: &CaptureConfig) -> Result<(), CommandError> {
    let rule = rule_text(cfg);
    for family in [IpFamily::V4, IpFamily::V6] {
        let flag = family_flag(family);
        if has_rule(netns, family, &rule)? {
            change_rule(netns, family, "del", cfg)?;
        }
        // `show` fails when the table was never created: nothing to remove.
        let shown = run_in(netns, "ip", &[flag, "route", "show", "table", ROUTE_TABLE], None)
            .unwrap_or_default();
        if shown.lines().any(|l| l.starts_with("local default dev lo")) {
            let route = default_route(family);
            let args = [flag, "route", "del", "local", route, "dev", "lo", "table", ROUTE_TABLE];
            run_in(netns, "ip", &args, None)?;
        }
    }
    Ok(())
}

/// Whether the rule is installed (IPv4).
pub fn installed(netns: &Netns, cfg: &CaptureConfig) -> Result<bool, CommandError> {
    has_rule(netns, IpFamily::V4, &rule_text(cfg))
}
