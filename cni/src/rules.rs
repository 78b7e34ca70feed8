//! The in-pod redirection rule set, as data.
//!
//! Follows upstream Istio's in-pod rules (`cni/pkg/iptables`, REDIRECT
//! mode) with our own chain names. Everything lives in two chains per
//! table, `MESH_PREROUTING` and `MESH_OUTPUT`, reached by one jump each
//! from the built-in chains, so applying is flush-and-fill and removal is
//! "delete the jumps, flush, delete the chains".

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Our chain on the PREROUTING hook of each table.
pub const CHAIN_PREROUTING: &str = "MESH_PREROUTING";
/// Our chain on the OUTPUT hook of each table.
pub const CHAIN_OUTPUT: &str = "MESH_OUTPUT";
/// Both of our chains.
pub const CHAINS: [&str; 2] = [CHAIN_PREROUTING, CHAIN_OUTPUT];

/// Ports, marks and switches of the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Outbound capture (ztunnel's 15001).
    pub outbound_port: u16,
    /// Inbound plaintext capture (15006).
    pub inbound_plaintext_port: u16,
    /// HBONE (15008): inbound to it is never redirected.
    pub inbound_hbone_port: u16,
    /// DNS proxy (15053).
    pub dns_port: u16,
    /// Send the pod's DNS (UDP and TCP 53) to the DNS proxy.
    pub redirect_dns: bool,
    /// The mark on the proxy's own sockets (1337 = 0x539); packets carrying
    /// it are never redirected.
    pub proxy_mark: u32,
    /// Connection mark set on connections the proxy made (0x111).
    pub conn_mark: u32,
    /// Mask for both marks (0xfff).
    pub mark_mask: u32,
    /// The node SNATs kubelet's health probes to this address; they are let
    /// through unredirected.
    pub probe_source: Ipv4Addr,
    /// The same for IPv6 probes.
    pub probe_source_v6: Ipv6Addr,
    /// Install the IPv6 rules too (ip6tables, or `ip6` rules in nftables).
    pub ipv6: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            inbound_hbone_port: 15008,
            dns_port: 15053,
            redirect_dns: true,
            proxy_mark: 0x539,
            conn_mark: 0x111,
            mark_mask: 0xfff,
            probe_source: Ipv4Addr::new(169, 254, 7, 127),
            probe_source_v6: Ipv6Addr::new(
                0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff,
            ),
            ipv6: true,
        }
    }
}

/// The pod annotation that turns DNS capture off (`"false"`) or on
/// (`"true"`) for one pod, whatever the node's default.
pub const DNS_CAPTURE_ANNOTATION: &str = "ambient.istio.io/dns-capture";

impl CaptureConfig {
    /// This configuration for a pod with `annotations`: the DNS redirect
    /// follows the pod's [`DNS_CAPTURE_ANNOTATION`] when it is `"true"` or
    /// `"false"`, else this configuration's default.
    pub fn for_pod(&self, annotations: &std::collections::BTreeMap<String, String>) -> Self {
        let redirect_dns = match annotations.get(DNS_CAPTURE_ANNOTATION).map(String::as_str) {
            Some("false") => false,
            Some("true") => true,
            _ => self.redirect_dns,
        };
        Self { redirect_dns, ..self.clone() }
    }
}

/// Which address family a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// `iptables-save` or `ip6tables-save`.
    pub fn save_tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables-save",
            Self::V6 => "ip6tables-save",
        }
    }

    /// `iptables-restore` or `ip6tables-restore`.
    pub fn restore_tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }

    /// The loopback address as a rule operand.
    pub fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.1/32",
            Self::V6 => "::1/128",
        }
    }

    /// The families `cfg` asks for.
    pub fn wanted(cfg: &CaptureConfig) -> &'static [Self] {
        if cfg.ipv6 { &[Self::V4, Self::V6] } else { &[Self::V4] }
    }
}

/// One table's part of the rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    pub table: &'static str,
    /// Built-in chains that jump to ours: (`PREROUTING`, `MESH_PREROUTING`).
    pub jumps: Vec<(&'static str, &'static str)>,
    /// Rule specs without the leading `-A`, e.g. `MESH_OUTPUT -p tcp ...`.
    pub rules: Vec<String>,
}

/// One address family's rule set for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub family: IpFamily,
    pub tables: Vec<TableRules>,
}

impl RuleSet {
    /// The IPv4 rule set.
    pub fn new(cfg: &CaptureConfig) -> Self {
        Self::for_family(cfg, IpFamily::V4)
    }

