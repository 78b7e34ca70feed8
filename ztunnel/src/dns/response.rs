//! Building the mesh's own responses, and fitting any response to the
//! client's transport.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use super::Transport;
use super::forward::Forwarded;

/// The payload size the proxy advertises in its own EDNS answers.
const EDNS_PAYLOAD: u16 = 1232;

/// A response on its way to the client.
#[derive(Debug)]
pub(super) enum Response {
    /// Made here.
    Built(Message),
    /// From an upstream (or the forward cache), passed through.
    Forwarded(Forwarded),
}

/// A header-only response to `query` with `code` (the question echoed).
pub(super) fn error(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    m.metadata = Metadata::response_from_request(&query.metadata);
    m.metadata.recursion_available = true;
    m.metadata.authoritative = code == ResponseCode::NXDomain;
    m.metadata.response_code = code;
    m.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(edns);
    }
    m
}

/// An authoritative answer to `query` with those of `addresses` that are
/// of `qtype`'s family (none is NOERROR with an empty answer section).
pub(super) fn addresses(
    query: &Message,
    addresses: &[IpAddr],
    qtype: RecordType,
    ttl: u32,
) -> Message {
    let mut m = error(query, ResponseCode::NoError);
    m.metadata.authoritative = true;
    let Some(name) = query.queries.first().map(|q| q.name().clone()) else { return m };
    let records = addresses.iter().filter_map(|ip| {
        let rdata = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => return None,
        };
        Some(Record::from_rdata(name.clone(), ttl, rdata))
    });
    m.add_answers(records);
    m
}

/// The bytes to send: a forwarded answer as the upstream sent it, unless
/// it is too large for the client's UDP payload size; then (and for a too
/// large answer of our own) a truncated copy with TC set, so the client
/// asks again over TCP. `None` if the response cannot be encoded.
pub(super) fn fit(response: Response, query: &Message, transport: Transport) -> Option<Vec<u8>> {
    let limit = match transport {
        Transport::Udp => usize::from(query.max_payload()),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let (bytes, message) = match response {
        Response::Forwarded(f) => (f.bytes, f.message),
        Response::Built(m) => (m.to_vec().ok()?, m),
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    message.truncate().to_vec().ok()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::Name;

    use super::*;

    fn query(qtype: RecordType) -> Message {
        let mut m = Message::new(42, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii("svc.example.").unwrap(), qtype));
        m
    }

    fn ips() -> Vec<IpAddr> {
        vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]
    }

    #[test]
    fn answers_carry_the_family_asked_for_with_the_ttl() {
        let a = addresses(&query(RecordType::A), &ips(), RecordType::A, 30);
        assert_eq!(a.metadata.id, 42);
        assert!(a.metadata.authoritative && a.metadata.recursion_desired);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data, RData::A(A("10.0.0.1".parse().unwrap())));
        assert_eq!(a.answers[0].ttl, 30);
        let aaaa = addresses(&query(RecordType::AAAA), &ips(), RecordType::AAAA, 30);
        assert_eq!(aaaa.answers[0].data, RData::AAAA(AAAA("fd00::1".parse().unwrap())));
        let v4_only = &ips()[..1];
        let none = addresses(&query(RecordType::AAAA), v4_only, RecordType::AAAA, 30);
        assert_eq!(none.metadata.response_code, ResponseCode::NoError);
        assert!(none.answers.is_empty());
    }

    #[test]
    fn too_large_for_udp_is_truncated_but_not_over_tcp() {
        let q = query(RecordType::A);
        let many: Vec<IpAddr> = (0..100u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        let udp = fit(Response::Built(addresses(&q, &many, RecordType::A, 30)), &q, Transport::Udp)
            .unwrap();
        let udp = Message::from_vec(&udp).unwrap();
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        assert_eq!(udp.metadata.id, 42);
        let tcp = fit(Response::Built(addresses(&q, &many, RecordType::A, 30)), &q, Transport::Tcp)
            .unwrap();
        let tcp = Message::from_vec(&tcp).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 100);
    }
}
