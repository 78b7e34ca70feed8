//! The same rule set as native nftables: one table, `inet mesh`, whose
//! base chains sit on the hooks and priorities of the iptables tables they
//! replace (raw -300, mangle -150, nat -100). IPv6 rules unless
//! `ipv6` is off. Applying replaces the table atomically in one `nft -f`
//! transaction; removing deletes it.

use std::fmt::Write as _;

use mesh_netns::Netns;

use crate::exec::{CommandError, run_in};
use crate::rules::{CaptureConfig, IpFamily};

/// Our table's family and name.
pub const TABLE: &str = "inet mesh";

/// The rules of one family, chain by chain, in chain order.
fn family_rules(cfg: &CaptureConfig, family: IpFamily) -> [Vec<String>; 6] {
    let mask = cfg.mark_mask;
    let proxy = format!("meta mark & 0x{mask:x} == 0x{:x}", cfg.proxy_mark);
    let not_proxy = format!("meta mark & 0x{mask:x} != 0x{:x}", cfg.proxy_mark);
    let conn_mark = cfg.conn_mark;
    let keep = !mask;
    // Every rule is qualified by family: by an address match, or else by
    // `meta nfproto`, so that IPv6 is untouched unless asked for.
    let (ip, any, lo, probe) = match family {
        IpFamily::V4 => ("ip", "meta nfproto ipv4", "127.0.0.1", cfg.probe_source.to_string()),
        IpFamily::V6 => ("ip6", "meta nfproto ipv6", "::1", cfg.probe_source_v6.to_string()),
    };
    let prerouting_mangle =
        vec![format!("{any} {proxy} ct mark set ct mark & 0x{keep:08x} | 0x{conn_mark:x}")];
    let output_mangle =
        vec![format!("{any} ct mark & 0x{mask:x} == 0x{conn_mark:x} meta mark set ct mark")];
    let prerouting_nat = vec![
        format!("{ip} saddr {probe} meta l4proto tcp accept"),
        format!(
            "{ip} daddr != {lo} tcp dport != {} {not_proxy} redirect to :{}",
            cfg.inbound_hbone_port, cfg.inbound_plaintext_port
        ),
    ];
    let mut output_nat = vec![format!("{ip} daddr {probe} meta l4proto tcp accept")];
    let (mut output_raw, mut prerouting_raw) = (Vec::new(), Vec::new());
    if cfg.redirect_dns {
        output_nat.push(format!(
            "{any} oifname != \"lo\" udp dport 53 {not_proxy} redirect to :{}",
            cfg.dns_port
        ));
        output_nat.push(format!(
            "{ip} daddr != {lo} tcp dport 53 {not_proxy} redirect to :{}",
            cfg.dns_port
        ));
        output_raw.push(format!("{any} udp dport 53 {proxy} ct zone set 1"));
        prerouting_raw.push(format!("{any} udp sport 53 {not_proxy} ct zone set 1"));
    }
    output_nat.extend([
        format!("{any} meta l4proto tcp meta mark & 0x{mask:x} == 0x{conn_mark:x} accept"),
        format!("{ip} daddr != {lo} oifname \"lo\" accept"),
        format!(
            "{ip} daddr != {lo} meta l4proto tcp {not_proxy} redirect to :{}",
            cfg.outbound_port
        ),
    ]);
    [prerouting_mangle, output_mangle, prerouting_nat, output_nat, output_raw, prerouting_raw]
}

/// Base chains: name, type and hook, priority (the iptables tables').
const CHAINS: [(&str, &str, i32); 6] = [
    ("prerouting_mangle", "filter hook prerouting", -150),
    ("output_mangle", "route hook output", -150),
    ("prerouting_nat", "nat hook prerouting", -100),
    ("output_nat", "nat hook output", -100),
    ("output_raw", "filter hook output", -300),
    ("prerouting_raw", "filter hook prerouting", -300),
];

/// The `nft -f` script that (re)creates the table.
pub fn render_apply(cfg: &CaptureConfig) -> String {
    let per_family: Vec<[Vec<String>; 6]> =
        IpFamily::wanted(cfg).iter().map(|f| family_rules(cfg, *f)).collect();
    let mut chains = Vec::new();
    for (i, (name, hook, priority)) in CHAINS.into_iter().enumerate() {
        let rules: Vec<&String> = per_family.iter().filter_map(|f| f.get(i)).flatten().collect();
        if !rules.is_empty() {
            chains.push((name, hook, priority, rules));
        }
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
		meta nfproto ipv4 meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111
		meta nfproto ipv6 meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111
	}
	chain output_mangle {
		type route hook output priority -150; policy accept;
		meta nfproto ipv4 ct mark & 0xfff == 0x111 meta mark set ct mark
		meta nfproto ipv6 ct mark & 0xfff == 0x111 meta mark set ct mark
	}
	chain prerouting_nat {
		type nat hook prerouting priority -100; policy accept;
		ip saddr 169.254.7.127 meta l4proto tcp accept
		ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
		ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept
		ip6 daddr != ::1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006
	}
	chain output_nat {
		type nat hook output priority -100; policy accept;
		ip daddr 169.254.7.127 meta l4proto tcp accept
		meta nfproto ipv4 oifname != \"lo\" udp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		ip daddr != 127.0.0.1 tcp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		meta nfproto ipv4 meta l4proto tcp meta mark & 0xfff == 0x111 accept
		ip daddr != 127.0.0.1 oifname \"lo\" accept
		ip daddr != 127.0.0.1 meta l4proto tcp meta mark & 0xfff != 0x539 redirect to :15001
		ip6 daddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff meta l4proto tcp accept
		meta nfproto ipv6 oifname != \"lo\" udp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		ip6 daddr != ::1 tcp dport 53 meta mark & 0xfff != 0x539 redirect to :15053
		meta nfproto ipv6 meta l4proto tcp meta mark & 0xfff == 0x111 accept
		ip6 daddr != ::1 oifname \"lo\" accept
		ip6 daddr != ::1 meta l4proto tcp meta mark & 0xfff != 0x539 redirect to :15001
	}
	chain output_raw {
		type filter hook output priority -300; policy accept;
		meta nfproto ipv4 udp dport 53 meta mark & 0xfff == 0x539 ct zone set 1
		meta nfproto ipv6 udp dport 53 meta mark & 0xfff == 0x539 ct zone set 1
	}
	chain prerouting_raw {
		type filter hook prerouting priority -300; policy accept;
		meta nfproto ipv4 udp sport 53 meta mark & 0xfff != 0x539 ct zone set 1
		meta nfproto ipv6 udp sport 53 meta mark & 0xfff != 0x539 ct zone set 1
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
    fn ipv6_off_leaves_ipv6_alone() {
        let text = render_apply(&CaptureConfig { ipv6: false, ..CaptureConfig::default() });
        assert!(!text.contains("ip6"), "{text}");
        assert!(!text.contains("ipv6"), "{text}");
        assert_eq!(text.matches("redirect to :15001").count(), 1, "{text}");
    }

    #[test]
    fn removal_works_whether_or_not_the_table_exists() {
        assert_eq!(render_remove(), "add table inet mesh\ndelete table inet mesh\n");
        assert!(has_trace("table inet mesh {\n}"));
        assert!(!has_trace("table inet other {\n}\ntable ip nat {\n}"));
    }
}
