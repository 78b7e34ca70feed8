//! Checking an upstream's answer against the question before it is used.
//!
//! Forwarded queries leave from each pod's own network namespace, so a pod
//! that can forge datagrams (raw sockets) can try to answer them itself.
//! An answer is only taken if it is a response to this query: the same id,
//! opcode and question (one question; name compared without case, type and
//! class). Its records are then confined to the question (RFC 2181 §5.4.1
//! data ranking and the usual bailiwick rule, which is also how hickory's
//! resolver, upstream ztunnel's forwarder, rebuilds answers):
//!
//! - answers: records owned by the question's name or a name its CNAME
//!   (or DNAME) chain leads to, of the asked type, CNAME/DNAME, or their
//!   signatures; anything else (an answer for another name) is dropped;
//! - authority: SOA and NS records of a zone that contains a chain name
//!   (the negative-answer SOA, the delegation), and the DNSSEC proofs
//!   (NSEC, NSEC3, RRSIG) under such a zone;
//! - additional: dropped (glue and extra addresses are what a poisoner
//!   would slip in; a client asks for what it needs).
//!
//! The EDNS OPT record is kept (hickory holds it apart from the sections).

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Why an upstream datagram is not the answer to our query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("not a response")]
    NotResponse,
    #[error("another message id")]
    Id,
    #[error("another opcode")]
    OpCode,
    #[error("another question (name, type or class)")]
    Question,
}

/// The answer `message` may give to `query`: `Err` if it is not a
/// response to it (ignore it and keep waiting), else whether records had
/// to be dropped (see the module docs) and the message to use.
pub fn check(message: Message, query: &Message) -> Result<Checked, Mismatch> {
    if message.metadata.message_type != MessageType::Response {
        return Err(Mismatch::NotResponse);
    }
    if message.metadata.id != query.metadata.id {
        return Err(Mismatch::Id);
    }
    if message.metadata.op_code != query.metadata.op_code {
        return Err(Mismatch::OpCode);
    }
    let (Some(asked), [got]) = (query.queries.first(), message.queries.as_slice()) else {
        return Err(Mismatch::Question);
    };
    // Name equality ignores ASCII case (hickory's `Name: PartialEq`).
    if query.queries.len() != 1
        || got.name() != asked.name()
        || got.query_type() != asked.query_type()
        || got.query_class() != asked.query_class()
    {
        return Err(Mismatch::Question);
    }
    Ok(confine(message, asked.name(), asked.query_type(), asked.query_class()))
}

/// An answer that passed [`check`].
#[derive(Debug, Clone)]
pub struct Checked {
    pub message: Message,
    /// Records outside the question were dropped: re-encode it.
    pub trimmed: bool,
}

