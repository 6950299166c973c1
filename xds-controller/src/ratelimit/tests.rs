use super::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};

const NOW: u64 = 7_205;

fn config() -> RateLimitConfig {
    RateLimitConfig {
        domain: "aigw".into(),
        limits: [
            ("rule-a".to_string(), Limit::new(10, RateLimitUnit::Hour)),
            ("rule-b".to_string(), Limit::new(2, RateLimitUnit::Minute)),
        ]
        .into(),
    }
}

fn descriptor(rule: &str, user: &str, hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![
            Entry {
                key: rule.into(),
                value: "1".into(),
            },
            Entry {
                key: "x-user-id".into(),
                value: user.into(),
            },
        ],
        hits_addend: hits.map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
        ..Default::default()
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "aigw".into(),
        descriptors,
        hits_addend: hits,
    }
}

/// (descriptors, request hits_addend, now, overall over?, per descriptor (over, remaining))
type Step = (Vec<RateLimitDescriptor>, u32, u64, bool, Vec<(bool, u32)>);

#[rustfmt::skip]
fn table() -> Vec<Step> {
    vec![
        // Check only: nothing consumed.
        (vec![descriptor("rule-a", "alice", Some(0))], 0, NOW, false, vec![(false, 10)]),
        // The response charges 11 tokens: over after the increment.
        (vec![descriptor("rule-a", "alice", Some(11))], 0, NOW, true, vec![(true, 0)]),
        // The next check sees 11 >= 10; bob is unaffected.
        (vec![descriptor("rule-a", "alice", Some(0)), descriptor("rule-a", "bob", Some(0))],
         0, NOW + 10, true, vec![(true, 0), (false, 10)]),
        // Next hour, a fresh window.
        (vec![descriptor("rule-a", "alice", Some(0))], 0, NOW + 3600, false, vec![(false, 10)]),
        // No descriptor hits: the request's, and 0 there means 1.
        (vec![descriptor("rule-b", "carol", None)], 0, NOW, false, vec![(false, 1)]),
        (vec![descriptor("rule-b", "carol", None)], 0, NOW, false, vec![(false, 0)]),
        (vec![descriptor("rule-b", "carol", None)], 0, NOW, true, vec![(true, 0)]),
        (vec![descriptor("rule-b", "dave", None)], 2, NOW, false, vec![(false, 0)]),
        // Unknown rules are allowed.
        (vec![descriptor("rule-zzz", "alice", Some(100))], 0, NOW, false, vec![(false, 0)]),
    ]
}

/// Runs `steps` in order against a fresh configuration; a step with a
/// counter is followed by a check-only descriptor of rule-a, user `res`,
/// that must see that many remaining.
async fn run_steps(server: &RateLimitServer, steps: Vec<(Step, Option<u32>)>) {
    server.update(config());
    for (n, ((descriptors, hits, now, over, want), counter)) in steps.into_iter().enumerate() {
        let r = server
            .decide(&request(descriptors, hits), now)
            .await
            .unwrap();
        assert_eq!(r.overall_code == Code::OverLimit as i32, over, "step {n}");
        let got: Vec<(bool, u32)> = r
            .statuses
            .iter()
            .map(|s| (s.code == Code::OverLimit as i32, s.limit_remaining))
            .collect();
        assert_eq!(got, want, "step {n}");
        if let Some(left) = counter {
            let check = server
                .decide(&request(vec![descriptor("rule-a", "res", Some(0))], 0), now)
                .await
                .unwrap();
            assert_eq!(check.statuses[0].limit_remaining, left, "step {n}: counter");
        }
    }
}

async fn run_table(server: &RateLimitServer) {
    run_steps(server, table().into_iter().map(|s| (s, None)).collect()).await;
    let first = server
        .decide(
            &request(vec![descriptor("rule-a", "alice", Some(0))], 0),
            NOW,
        )
        .await
        .unwrap();
    let s = &first.statuses[0];
    let limit = s.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit, limit.unit),
        ("rule-a", 10, PbUnit::Hour as i32)
    );
    assert_eq!(s.duration_until_reset.unwrap().seconds, 3595);
    // Another domain is not ours to limit.
    let mut other = request(vec![descriptor("rule-a", "alice", Some(0))], 0);
    other.domain = "elsewhere".into();
    assert_eq!(
        server.decide(&other, NOW).await.unwrap().overall_code,
        Code::Ok as i32
    );
}