    pub fn for_family(cfg: &CaptureConfig, family: IpFamily) -> Self {
        let proxy = format!("0x{:x}/0x{:x}", cfg.proxy_mark, cfg.mark_mask);
        let conn = format!("0x{:x}/0x{:x}", cfg.conn_mark, cfg.mark_mask);
        let probe = match family {
            IpFamily::V4 => format!("{}/32", cfg.probe_source),
            IpFamily::V6 => format!("{}/128", cfg.probe_source_v6),
        };
        let lo = family.loopback();
        let both = vec![("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)];

        let mangle = TableRules {
            table: "mangle",
            jumps: both.clone(),
            rules: vec![
                // Connections the proxy made get a connmark...
                format!("{CHAIN_PREROUTING} -m mark --mark {proxy} -j CONNMARK --set-xmark {conn}"),
                // ...which is restored on their outgoing packets.
                format!(
                    "{CHAIN_OUTPUT} -m connmark --mark {conn} -j CONNMARK --restore-mark \
                     --nfmask 0xffffffff --ctmask 0xffffffff"
                ),
            ],
        };

        let mut nat_rules = vec![
            // Kubelet probes (SNATed on the node) and their answers pass.
            format!("{CHAIN_PREROUTING} -s {probe} -p tcp -m tcp -j ACCEPT"),
            // Inbound: everything but HBONE and localhost, not from the
            // proxy, goes to the plaintext inbound port.
            format!(
                "{CHAIN_PREROUTING} ! -d {lo} -p tcp -m tcp ! --dport {} \
                 -m mark ! --mark {proxy} -j REDIRECT --to-ports {}",
                cfg.inbound_hbone_port, cfg.inbound_plaintext_port
            ),
            format!("{CHAIN_OUTPUT} -d {probe} -p tcp -m tcp -j ACCEPT"),
        ];
        if cfg.redirect_dns {
            nat_rules.push(format!(
                "{CHAIN_OUTPUT} ! -o lo -p udp -m mark ! --mark {proxy} -m udp --dport 53 \
                 -j REDIRECT --to-ports {}",
                cfg.dns_port
            ));
            nat_rules.push(format!(
                "{CHAIN_OUTPUT} ! -d {lo} -p tcp -m tcp --dport 53 \
                 -m mark ! --mark {proxy} -j REDIRECT --to-ports {}",
                cfg.dns_port
            ));
        }
        nat_rules.extend([
            // Replies on connections the proxy accepted stay put.
            format!("{CHAIN_OUTPUT} -p tcp -m mark --mark {conn} -j ACCEPT"),
            // The pod calling itself by its own address.
            format!("{CHAIN_OUTPUT} ! -d {lo} -o lo -j ACCEPT"),
            // Outbound: all other TCP not from the proxy.
            format!(
                "{CHAIN_OUTPUT} ! -d {lo} -p tcp -m mark ! --mark {proxy} \
                 -j REDIRECT --to-ports {}",
                cfg.outbound_port
            ),
        ]);
        let nat = TableRules { table: "nat", jumps: both.clone(), rules: nat_rules };

        let mut tables = vec![mangle, nat];
        if cfg.redirect_dns {
            // Proxy-to-upstream DNS gets its own conntrack zone, so that its
            // flows never collide with the pod's redirected ones.
            tables.push(TableRules {
                table: "raw",
                jumps: both,
                rules: vec![
                    format!(
                        "{CHAIN_OUTPUT} -p udp -m mark --mark {proxy} -m udp --dport 53 \
                         -j CT --zone 1"
                    ),
                    format!(
                        "{CHAIN_PREROUTING} -p udp -m mark ! --mark {proxy} -m udp --sport 53 \
                         -j CT --zone 1"
                    ),
                ],
            });
        }
        Self { family, tables }
    }

    /// `iptables-restore --noflush` input that (re)creates our chains with
    /// exactly our rules, and adds the jumps `existing` (an `iptables-save`
    /// of the namespace) does not have yet. Applying it twice changes
    /// nothing the second time.
    pub fn render_apply(&self, existing: &str) -> String {
        let saved = SavedState::parse(existing);
        let mut out = String::new();
        for t in &self.tables {
            let _ = writeln!(out, "*{}", t.table);
            // Declaring a chain under --noflush creates it, or flushes it.
            for chain in CHAINS {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
            for (from, to) in &t.jumps {
                let jump = format!("-A {from} -j {to}");
                if !saved.has_rule(t.table, &jump) {
                    let _ = writeln!(out, "{jump}");
                }
            }
            for rule in &t.rules {
                let _ = writeln!(out, "-A {rule}");
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// `iptables-restore --noflush` input that removes every jump to our
/// chains and the chains themselves from the tables of `existing` (an
/// `iptables-save`); empty when there is nothing of ours.
pub fn render_remove(existing: &str) -> String {
    let saved = SavedState::parse(existing);
    let mut out = String::new();
    for table in &saved.tables {
        let ours: Vec<&str> =
            CHAINS.iter().copied().filter(|c| table.chains.iter().any(|t| t == c)).collect();
        let jumps: Vec<&String> = table
            .rules
            .iter()
            .filter(|r| {
                let from_ours = CHAINS.iter().any(|c| r.starts_with(&format!("-A {c} ")));
                let to_ours = CHAINS.iter().any(|c| r.ends_with(&format!("-j {c}")));
                to_ours && !from_ours
            })
            .collect();
        if ours.is_empty() && jumps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{}", table.name);
        for jump in jumps {
            let _ = writeln!(out, "-D{}", jump.trim_start_matches("-A"));
        }
        for chain in &ours {
            let _ = writeln!(out, "-F {chain}");
        }
        for chain in &ours {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// True when `existing` (an `iptables-save`) mentions any chain of ours.
pub fn has_trace(existing: &str) -> bool {
    CHAINS.iter().any(|c| existing.contains(c))
}

/// The tables, chains and rules of an `iptables-save` output.
#[derive(Debug, Default)]
struct SavedState {
    tables: Vec<SavedTable>,
}

#[derive(Debug)]
struct SavedTable {
    name: String,
    chains: Vec<String>,
    rules: Vec<String>,
}

impl SavedState {
    fn parse(save: &str) -> Self {
        let mut state = Self::default();
        for line in save.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                state.tables.push(SavedTable {
                    name: name.to_owned(),
                    chains: Vec::new(),
                    rules: Vec::new(),
                });
            } else if let Some(table) = state.tables.last_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    if let Some(chain) = decl.split_whitespace().next() {
                        table.chains.push(chain.to_owned());
                    }
                } else if line.starts_with("-A ") {
                    table.rules.push(line.to_owned());
                }
            }
        }
        state
    }

    fn has_rule(&self, table: &str, rule: &str) -> bool {
        self.tables.iter().any(|t| t.name == table && t.rules.iter().any(|r| r == rule))
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
