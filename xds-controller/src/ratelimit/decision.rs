//! The rate-limit decision, free of I/O: which counter a descriptor uses,
//! how many hits it adds and whether the request is over its limit.
//!
//! Fixed windows per unit, keys laid out like envoyproxy/ratelimit:
//! `<domain>_<key>_<value>_<key>_<value>..._<window start>`.
//!
//! Reserve-then-settle (opt-in, `aigw run --rate-limit-reserve`): a
//! descriptor whose last entry is `aigw-reserve=<request id>` reserves its
//! hits at admission, only when they fit in what is left of the limit, and
//! records the reservation under `<domain>-reservation_<request id>_...`; one
//! whose last entry is `aigw-settle=<request id>` carries the real usage when
//! the request ends, and the counter moves by usage - reservation (negative
//! when the request used less). The marker entry is not part of the counter
//! key, so both reach the same counter as a plain descriptor of the rule.

use crate::resources::RateLimitUnit;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One rule's limit: `requests` hits per `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u64,
    pub unit: RateLimitUnit,
    /// Shadow mode: counted, never refused.
    pub shadow: bool,
    /// A `sourceCIDR` selector: the rule applies only to clients in it.
    pub source: Option<SourceCidr>,
}

impl Limit {
    pub fn new(requests: u64, unit: RateLimitUnit) -> Self {
        Limit {
            requests,
            unit,
            shadow: false,
            source: None,
        }
    }
}

/// The descriptor entry Envoy's `masked_remote_address` action produces:
/// the client address masked to a prefix, `<ip>/<prefix length>`.
pub const REMOTE_ADDRESS_KEY: &str = "masked_remote_address";

/// An address range, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl SourceCidr {
    /// Parses `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
    pub fn parse(text: &str) -> Option<SourceCidr> {
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
            None => {
                let ip = text.trim().parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        Some(SourceCidr {
            network: mask(ip, prefix),
            prefix,
        })
    }

    /// The longest prefix: 32 for IPv4, 128 for IPv6.
    pub fn host_bits(&self) -> u8 {
        if self.network.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }

    /// Whether the client a descriptor's masked address (`ip/len`) names
    /// is in this range.
    pub fn selects(&self, masked: &str) -> bool {
        let ip = masked.split('/').next().unwrap_or(masked);
        ip.parse().is_ok_and(|ip| self.contains(ip))
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
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

/// The descriptor entry that marks a reservation; its value is the request id.
pub const RESERVE_KEY: &str = "aigw-reserve";
/// The descriptor entry that marks a settlement; its value is the request id.
pub const SETTLE_KEY: &str = "aigw-settle";

/// What an operation does to its counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Add `hits` (0 = only read), as envoyproxy/ratelimit does.
    Add,
    /// Add `hits` only when the request is admitted (`admits`), and record
    /// the reservation under `record`.
    Reserve { record: String },
    /// Move the counter by `hits` - the reservation recorded under `record`
    /// (in the window it was made in), and forget the record. Without a
    /// record (refused, expired, or made before reservations were on) it
    /// adds `hits` like `Add`.
    Settle { record: String },
}

/// One counter operation for a store: on `key`, kept for `ttl_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterOp {
    pub key: String,
    pub hits: u64,
    pub ttl_seconds: u64,
    /// The rule's limit (reservations must fit in it).
    pub limit: u64,
    pub kind: OpKind,
}

/// What a store did with one request's operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Per op: the counter after an `Add` or `Settle`; for a `Reserve`, the
    /// counter before it (whether or not it was taken).
    pub counters: Vec<u64>,
    /// Whether the reservations were taken (`admits`).
    pub admitted: bool,
}