fn marked(rule: &str, user: &str, marker: &str, id: &str, hits: u64) -> RateLimitDescriptor {
    let mut d = descriptor(rule, user, Some(hits));
    d.entries.push(Entry {
        key: marker.into(),
        value: id.into(),
    });
    d
}

fn reserve(id: &str, hits: u64) -> RateLimitDescriptor {
    marked("rule-a", "res", decision::RESERVE_KEY, id, hits)
}

fn settle(id: &str, actual: u64) -> RateLimitDescriptor {
    marked("rule-a", "res", decision::SETTLE_KEY, id, actual)
}

/// Reserve-then-settle on rule-a (10 per hour), user `res`: (descriptors,
/// now, overall over?, per descriptor (over, remaining), then the counter as
/// a check-only descriptor sees it: remaining).
type ReserveStep = (Vec<RateLimitDescriptor>, u64, bool, Vec<(bool, u32)>, u32);

#[rustfmt::skip]
fn reserve_table() -> Vec<ReserveStep> {
    vec![
        // 6 fit: taken.
        (vec![reserve("r1", 6)], NOW, false, vec![(false, 4)], 4),
        // 5 more do not fit: refused, nothing taken.
        (vec![reserve("r2", 5)], NOW, true, vec![(true, 4)], 4),
        // The refused request ends with no usage: nothing to release.
        (vec![settle("r2", 0)], NOW, false, vec![(false, 4)], 4),
        // r1 used 3 of its 6.
        (vec![settle("r1", 3)], NOW + 1, false, vec![(false, 7)], 7),
        // A reservation may use up the budget exactly...
        (vec![reserve("r3", 7)], NOW + 2, false, vec![(false, 0)], 0),
        // ...and a request may use more than it reserved: 3 + 9 = 12.
        (vec![settle("r3", 9)], NOW + 3, true, vec![(true, 0)], 0),
        // Used up: even a reservation of 0 is refused.
        (vec![reserve("r4", 0)], NOW + 4, true, vec![(true, 0)], 0),
        // Next hour: fresh. A reservation that fits is not taken when
        // another descriptor refuses the request (rule-b: 2 per minute).
        (vec![reserve("r5", 4), descriptor("rule-b", "res", Some(3))],
         NOW + 3600, true, vec![(false, 10), (true, 0)], 10),
        (vec![reserve("r6", 8)], NOW + 3600, false, vec![(false, 2)], 2),
        // A failed request releases all it reserved (usage 0).
        (vec![settle("r6", 0)], NOW + 3601, false, vec![(false, 10)], 10),
        // No reservation on record (e.g. reservations turned on meanwhile):
        // the usage is charged like a plain descriptor.
        (vec![settle("r7", 2)], NOW + 3602, false, vec![(false, 8)], 8),
        // A reservation made in one window settles there, not in the next:
        // r8 takes 8 at the end of hour 2 (2 + 8); settling 1 in hour 3
        // leaves 3 in hour 2 and hour 3 untouched.
        (vec![reserve("r8", 8)], NOW + 7194, false, vec![(false, 0)], 0),
        (vec![settle("r8", 1)], NOW + 7200, false, vec![(false, 7)], 10),
        // Two live requests under one client-chosen id: both reservations
        // are released by the first settlement, the second charges its own.
        (vec![reserve("dup", 3)], NOW + 7201, false, vec![(false, 7)], 7),
        (vec![reserve("dup", 4)], NOW + 7201, false, vec![(false, 3)], 3),
        (vec![settle("dup", 1)], NOW + 7202, false, vec![(false, 9)], 9),
        (vec![settle("dup", 2)], NOW + 7202, false, vec![(false, 7)], 7),
    ]
}

async fn run_reserve_table(server: &RateLimitServer) {
    let steps = reserve_table()
        .into_iter()
        .map(|(descriptors, now, over, want, left)| ((descriptors, 0, now, over, want), Some(left)))
        .collect();
    run_steps(server, steps).await;
}

