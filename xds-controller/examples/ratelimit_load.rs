//! Load generator for the rate-limit service (benchmark only, not CI):
//! drives `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! like Envoy does for the seed's token budgets, and prints one JSON line
//! with decisions per second and latency percentiles.
//!
//! Each simulated request makes two calls, as Envoy's ratelimit filter
//! does: at admission (3 token rules check only, or reserve with
//! `--mode reserve`, plus 1 request-count rule) and at stream done (3 token
//! charges, or settlements). The rules must be those of
//! `scripts/bench/ratelimit.yaml` (policy `default/bench`).
//!
//! cargo run --release -p aigw --example ratelimit_load -- \
//!   --addr http://127.0.0.1:PORT --seconds 10 --concurrency 32 --mode charge

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, RateLimitDescriptor,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

struct Args {
    addr: String,
    seconds: u64,
    concurrency: usize,
    connections: usize,
    users: u64,
    reserve: bool,
}

fn args() -> Args {
    let mut a = Args {
        addr: String::new(),
        seconds: 10,
        concurrency: 32,
        connections: 4,
        users: 1000,
        reserve: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--addr" => a.addr = v,
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency N"),
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--users" => a.users = v.parse().expect("--users N"),
            "--mode" => a.reserve = v == "reserve",
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(
        !a.addr.is_empty(),
        "--addr http://127.0.0.1:PORT is required"
    );
    a
}

fn descriptor(
    rule: usize,
    user: &str,
    hits: u64,
    marker: Option<(&str, &str)>,
) -> RateLimitDescriptor {
    let mut entries = vec![
        Entry {
            key: format!("rule-default/bench/{rule}"),
            value: "1".into(),
        },
        Entry {
            key: "x-user-id".into(),
            value: user.into(),
        },
    ];
    if let Some((key, id)) = marker {
        entries.push(Entry {
            key: key.into(),
            value: id.into(),
        });
    }
    RateLimitDescriptor {
        entries,
        hits_addend: Some(UInt64Value { value: hits }),
        ..Default::default()
    }
}

fn calls(user: &str, id: &str, reserve: bool) -> [RateLimitRequest; 2] {
    let request = |descriptors| RateLimitRequest {
        domain: "aigw".into(),
        descriptors,
        hits_addend: 0,
    };
    let mut admit: Vec<RateLimitDescriptor> = (0..3)
        .map(|r| {
            if reserve {
                descriptor(r, user, 300, Some(("aigw-reserve", id)))
            } else {
                descriptor(r, user, 0, None)
            }
        })
        .collect();
    admit.push(descriptor(3, user, 1, None));
    let done = (0..3)
        .map(|r| {
            let marker = reserve.then_some(("aigw-settle", id));
            descriptor(r, user, [120, 80, 200][r], marker)
        })
        .collect();
    [request(admit), request(done)]
}

async fn worker(
    mut client: RateLimitServiceClient<Channel>,
    n: usize,
    users: u64,
    reserve: bool,
    until: Instant,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    let mut i: u64 = 0;
    while Instant::now() < until {
        let user = format!("user{}", (i * 7919 + n as u64) % users);
        let id = format!("{n}-{i}");
        for call in calls(&user, &id, reserve) {
            let start = Instant::now();
            match client.should_rate_limit(call).await {
                Ok(_) => latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32),
                Err(_) => errors += 1,
            }
        }
        i += 1;
    }
    (latencies, errors)
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut channels = Vec::new();
    for _ in 0..a.connections.max(1) {
        let channel = Endpoint::from_shared(a.addr.clone())
            .expect("a URL")
            .connect()
            .await
            .expect("connect to the rate-limit service");
        channels.push(channel);
    }
    // Warm up: connections, Redis script cache.
    let mut warm = RateLimitServiceClient::new(channels[0].clone());
    for call in calls("warmup", "warmup", a.reserve) {
        warm.should_rate_limit(call).await.expect("a first answer");
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(a.seconds);
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|n| {
            let client = RateLimitServiceClient::new(channels[n % channels.len()].clone());
            tokio::spawn(worker(client, n, a.users, a.reserve, until))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("a worker");
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
        }
    };
    println!(
        "{{\"mode\": \"{}\", \"calls\": {}, \"errors\": {}, \"seconds\": {:.2}, \"decisions_per_second\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"concurrency\": {}}}",
        if a.reserve { "reserve" } else { "charge" },
        all.len(),
        errors,
        elapsed,
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
        a.concurrency,
    );
}
