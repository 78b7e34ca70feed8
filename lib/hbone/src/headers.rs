//! Metadata headers on HBONE CONNECT requests, as upstream ztunnel sets them:
//! `forwarded: for="<src ip>"`, `baggage` with the source workload's
//! Kubernetes coordinates, and a W3C `traceparent`. Parsers are lenient
//! about what they skip and never panic on hostile input.

use std::net::IpAddr;

/// The source workload, as carried in `baggage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    pub cluster: String,
    pub namespace: String,
    /// Kubernetes kind of the workload (`deployment`, `pod`, ...).
    pub workload_kind: String,
    pub workload_name: String,
    pub service: String,
    pub version: String,
}

impl Baggage {
    /// `k8s.cluster.name=...,k8s.namespace.name=...,k8s.<kind>.name=...,service.name=...,service.version=...`
    pub fn encode(&self) -> String {
        let mut parts = Vec::new();
        let mut put = |key: String, value: &str| {
            if !value.is_empty() {
                parts.push(format!("{key}={value}"));
            }
        };
        put("k8s.cluster.name".into(), &self.cluster);
        put("k8s.namespace.name".into(), &self.namespace);
        if !self.workload_kind.is_empty() {
            put(format!("k8s.{}.name", self.workload_kind), &self.workload_name);
        }
        put("service.name".into(), &self.service);
        put("service.version".into(), &self.version);
        parts.join(",")
    }

    /// Parses a baggage header; unknown members and properties are ignored.
    pub fn parse(header: &str) -> Self {
        let mut b = Self::default();
        for member in header.split(',') {
            let member = member.split(';').next().unwrap_or_default();
            let Some((key, value)) = member.split_once('=') else { continue };
            let (key, value) = (key.trim(), value.trim().to_owned());
            match key {
                "k8s.cluster.name" => b.cluster = value,
                "k8s.namespace.name" => b.namespace = value,
                "service.name" => b.service = value,
                "service.version" => b.version = value,
                _ => {
                    let kind = key.strip_prefix("k8s.").and_then(|k| k.strip_suffix(".name"));
                    if let Some(kind) = kind.filter(|k| !k.is_empty() && !k.contains('.')) {
                        b.workload_kind = kind.to_owned();
                        b.workload_name = value;
                    }
                }
            }
        }
        b
    }
}

/// `for="<ip>"` (IPv6 in brackets, as RFC 7239 requires).
pub fn forwarded_for(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    }
}

/// The `for=` address of the first element of a `forwarded` header.
pub fn parse_forwarded_for(header: &str) -> Option<IpAddr> {
    let first = header.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        let value =
            value.strip_prefix('[').and_then(|v| v.split_once(']')).map_or(value, |(ip, _)| ip);
        value.parse().ok()
    })
}

/// A W3C trace context: 16-byte trace id, 8-byte parent id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    pub fn encode(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }

    /// Parses version 00; rejects all-zero ids as the spec requires.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || version != "00"
            || trace.len() != 32
            || parent.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !(hex(trace) && hex(parent) && hex(flags)) {
            return None;
        }
        let tp = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            parent_id: u64::from_str_radix(parent, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.parent_id != 0).then_some(tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baggage_round_trips() {
        let b = Baggage {
            cluster: "Kubernetes".into(),
            namespace: "shop".into(),
            workload_kind: "deployment".into(),
            workload_name: "cart".into(),
            service: "cart".into(),
            version: "v1".into(),
        };
        let encoded = b.encode();
        assert_eq!(
            encoded,
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.deployment.name=cart,service.name=cart,service.version=v1"
        );
        assert_eq!(Baggage::parse(&encoded), b);
        assert_eq!(
            Baggage::parse("garbage,,=,k8s..name=x,service.name=a;prop=1"),
            Baggage { service: "a".into(), ..Default::default() }
        );
    }

    #[test]
    fn forwarded_for_round_trips() {
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_forwarded_for(&forwarded_for(ip)), Some(ip));
        }
        assert_eq!(
            parse_forwarded_for("for=\"10.0.0.1\";host=svc, for=1.2.3.4"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_forwarded_for("host=x"), None);
        assert_eq!(parse_forwarded_for("for=\"[::1\""), None);
        assert_eq!(parse_forwarded_for(""), None);
    }

    #[test]
    fn traceparent_round_trips_and_rejects_junk() {
        let tp = TraceParent {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            parent_id: 0x00f067aa0ba902b7,
            flags: 1,
        };
        assert_eq!(tp.encode(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(TraceParent::parse(&tp.encode()), Some(tp));
        for bad in [
            "",
            "00-0-0-0",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
