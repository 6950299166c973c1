//! The rate-limit service Envoy's ratelimit filter calls
//! (`envoy.service.ratelimit.v3.RateLimitService`): thin gRPC around the pure
//! decision in `decision.rs`, with counters in Redis or in memory.
//!
//! When the store fails (Redis unreachable), requests are allowed and the
//! error is logged, unless `fail_closed` is set: then the call fails and
//! Envoy (configured with `failure_mode_deny` by the same switch) refuses.

pub mod decision;
pub mod memory;
pub mod redis;

use crate::resources::RateLimitUnit;
use decision::{Applied, CounterOp, Limit, RateLimitConfig, Verdict};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit as PbUnit, Code, DescriptorStatus, RateLimit as PbRateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

impl Store {
    async fn apply(&self, ops: &[CounterOp], now: u64) -> Result<Applied, String> {
        match self {
            Store::Memory(m) => Ok(m.apply(ops, now)),
            Store::Redis(r) => r.apply(ops).await,
        }
    }
}

#[derive(Clone)]
pub struct RateLimitServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<Arc<RateLimitConfig>>,
    store: Store,
    fail_closed: bool,
}

impl RateLimitServer {
    pub fn new(store: Store, fail_closed: bool) -> Self {
        RateLimitServer {
            inner: Arc::new(Inner {
                config: RwLock::new(Arc::new(RateLimitConfig::default())),
                store,
                fail_closed,
            }),
        }
    }

    pub fn update(&self, config: RateLimitConfig) {
        *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    pub fn service(&self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self.clone())
    }

    /// Decides one request at Unix time `now`.
    pub async fn decide(
        &self,
        request: &RateLimitRequest,
        now: u64,
    ) -> Result<RateLimitResponse, String> {
        let config = self
            .inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // (descriptor index, limit) for descriptors with a known rule.
        let mut planned: Vec<(usize, Limit)> = Vec::new();
        let mut ops = Vec::new();
        if request.domain == config.domain {
            for (i, d) in request.descriptors.iter().enumerate() {
                let Some(limit) = d.entries.first().and_then(|e| config.limits.get(&e.key)) else {
                    continue;
                };
                // A sourceCIDR rule applies to the clients in its range only.
                if let Some(range) = limit.source {
                    let client = d
                        .entries
                        .iter()
                        .find(|e| e.key == decision::REMOTE_ADDRESS_KEY);
                    if !client.is_some_and(|e| range.selects(&e.value)) {
                        continue;
                    }
                }
                let entries: Vec<(String, String)> = d
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                let hits = decision::hits(d.hits_addend.map(|h| h.value), request.hits_addend);
                ops.push(decision::plan(&config.domain, &entries, *limit, hits, now));
                planned.push((i, *limit));
            }
        }
        let applied = self.inner.store.apply(&ops, now).await?;
        let mut statuses = vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            };
            request.descriptors.len()
        ];
        let mut over = false;
        for (((i, limit), op), counter) in planned.into_iter().zip(&ops).zip(applied.counters) {
            if limit.shadow {
                // Counted, never refused, and not shown to the client.
                continue;
            }
            let verdict = decision::judge_op(op, limit, counter, applied.admitted, now);
            over |= verdict.over_limit;
            statuses[i] = status(&request.descriptors[i].entries[0].key, &verdict);
        }
        Ok(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        })
    }
}

fn status(name: &str, v: &Verdict) -> DescriptorStatus {
    let unit = match v.limit.unit {
        RateLimitUnit::Second => PbUnit::Second,
        RateLimitUnit::Minute => PbUnit::Minute,
        RateLimitUnit::Hour => PbUnit::Hour,
        RateLimitUnit::Day => PbUnit::Day,
    };
    DescriptorStatus {
        code: if v.over_limit {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        current_limit: Some(PbRateLimit {
            name: name.to_string(),
            requests_per_unit: u32::try_from(v.limit.requests).unwrap_or(u32::MAX),
            unit: unit as i32,
        }),
        limit_remaining: u32::try_from(v.remaining).unwrap_or(u32::MAX),
        duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: i64::try_from(v.reset_seconds).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServer {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let request = request.into_inner();
        match self.decide(&request, now_seconds()).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(e) if self.inner.fail_closed => {
                eprintln!("aigw: rate limit: {e}; refusing (fail closed)");
                Err(tonic::Status::unavailable(e))
            }
            Err(e) => {
                eprintln!("aigw: rate limit: {e}; allowing the request (fail open)");
                Ok(tonic::Response::new(RateLimitResponse {
                    overall_code: Code::Ok as i32,
                    ..Default::default()
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
