//! A bounded cache of forwarded answers that honours their TTLs.
//!
//! Keyed by what makes two questions the same (lowercased name, type,
//! class, and the DNSSEC-related DO and CD bits). An entry lives for the
//! smallest TTL among the answer and authority records (so a negative
//! answer lives as long as its SOA says), capped at `max_ttl`; a hit comes
//! back with each TTL lowered by the time spent in the cache. Answers
//! without records to take a TTL from, truncated answers and failures are
//! not cached. When full, expired entries go first, then the one closest to
//! expiry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::time::Instant;

/// What makes two questions share an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: String,
    record_type: RecordType,
    class: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    /// The key of `query`'s first question, if it has one.
    pub fn of(query: &Message) -> Option<Self> {
        let q = query.queries.first()?;
        Some(Self {
            name: q.name().to_ascii().to_ascii_lowercase(),
            record_type: q.query_type(),
            class: q.query_class(),
            dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: query.metadata.checking_disabled,
        })
    }
}

#[derive(Debug)]
struct Entry {
    response: Message,
    stored: Instant,
    expires: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct AnswerCache {
    entries: Mutex<HashMap<CacheKey, Entry>>,
    capacity: usize,
    max_ttl: Duration,
}

impl AnswerCache {
    pub fn new(capacity: usize, max_ttl: Duration) -> Self {
        Self { entries: Mutex::default(), capacity, max_ttl }
    }

    /// The cached answer for `key` with TTLs lowered by its age, if fresh.
    pub fn get(&self, key: &CacheKey) -> Option<Message> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(key)?;
        if entry.expires <= now {
            entries.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut response = entry.response.clone();
        for record in response
            .answers
            .iter_mut()
            .chain(response.authorities.iter_mut())
            .chain(response.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(response)
    }

    /// Stores `response` under `key` if it can be cached (see the module
    /// docs). Returns whether it was stored.
    pub fn insert(&self, key: CacheKey, response: &Message) -> bool {
        if self.capacity == 0
            || response.metadata.truncation
            || !matches!(
                response.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            return false;
        }
        let ttl = response.answers.iter().chain(response.authorities.iter()).map(|r| r.ttl).min();
        let Some(ttl) = ttl.filter(|t| *t > 0) else { return false };
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                let soonest = entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(key, Entry { response: response.clone(), stored: now, expires: now + ttl });
        true
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record};

    use super::*;

    fn query(name: &str) -> Message {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m
    }

    fn answer(name: &str, ttl: u32, code: ResponseCode) -> Message {
        let mut m = query(name);
        m.metadata.message_type = MessageType::Response;
        m.metadata.response_code = code;
        let rdata = RData::A(A(Ipv4Addr::new(192, 0, 2, 1)));
        m.add_answer(Record::from_rdata(Name::from_ascii(name).unwrap(), ttl, rdata));
        m
    }

    fn key(name: &str) -> CacheKey {
        CacheKey::of(&query(name)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_live_for_their_ttl_and_age_on_the_way_out() {
        let cache = AnswerCache::new(8, Duration::from_secs(3600));
        assert!(cache.insert(key("a.example."), &answer("a.example.", 10, ResponseCode::NoError)));
        tokio::time::advance(Duration::from_secs(4)).await;
        let hit = cache.get(&key("A.Example.")).expect("fresh, and the key ignores case");
        assert_eq!(hit.answers[0].ttl, 6, "the TTL counts down while cached");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cache.get(&key("a.example.")).is_none(), "expired at its TTL");
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_is_capped_and_zero_ttl_failures_and_truncation_are_not_cached() {
        let cache = AnswerCache::new(8, Duration::from_secs(5));
        assert!(cache.insert(key("a.example."), &answer("a.example.", 600, ResponseCode::NoError)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(cache.get(&key("a.example.")).is_none(), "capped at max_ttl");
        assert!(!cache.insert(key("b.example."), &answer("b.example.", 0, ResponseCode::NoError)));
        let failed = answer("c.example.", 60, ResponseCode::ServFail);
        assert!(!cache.insert(key("c.example."), &failed));
        let mut truncated = answer("d.example.", 60, ResponseCode::NoError);
        truncated.metadata.truncation = true;
        assert!(!cache.insert(key("d.example."), &truncated));
        assert!(cache.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_evicts_the_entry_closest_to_expiry() {
        let cache = AnswerCache::new(2, Duration::from_secs(3600));
        cache.insert(key("short.example."), &answer("short.example.", 10, ResponseCode::NoError));
        cache.insert(key("long.example."), &answer("long.example.", 100, ResponseCode::NoError));
        cache.insert(key("new.example."), &answer("new.example.", 50, ResponseCode::NoError));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("short.example.")).is_none());
        assert!(cache.get(&key("long.example.")).is_some());
        assert!(cache.get(&key("new.example.")).is_some());
    }
}
