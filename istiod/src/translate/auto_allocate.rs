//! Virtual IPs for ServiceEntries without addresses, so that ztunnel's DNS
//! proxy can answer their hosts and its outbound capture can recognise
//! the traffic.
//!
//! Who gets one (as upstream's allocator decides): a ServiceEntry with no
//! `addresses`, a resolution other than `NONE` (traffic to a NONE entry
//! goes where the client asked, so it needs no VIP), not opted out with the
//! label `networking.istio.io/enable-autoallocate-ip: "false"`, and only
//! its non-wildcard hosts.
//!
//! The scheme (ours; upstream keeps allocations in the ServiceEntry's
//! status instead): every `<namespace>/<host>` has a preferred slot, the
//! 64-bit FNV-1a hash of that string modulo 65534, plus one, so slots run
//! 1..=65534 (never the range's first or last address). Slot `n` is
//! `240.240.0.0 + n` and `2001:2:: + n`. Hosts are placed in the order the
//! caller gives (the translation's: oldest ServiceEntry first, then by
//! name, then host order); a host whose slot is taken moves to the next
//! free slot, wrapping from 65534 to 1. The result depends only on the set
//! of hosts and that order, so every replica computes the same addresses,
//! and a restart changes nothing; a new ServiceEntry never moves an older
//! one's address, because older entries are placed first.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::crd::ServiceEntry;

/// The IPv4 range (`240.240.0.0/16`, upstream's).
pub const V4_BASE: Ipv4Addr = Ipv4Addr::new(240, 240, 0, 0);
/// The IPv6 range (`2001:2::/48`, upstream's).
pub const V6_BASE: Ipv6Addr = Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0);
/// The label that opts a ServiceEntry out.
pub const OPT_OUT_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// Usable slots: 1..=SLOTS.
const SLOTS: u32 = 65_534;

/// An allocated address pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// Whether `se`'s hosts get addresses (see the module docs); check each
/// host with [`host_eligible`] too.
pub fn entry_eligible(se: &ServiceEntry) -> bool {
    let opted_out = se
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_OUT_LABEL))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let resolution = se.spec.resolution.as_str();
    se.spec.addresses.is_empty() && !resolution.is_empty() && resolution != "NONE" && !opted_out
}

/// Wildcard hosts get no address.
pub fn host_eligible(host: &str) -> bool {
    !host.is_empty() && !host.starts_with('*')
}

/// The preferred slot of `<namespace>/<host>` (1..=65534).
pub fn preferred_slot(namespace: &str, host: &str) -> u32 {
    // FNV-1a, 64 bit: fixed by its definition, unlike std's hashers.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain(std::iter::once(b'/')).chain(host.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(SLOTS)).unwrap_or(0) + 1
}

/// The addresses of slot `n`.
pub fn slot_addresses(slot: u32) -> Allocated {
    Allocated {
        v4: Ipv4Addr::from(u32::from(V4_BASE) + slot),
        v6: Ipv6Addr::from(u128::from(V6_BASE) + u128::from(slot)),
    }
}

/// Addresses for `(namespace, host)` pairs, placed in the given order (see
/// the module docs). A repeated pair keeps its first address. Beyond 65534
/// hosts the rest get none.
pub fn allocate(hosts: &[(String, String)]) -> HashMap<(String, String), Allocated> {
    let mut taken = HashSet::new();
    let mut out = HashMap::new();
    for key in hosts {
        if out.contains_key(key) || taken.len() >= SLOTS as usize {
            continue;
        }
        let mut slot = preferred_slot(&key.0, &key.1);
        while !taken.insert(slot) {
            slot = if slot == SLOTS { 1 } else { slot + 1 };
        }
        out.insert(key.clone(), slot_addresses(slot));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, host: &str) -> (String, String) {
        (ns.to_owned(), host.to_owned())
    }

    #[test]
    fn addresses_are_stable_and_in_range() {
        // Pinned: a change here would move every allocated VIP in every
        // running mesh on upgrade.
        let slot = preferred_slot("default", "api.example.com");
        assert_eq!(slot, preferred_slot("default", "api.example.com"));
        let a = slot_addresses(slot);
        assert_eq!(a.v4.octets()[..2], [240, 240]);
        assert_eq!(u32::from(a.v4) - u32::from(V4_BASE), slot);
        assert_eq!(a.v6.segments()[..3], [0x2001, 0x2, 0]);
        assert_eq!(u128::from(a.v6) - u128::from(V6_BASE), u128::from(slot));
        assert_eq!(preferred_slot("default", "api.example.com"), PINNED_SLOT);
        let once = allocate(&[key("default", "api.example.com"), key("ns", "b.example.com")]);
        let again = allocate(&[key("default", "api.example.com"), key("ns", "b.example.com")]);
        assert_eq!(once, again, "the same hosts get the same addresses");
        // The namespace is part of the key.
        assert_ne!(preferred_slot("a", "x.example.com"), preferred_slot("b", "x.example.com"));
    }

    /// FNV-1a 64 of `default/api.example.com` mod 65534, plus one, as
    /// computed independently of this code (Python, from the definition).
    const PINNED_SLOT: u32 = 38_631;

    #[test]
    fn every_slot_stays_inside_the_range() {
        for i in 0..5000 {
            let slot = preferred_slot("ns", &format!("host-{i}.example.com"));
            assert!((1..=SLOTS).contains(&slot), "{slot}");
        }
        assert_eq!(slot_addresses(SLOTS).v4, Ipv4Addr::new(240, 240, 255, 254));
        assert_eq!(slot_addresses(1).v4, Ipv4Addr::new(240, 240, 0, 1));
    }

    /// Two hosts with the same preferred slot, found by search.
    fn colliding_pair() -> ((String, String), (String, String)) {
        let mut seen: HashMap<u32, String> = HashMap::new();
        for i in 0.. {
            let host = format!("h{i}.example.com");
            let slot = preferred_slot("ns", &host);
            if let Some(first) = seen.insert(slot, host.clone()) {
                return (key("ns", &first), key("ns", &host));
            }
        }
        unreachable!()
    }

    #[test]
    fn collisions_go_to_the_next_free_slot_and_the_earlier_host_keeps_its_own() {
        let (first, second) = colliding_pair();
        let slot = preferred_slot(&first.0, &first.1);
        let got = allocate(&[first.clone(), second.clone()]);
        assert_eq!(got[&first], slot_addresses(slot));
        let next = if slot == SLOTS { 1 } else { slot + 1 };
        assert_eq!(got[&second], slot_addresses(next));
        // Order decides: placed first, the other one wins instead.
        let swapped = allocate(&[second.clone(), first.clone()]);
        assert_eq!(swapped[&second], slot_addresses(slot));
        // A newcomer placed after both never moves them.
        let more = allocate(&[first.clone(), second.clone(), key("ns", "new.example.com")]);
        assert_eq!(more[&first], got[&first]);
        assert_eq!(more[&second], got[&second]);
    }

    #[test]
    fn a_full_range_uses_every_slot_once() {
        // Every slot used once means probing wrapped wherever it had to.
        let taken: Vec<(String, String)> =
            (0..SLOTS).map(|i| key("fill", &format!("{i}"))).collect();
        let all = allocate(&taken);
        assert_eq!(all.len(), SLOTS as usize, "every slot is used once");
        let distinct: HashSet<Ipv4Addr> = all.values().map(|a| a.v4).collect();
        assert_eq!(distinct.len(), SLOTS as usize);
        let extra = allocate(&[taken, vec![key("fill", "one-too-many")]].concat());
        assert!(!extra.contains_key(&key("fill", "one-too-many")), "the range is full");
    }
}