fn confine(mut message: Message, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Checked {
    let chain = chain(&message.answers, qname, qclass);
    let in_chain = |name: &Name| chain.iter().any(|c| c == name);
    let before = message.answers.len() + message.authorities.len() + message.additionals.len();

    message.answers.retain(|r| {
        let rtype = r.data.record_type();
        if r.dns_class != qclass {
            return false;
        }
        match rtype {
            RecordType::DNAME => chain.iter().any(|c| r.name.zone_of(c)),
            RecordType::CNAME | RecordType::RRSIG => in_chain(&r.name),
            _ => in_chain(&r.name) && (qtype == RecordType::ANY || rtype == qtype),
        }
    });
    let zones: Vec<Name> = message
        .authorities
        .iter()
        .filter(|r| matches!(r.data.record_type(), RecordType::SOA | RecordType::NS))
        .filter(|r| r.dns_class == qclass && chain.iter().any(|c| r.name.zone_of(c)))
        .map(|r| r.name.clone())
        .collect();
    message.authorities.retain(|r| {
        r.dns_class == qclass
            && match r.data.record_type() {
                RecordType::SOA | RecordType::NS => zones.contains(&r.name),
                RecordType::NSEC | RecordType::NSEC3 | RecordType::RRSIG => {
                    zones.iter().any(|z| z.zone_of(&r.name))
                }
                _ => false,
            }
    });
    message.additionals.clear();
    let after = message.answers.len() + message.authorities.len();
    Checked { message, trimmed: after != before }
}

/// The question's name and every name its CNAMEs (and DNAMEs, through
/// their synthesized CNAMEs) lead to, in any order of the records.
fn chain(answers: &[Record], qname: &Name, qclass: DNSClass) -> Vec<Name> {
    let mut chain = vec![qname.clone()];
    // Each pass adds at least one name or stops; a chain is at most as
    // long as the answer section.
    for _ in 0..=answers.len() {
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target)
                if r.dns_class == qclass
                    && chain.contains(&r.name)
                    && !chain.contains(&target.0) =>
            {
                Some(target.0.clone())
            }
            _ => None,
        });
        match next {
            Some(name) => chain.push(name),
            None => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name(qname), qtype));
        m
    }

    fn response_to(q: &Message) -> Message {
        let mut m = q.clone();
        m.metadata.message_type = MessageType::Response;
        m.metadata.response_code = ResponseCode::NoError;
        m
    }

    fn a(owner: &str, last: u8) -> Record {
        Record::from_rdata(name(owner), 60, RData::A(A(Ipv4Addr::new(192, 0, 2, last))))
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
    }

    fn soa(owner: &str) -> Record {
        let soa = SOA::new(name("ns.example."), name("host.example."), 1, 60, 60, 60, 60);
        Record::from_rdata(name(owner), 60, RData::SOA(soa))
    }

    #[test]
    fn another_id_opcode_question_or_a_query_is_not_the_answer() {
        let q = query(7, "www.example.org.", RecordType::A);
        let mut other_id = response_to(&q);
        other_id.metadata.id = 8;
        assert_eq!(check(other_id, &q).unwrap_err(), Mismatch::Id);
        assert_eq!(check(q.clone(), &q).unwrap_err(), Mismatch::NotResponse);
        let mut other_op = response_to(&q);
        other_op.metadata.op_code = OpCode::Status;
        assert_eq!(check(other_op, &q).unwrap_err(), Mismatch::OpCode);
        for wrong in [
            query(7, "www.example.com.", RecordType::A),
            query(7, "www.example.org.", RecordType::AAAA),
        ] {
            assert_eq!(check(response_to(&wrong), &q).unwrap_err(), Mismatch::Question);
        }
        let mut other_class = q.clone();
        other_class.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(check(response_to(&other_class), &q).unwrap_err(), Mismatch::Question);
        let mut two = response_to(&q);
        two.add_query(Query::query(name("evil.example."), RecordType::A));
        assert_eq!(check(two, &q).unwrap_err(), Mismatch::Question);
        let mut none = response_to(&q);
        none.queries.clear();
        assert_eq!(check(none, &q).unwrap_err(), Mismatch::Question);
        // The same question in other letter case is the same question.
        let upper = response_to(&query(7, "WWW.Example.ORG.", RecordType::A));
        assert!(check(upper, &q).is_ok());
    }

    #[test]
    fn answers_outside_the_cname_chain_are_dropped() {
        let q = query(7, "www.example.org.", RecordType::A);
        let mut r = response_to(&q);
        r.add_answer(cname("www.example.org.", "edge.cdn.example."));
        r.add_answer(a("edge.cdn.example.", 1));
        // Slipped in: another name, and the chain's name with another type.
        r.add_answer(a("bank.example.", 66));
        r.add_answer(Record::from_rdata(
            name("www.example.org."),
            60,
            RData::NS(NS(name("evil.example."))),
        ));
        r.add_additional(a("evil.example.", 66));
        let checked = check(r, &q).unwrap();
        assert!(checked.trimmed);
        let owners: Vec<String> =
            checked.message.answers.iter().map(|r| r.name.to_ascii()).collect();
        assert_eq!(owners, ["www.example.org.", "edge.cdn.example."]);
        assert!(checked.message.additionals.is_empty());
    }

    #[test]
    fn authority_keeps_only_the_zones_of_the_question() {
        let q = query(7, "nosuch.example.org.", RecordType::A);
        let mut r = response_to(&q);
        r.metadata.response_code = ResponseCode::NXDomain;
        r.authorities.push(soa("example.org."));
        r.authorities.push(soa("bank.example."));
        r.authorities.push(Record::from_rdata(
            name("bank.example."),
            60,
            RData::NS(NS(name("evil.example."))),
        ));
        let checked = check(r, &q).unwrap();
        assert!(checked.trimmed);
        let owners: Vec<String> =
            checked.message.authorities.iter().map(|r| r.name.to_ascii()).collect();
        assert_eq!(owners, ["example.org."]);
    }

    #[test]
    fn a_clean_answer_is_untouched() {
        let q = query(7, "www.example.org.", RecordType::A);
        let mut r = response_to(&q);
        r.add_answer(a("WWW.example.org.", 1));
        r.authorities.push(soa("example.org."));
        let checked = check(r.clone(), &q).unwrap();
        assert!(!checked.trimmed);
        assert_eq!(checked.message, r);
    }
}
