//! The same rule set as native nftables: one table, `inet mesh`, whose
//! base chains sit on the hooks and priorities of the iptables tables they
//! replace (raw -300, mangle -150, nat -100). IPv4 rules only, as for
//! iptables. Applying replaces the table atomically in one `nft -f`
//! transaction; removing deletes it.

use std::fmt::Write as _;

use mesh_netns::Netns;

use crate::exec::{CommandError, run_in};
use crate::rules::CaptureConfig;

/// Our table's family and name.
pub const TABLE: &str = "inet mesh";

/// The `nft -f` script that (re)creates the table.
pub fn render_apply(cfg: &CaptureConfig) -> String {
    let mask = cfg.mark_mask;
    let proxy = format!("meta mark & 0x{mask:x} == 0x{:x}", cfg.proxy_mark);
    let not_proxy = format!("meta mark & 0x{mask:x} != 0x{:x}", cfg.proxy_mark);
    let conn_mark = cfg.conn_mark;
    let keep = !mask;
    let probe = cfg.probe_source;

    let mut chains: Vec<(&str, &str, i32, Vec<String>)> = vec![
        (
            "prerouting_mangle",
            "filter hook prerouting",
            -150,
            vec![format!("{proxy} ct mark set ct mark & 0x{keep:08x} | 0x{conn_mark:x}")],
        ),
        (
            "output_mangle",
            "route hook output",
            -150,
            vec![format!("ct mark & 0x{mask:x} == 0x{conn_mark:x} meta mark set ct mark")],
        ),
        (
            "prerouting_nat",
            "nat hook prerouting",
            -100,
            vec![
                format!("ip saddr {probe} meta l4proto tcp accept"),
                format!(
                    "ip daddr != 127.0.0.1 tcp dport != {} {not_proxy} redirect to :{}",
                    cfg.inbound_hbone_port, cfg.inbound_plaintext_port
                ),
            ],
        ),
    ];
    let mut output_nat = vec![format!("ip daddr {probe} meta l4proto tcp accept")];
    if cfg.redirect_dns {
        output_nat.push(format!(
            "oifname != \"lo\" udp dport 53 {not_proxy} redirect to :{}",
            cfg.dns_port
        ));
        output_nat.push(format!(
            "ip daddr != 127.0.0.1 tcp dport 53 {not_proxy} redirect to :{}",
            cfg.dns_port
        ));
    }
    output_nat.extend([
        format!("meta l4proto tcp meta mark & 0x{mask:x} == 0x{conn_mark:x} accept"),
        "ip daddr != 127.0.0.1 oifname \"lo\" accept".to_owned(),
        format!(
            "ip daddr != 127.0.0.1 meta l4proto tcp {not_proxy} redirect to :{}",
            cfg.outbound_port
        ),
    ]);
    chains.push(("output_nat", "nat hook output", -100, output_nat));
    if cfg.redirect_dns {
        chains.push((
            "output_raw",
            "filter hook output",
            -300,
            vec![format!("udp dport 53 {proxy} ct zone set 1")],
        ));
        chains.push((
            "prerouting_raw",
            "filter hook prerouting",
            -300,
            vec![format!("udp sport 53 {not_proxy} ct zone set 1")],
        ));
    }

    // Adding first makes the delete valid when the table does not exist.
    let mut out = format!("add table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n");
    for (name, hook, priority, rules) in chains {
        let _ = writeln!(out, "\tchain {name} {{");
        let _ = writeln!(out, "\t\ttype {hook} priority {priority}; policy accept;");
        for rule in rules {
            let _ = writeln!(out, "\t\t{rule}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// The `nft -f` script that removes the table (whether or not it exists).
pub fn render_remove() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// `nft list ruleset` of the namespace.
pub fn save(netns: &Netns) -> Result<String, CommandError> {
    run_in(netns, "nft", &["list", "ruleset"], None)
}

/// Installs (or atomically replaces) the table in `netns`.
pub fn apply(netns: &Netns, cfg: &CaptureConfig) -> Result<(), CommandError> {
    let script = render_apply(cfg);
    tracing::debug!(netns = %netns.path().display(), rules = %script, "applying capture rules");
    run_in(netns, "nft", &["-f", "-"], Some(&script)).map(drop)
}

/// Removes the table from `netns`; nothing to do is not an error.
pub fn remove(netns: &Netns) -> Result<(), CommandError> {
    run_in(netns, "nft", &["-f", "-"], Some(&render_remove())).map(drop)
}

/// True when `ruleset` (an `nft list ruleset`) holds our table.
pub fn has_trace(ruleset: &str) -> bool {
    ruleset.contains(&format!("table {TABLE} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_GOLDEN: &str = "\
add table inet mesh
delete table inet mesh
table inet mesh {
	chain prerouting_mangle {
		type filter hook prerouting priority -150; policy accept;
		meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111
	}
	chain output_mangle {
		type route hook output priority -150; policy accept;
		ct mark & 0xfff == 0x111 meta mark set ct mark
	}
	chain prerouting_nat {
		type nat hook prerouting priority -100; policy accept;
		ip saddr 169.254.7.127 meta l4proto tcp accept
		ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
	}
	chain output_nat {
		type nat hook output priority -100; policy accept;
		ip daddr 169.254.7.127 meta l4proto tcp accept
		oifname != \"lo\" udp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		ip daddr != 127.0.0.1 tcp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		meta l4proto tcp meta mark & 0xfff == 0x111 accept
		ip daddr != 127.0.0.1 oifname \"lo\" accept
		ip daddr != 127.0.0.1 meta l4proto tcp meta mark & 0xfff != 0x539 redirect to :15001
	}
	chain output_raw {
		type filter hook output priority -300; policy accept;
		udp dport 53 meta mark & 0xfff == 0x539 ct zone set 1
	}
	chain prerouting_raw {
		type filter hook prerouting priority -300; policy accept;
		udp sport 53 meta mark & 0xfff != 0x539 ct zone set 1
	}
}
";

    #[test]
    fn default_rules_render_as_golden() {
        assert_eq!(render_apply(&CaptureConfig::default()), DEFAULT_GOLDEN);
    }

    #[test]
    fn dns_capture_off_drops_the_dns_and_raw_chains() {
        let text = render_apply(&CaptureConfig { redirect_dns: false, ..CaptureConfig::default() });
        assert!(!text.contains("port 53 "), "{text}");
        assert!(!text.contains("15053"), "{text}");
        assert!(!text.contains("_raw"), "{text}");
        assert!(text.contains("redirect to :15001"), "{text}");
    }

    #[test]
    fn removal_works_whether_or_not_the_table_exists() {
        assert_eq!(render_remove(), "add table inet mesh\ndelete table inet mesh\n");
        assert!(has_trace("table inet mesh {\n}"));
        assert!(!has_trace("table inet other {\n}\ntable ip nat {\n}"));
    }
}
