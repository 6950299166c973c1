//! The rate-limit decision, free of I/O: which counter a descriptor uses,
//! how many hits it adds and whether the request is over its limit.
//!
//! Fixed windows per unit, keys laid out like envoyproxy/ratelimit:
//! `<domain>_<key>_<value>_<key>_<value>..._<window start>`.

use crate::resources::RateLimitUnit;
use std::collections::BTreeMap;

/// One rule's limit: `requests` hits per `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u64,
    pub unit: RateLimitUnit,
}

/// What the rate-limit service enforces; produced by the translation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub domain: String,
    /// Rule descriptor key (the first entry of every descriptor) -> limit.
    pub limits: BTreeMap<String, Limit>,
}

/// Start of the fixed window `now` falls in, in Unix seconds.
pub fn window_start(now: u64, unit: RateLimitUnit) -> u64 {
    now - now % unit.seconds()
}

/// The counter's key for one descriptor in one window.
pub fn cache_key(domain: &str, entries: &[(String, String)], window_start: u64) -> String {
    let mut key = String::with_capacity(64);
    key.push_str(domain);
    key.push('_');
    for (k, v) in entries {
        key.push_str(k);
        key.push('_');
        key.push_str(v);
        key.push('_');
    }
    key.push_str(&window_start.to_string());
    key
}

/// Hits one descriptor adds: its own `hits_addend` when Envoy sent one
/// (0 = check only), else the request's (where 0 means unset, so 1).
pub fn hits(descriptor_hits: Option<u64>, request_hits: u32) -> u64 {
    match descriptor_hits {
        Some(h) => h,
        None if request_hits > 0 => u64::from(request_hits),
        None => 1,
    }
}

/// One counter operation for a store: add `hits` (0 = only read) and keep
/// the key for `ttl_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterOp {
    pub key: String,
    pub hits: u64,
    pub ttl_seconds: u64,
}

/// The answer for one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub over_limit: bool,
    pub limit: Limit,
    pub remaining: u64,
    pub reset_seconds: u64,
}

/// Plans the counter operation for a descriptor with a known limit.
pub fn plan(
    domain: &str,
    entries: &[(String, String)],
    limit: Limit,
    hits: u64,
    now: u64,
) -> CounterOp {
    let start = window_start(now, limit.unit);
    CounterOp {
        key: cache_key(domain, entries, start),
        hits,
        ttl_seconds: limit.unit.seconds(),
    }
}

/// Judges a descriptor given the counter the store returned: the value after
/// the increment, or the current value for a check-only (`hits == 0`) op.
pub fn judge(limit: Limit, hits: u64, counter: u64, now: u64) -> Verdict {
    let over_limit = if hits == 0 {
        counter >= limit.requests
    } else {
        counter > limit.requests
    };
    let unit = limit.unit.seconds();
    Verdict {
        over_limit,
        limit,
        remaining: limit.requests.saturating_sub(counter),
        reset_seconds: window_start(now, limit.unit) + unit - now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RateLimitUnit::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_layout_matches_envoyproxy_ratelimit() {
        let e = entries(&[("rule-default/p/0", "1"), ("x-user-id", "alice")]);
        assert_eq!(
            cache_key("aigw", &e, 1_700_000_000),
            "aigw_rule-default/p/0_1_x-user-id_alice_1700000000"
        );
        let op = plan(
            "aigw",
            &e,
            Limit {
                requests: 10,
                unit: Hour,
            },
            3,
            7_205,
        );
        assert_eq!(op.key, "aigw_rule-default/p/0_1_x-user-id_alice_7200");
        assert_eq!((op.hits, op.ttl_seconds), (3, 3600));
    }

    #[test]
    fn windows() {
        assert_eq!(window_start(125, Second), 125);
        assert_eq!(window_start(125, Minute), 120);
        assert_eq!(window_start(7_300, Hour), 7_200);
        assert_eq!(window_start(90_000, Day), 86_400);
    }

    #[test]
    fn hits_addend_semantics() {
        assert_eq!(hits(Some(0), 0), 0, "explicit 0 only checks");
        assert_eq!(hits(Some(123), 5), 123, "the descriptor's own value wins");
        assert_eq!(hits(None, 0), 1, "unset means 1");
        assert_eq!(hits(None, 4), 4);
    }

    #[test]
    fn verdicts() {
        let limit = Limit {
            requests: 10,
            unit: Minute,
        };
        // (hits, counter after op, over, remaining)
        let table = [
            (0, 0, false, 10),
            (0, 9, false, 1),
            (0, 10, true, 0),
            (0, 11, true, 0),
            (1, 1, false, 9),
            (1, 10, false, 0),
            (1, 11, true, 0),
            (11, 11, true, 0),
        ];
        for (hits, counter, over, remaining) in table {
            let v = judge(limit, hits, counter, 130);
            assert_eq!(
                (v.over_limit, v.remaining),
                (over, remaining),
                "hits {hits} counter {counter}"
            );
            assert_eq!(v.reset_seconds, 50);
        }
    }
}