#[tokio::test]
async fn source_cidr_and_shadow_rules() {
    let server = RateLimitServer::new(Store::Memory(Default::default()), false);
    let mut config = config();
    let mut ranged = Limit::new(1, RateLimitUnit::Hour);
    ranged.source = decision::SourceCidr::parse("10.0.0.0/8");
    let mut shadow = Limit::new(1, RateLimitUnit::Hour);
    shadow.shadow = true;
    config.limits.insert("rule-cidr".into(), ranged);
    config.limits.insert("rule-shadow".into(), shadow);
    server.update(config);
    let from = |rule: &str, address: &str| RateLimitDescriptor {
        entries: vec![
            Entry {
                key: rule.into(),
                value: "1".into(),
            },
            Entry {
                key: decision::REMOTE_ADDRESS_KEY.into(),
                value: address.into(),
            },
        ],
        ..Default::default()
    };
    let over = |r: RateLimitResponse| r.overall_code == Code::OverLimit as i32;
    // (descriptor, over?) in order: the range allows 1 per hour to clients
    // in it: one counter for all of them with Exact (Envoy masks to /8),
    // one per address with Distinct (/32). Others are not limited.
    let steps = [
        (from("rule-cidr", "10.0.0.0/8"), false),
        (from("rule-cidr", "10.0.0.0/8"), true),
        (from("rule-cidr", "10.1.2.3/32"), false),
        (from("rule-cidr", "10.1.2.3/32"), true),
        (from("rule-cidr", "192.0.0.0/8"), false),
        (from("rule-cidr", "192.0.0.0/8"), false),
        // Shadow: counted (2 > 1) but never refused, and no status shown.
        (from("rule-shadow", "1.1.1.1/32"), false),
        (from("rule-shadow", "1.1.1.1/32"), false),
    ];
    for (n, (descriptor, want)) in steps.into_iter().enumerate() {
        let r = server
            .decide(&request(vec![descriptor], 0), NOW)
            .await
            .unwrap();
        assert_eq!(over(r.clone()), want, "step {n}");
        if n >= 6 {
            assert!(r.statuses[0].current_limit.is_none(), "step {n}");
        }
    }
    // A descriptor without the client address is not the range's.
    let r = server
        .decide(&request(vec![descriptor("rule-cidr", "x", None)], 0), NOW)
        .await
        .unwrap();
    assert!(!over(r));
}

#[tokio::test]
async fn memory_store_follows_the_table() {
    run_table(&RateLimitServer::new(
        Store::Memory(Default::default()),
        false,
    ))
    .await;
}

#[tokio::test]
async fn memory_store_reserves_and_settles() {
    run_reserve_table(&RateLimitServer::new(
        Store::Memory(Default::default()),
        false,
    ))
    .await;
}

struct RedisProcess(std::process::Child, u16);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<RedisProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let process = RedisProcess(child, port);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(process);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn redis_store_follows_the_same_table() {
    let Some(redis) = start_redis() else {
        eprintln!("redis-server is not installed; skipped");
        return;
    };
    let store = redis::RedisStore::new(&format!("redis://127.0.0.1:{}", redis.1)).unwrap();
    let server = RateLimitServer::new(Store::Redis(store), false);
    run_table(&server).await;
    run_reserve_table(&server).await;
    // The counter lives under the documented key with the window's TTL.
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{}", redis.1)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let key = "aigw_rule-a_1_x-user-id_alice_7200";
    let value: u64 = ::redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, 11);
    let ttl: i64 = ::redis::cmd("TTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "{ttl}");
}

#[tokio::test]
async fn unreachable_redis_fails_open_unless_closed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let req = || tonic::Request::new(request(vec![descriptor("rule-a", "alice", Some(1))], 0));
    let open = RateLimitServer::new(Store::Redis(redis::RedisStore::new(&url).unwrap()), false);
    open.update(config());
    let r = open.should_rate_limit(req()).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let closed = RateLimitServer::new(Store::Redis(redis::RedisStore::new(&url).unwrap()), true);
    closed.update(config());
    assert_eq!(
        closed.should_rate_limit(req()).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
}