/// Splits a reservation or settlement marker off a descriptor's entries.
pub fn split_marker(entries: &[(String, String)]) -> (&[(String, String)], Option<Marker<'_>>) {
    match entries.split_last() {
        Some(((k, id), rest)) if k == RESERVE_KEY => (rest, Some(Marker::Reserve(id))),
        Some(((k, id), rest)) if k == SETTLE_KEY => (rest, Some(Marker::Settle(id))),
        _ => (entries, None),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    Reserve(&'a str),
    Settle(&'a str),
}

/// Where a request's reservation on one counter is recorded: independent of
/// the window, so a settlement finds it after the window turned.
pub fn record_key(domain: &str, request_id: &str, entries: &[(String, String)]) -> String {
    let counter = cache_key(domain, entries, 0);
    let rule = counter
        .strip_prefix(domain)
        .and_then(|k| k.strip_suffix("_0"))
        .unwrap_or(&counter);
    format!("{domain}-reservation_{request_id}{rule}")
}

/// The value of a reservation record: the hits reserved and the counter key.
pub fn record_value(hits: u64, key: &str) -> String {
    format!("{hits} {key}")
}

pub fn parse_record(value: &str) -> Option<(u64, &str)> {
    let (hits, key) = value.split_once(' ')?;
    Some((hits.parse().ok()?, key))
}

/// Whether a reservation of `hits` fits on a counter at `current`: the
/// budget is not used up and the reservation does not cross it.
pub fn fits(current: u64, hits: u64, limit: u64) -> bool {
    current < limit && current.saturating_add(hits) <= limit
}

/// Whether one op, given its first-pass counter (see `Applied::counters`),
/// lets the request in.
pub fn op_admits(op: &CounterOp, counter: u64) -> bool {
    match op.kind {
        OpKind::Add if op.hits == 0 => counter < op.limit,
        OpKind::Add => counter <= op.limit,
        OpKind::Reserve { .. } => fits(counter, op.hits, op.limit),
        OpKind::Settle { .. } => true,
    }
}

/// A request's reservations are taken only when every op lets it in: a
/// refused request holds nothing.
pub fn admits(ops: &[CounterOp], counters: &[u64]) -> bool {
    ops.iter().zip(counters).all(|(op, c)| op_admits(op, *c))
}

/// A counter after settling: `counter` + `actual` - `reserved`, never below 0.
pub fn settle(counter: u64, actual: u64, reserved: u64) -> u64 {
    counter.saturating_add(actual).saturating_sub(reserved)
}

/// The answer for one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub over_limit: bool,
    pub limit: Limit,
    pub remaining: u64,
    pub reset_seconds: u64,
}

/// Plans the counter operation for a descriptor with a known limit. A
/// reservation or settlement marker (last entry) is not part of the key.
pub fn plan(
    domain: &str,
    entries: &[(String, String)],
    limit: Limit,
    hits: u64,
    now: u64,
) -> CounterOp {
    let start = window_start(now, limit.unit);
    let (entries, marker) = split_marker(entries);
    let kind = match marker {
        None => OpKind::Add,
        Some(Marker::Reserve(id)) => OpKind::Reserve {
            record: record_key(domain, id, entries),
        },
        Some(Marker::Settle(id)) => OpKind::Settle {
            record: record_key(domain, id, entries),
        },
    };
    CounterOp {
        key: cache_key(domain, entries, start),
        hits,
        ttl_seconds: limit.unit.seconds(),
        // A shadow rule counts, and never refuses (nor keeps a reservation out).
        limit: if limit.shadow {
            u64::MAX
        } else {
            limit.requests
        },
        kind,
    }
}

/// Judges one op after the store applied the request (`Applied`).
pub fn judge_op(op: &CounterOp, limit: Limit, counter: u64, admitted: bool, now: u64) -> Verdict {
    match op.kind {
        OpKind::Reserve { .. } if admitted => judge(limit, 1, counter + op.hits, now),
        OpKind::Reserve { .. } => Verdict {
            over_limit: !fits(counter, op.hits, limit.requests),
            ..judge(limit, 0, counter, now)
        },
        _ => judge(limit, op.hits, counter, now),
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
        let op = plan("aigw", &e, Limit::new(10, Hour), 3, 7_205);
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
        let limit = Limit::new(10, Minute);
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

    #[test]
    fn markers_stay_out_of_the_counter_key() {
        let limit = Limit::new(100, Hour);
        let base = entries(&[("rule-default/p/0", "1"), ("x-user-id", "alice")]);
        let mut reserve = base.clone();
        reserve.push((RESERVE_KEY.into(), "req-1".into()));
        let mut settle = base.clone();
        settle.push((SETTLE_KEY.into(), "req-1".into()));
        let plain = plan("aigw", &base, limit, 5, 7_205);
        let r = plan("aigw", &reserve, limit, 40, 7_205);
        let s = plan("aigw", &settle, limit, 33, 7_300);
        assert_eq!(plain.kind, OpKind::Add);
        assert_eq!(
            (r.key.as_str(), s.key.as_str()),
            (plain.key.as_str(), plain.key.as_str())
        );
        let record = "aigw-reservation_req-1_rule-default/p/0_1_x-user-id_alice".to_string();
        assert_eq!(
            r.kind,
            OpKind::Reserve {
                record: record.clone()
            }
        );
        assert_eq!(s.kind, OpKind::Settle { record });
        assert_eq!(r.limit, 100);
        // A marker anywhere but last is an ordinary entry.
        let mut odd = reserve.clone();
        odd.push(("x".into(), "y".into()));
        assert_eq!(plan("aigw", &odd, limit, 1, 0).kind, OpKind::Add);
        assert_eq!(
            parse_record(&record_value(40, &plain.key)),
            Some((40, plain.key.as_str()))
        );
        assert_eq!(parse_record("x y"), None);
    }

    #[test]
    fn reservations_fit_or_refuse() {
        // (current, reservation, limit, fits)
        let table = [
            (0, 0, 10, true),
            (0, 10, 10, true),
            (0, 11, 10, false),
            (4, 6, 10, true),
            (4, 7, 10, false),
            (9, 0, 10, true),
            (10, 0, 10, false),
            (12, 0, 10, false),
            (u64::MAX - 3, 5, u64::MAX - 2, false),
        ];
        for (current, hits, limit, want) in table {
            assert_eq!(
                fits(current, hits, limit),
                want,
                "{current} + {hits} <= {limit}"
            );
        }
    }

    #[test]
    fn a_request_is_admitted_only_when_every_op_lets_it_in() {
        let op = |kind: OpKind, hits: u64| CounterOp {
            key: "k".into(),
            hits,
            ttl_seconds: 60,
            limit: 10,
            kind,
        };
        let reserve = |hits| op(OpKind::Reserve { record: "r".into() }, hits);
        let settle = op(OpKind::Settle { record: "r".into() }, 50);
        // (ops, first-pass counters, admitted)
        let table = [
            (vec![reserve(5)], vec![5], true),
            (vec![reserve(5)], vec![6], false),
            (vec![reserve(5), op(OpKind::Add, 1)], vec![0, 11], false),
            (vec![reserve(5), op(OpKind::Add, 1)], vec![0, 10], true),
            (vec![reserve(5), op(OpKind::Add, 0)], vec![0, 10], false),
            (vec![reserve(5), op(OpKind::Add, 0)], vec![0, 9], true),
            (vec![settle.clone()], vec![500], true),
            (vec![], vec![], true),
        ];
        for (n, (ops, counters, want)) in table.into_iter().enumerate() {
            assert_eq!(admits(&ops, &counters), want, "case {n}");
        }
        let limit = Limit::new(10, Minute);
        let v = judge_op(&reserve(4), limit, 5, true, 130);
        assert_eq!((v.over_limit, v.remaining), (false, 1));
        let v = judge_op(&reserve(6), limit, 5, false, 130);
        assert_eq!((v.over_limit, v.remaining), (true, 5));
        // Fits, but another op refused the request: not over, not taken.
        let v = judge_op(&reserve(4), limit, 5, false, 130);
        assert_eq!((v.over_limit, v.remaining), (false, 5));
    }

    #[test]
    fn settling_moves_by_usage_minus_reservation() {
        // (counter with the reservation, actual, reserved, after)
        let table = [
            (100, 30, 100, 30),
            (100, 100, 100, 100),
            (100, 130, 100, 130),
            (150, 0, 100, 50),
            (20, 0, 100, 0),
        ];
        for (counter, actual, reserved, want) in table {
            assert_eq!(settle(counter, actual, reserved), want);
        }
    }

    #[test]
    fn source_cidrs() {
        let c = SourceCidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(c.network.to_string(), "10.0.0.0");
        assert_eq!((c.prefix, c.host_bits()), (8, 32));
        // (range, masked client address as Envoy sends it, selected)
        let table = [
            ("10.0.0.0/8", "10.0.0.0/8", true),
            ("10.0.0.0/8", "10.200.3.4/32", true),
            ("10.0.0.0/8", "11.0.0.1/32", false),
            ("10.0.0.0/8", "192.0.0.0/8", false),
            ("127.0.0.1", "127.0.0.1/32", true),
            ("127.0.0.1", "127.0.0.2/32", false),
            ("0.0.0.0/0", "8.8.8.8/32", true),
            ("0.0.0.0/0", "::1/128", false),
            ("2001:db8::/32", "2001:db8:1::5/128", true),
            ("2001:db8::/32", "2001:db9::/128", false),
            ("::/0", "::1/128", true),
            ("10.0.0.0/8", "garbage", false),
        ];
        for (range, masked, want) in table {
            let c = SourceCidr::parse(range).unwrap();
            assert_eq!(c.selects(masked), want, "{range} selects {masked}");
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "",
        ] {
            assert_eq!(SourceCidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn shadow_rules_count_but_never_refuse() {
        let mut limit = Limit::new(2, Minute);
        limit.shadow = true;
        let e = entries(&[("rule", "1")]);
        let add = plan("aigw", &e, limit, 5, 0);
        assert_eq!(add.hits, 5, "still counted");
        assert!(op_admits(&add, 500));
        let mut reserve = e.clone();
        reserve.push((RESERVE_KEY.into(), "id".into()));
        let r = plan("aigw", &reserve, limit, 50, 0);
        assert!(admits(std::slice::from_ref(&r), &[100]));
    }
}
