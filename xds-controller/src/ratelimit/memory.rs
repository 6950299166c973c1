//! In-memory counters, for one controller without Redis. One lock around
//! each request's operations makes them atomic, like the Redis script.

use super::decision::{self, Applied, CounterOp, OpKind};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// key -> (count, expires at, Unix seconds)
    values: HashMap<String, (u64, u64)>,
    /// reservation record -> (record value, expires at)
    records: HashMap<String, (String, u64)>,
    ops_since_sweep: u32,
}

impl Counters {
    fn get(&self, key: &str, now: u64) -> u64 {
        match self.values.get(key) {
            Some((count, expires)) if *expires > now => *count,
            _ => 0,
        }
    }

    fn add(&mut self, key: &str, hits: u64, ttl: u64, now: u64) -> u64 {
        let entry = self.values.entry(key.to_string()).or_insert((0, 0));
        if entry.1 <= now {
            *entry = (0, now + ttl);
        }
        entry.0 = entry.0.saturating_add(hits);
        entry.1 = now + ttl;
        entry.0
    }

    fn settle(&mut self, op: &CounterOp, record: &str, now: u64) -> u64 {
        let recorded = self
            .records
            .remove(record)
            .filter(|(_, expires)| *expires > now);
        let Some((value, _)) = recorded else {
            return if op.hits == 0 {
                self.get(&op.key, now)
            } else {
                self.add(&op.key, op.hits, op.ttl_seconds, now)
            };
        };
        let Some((reserved, key)) = decision::parse_record(&value) else {
            return 0;
        };
        match self.values.get_mut(key) {
            // The window the reservation was made in, while it is kept.
            Some((count, expires)) if *expires > now => {
                *count = decision::settle(*count, op.hits, reserved);
                *count
            }
            _ => 0,
        }
    }
}

impl MemoryStore {
    /// Applies one request's ops (see `decision::Applied`).
    pub fn apply(&self, ops: &[CounterOp], now: u64) -> Applied {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.ops_since_sweep += 1;
        if c.ops_since_sweep >= 1024 {
            c.ops_since_sweep = 0;
            c.values.retain(|_, (_, expires)| *expires > now);
            c.records.retain(|_, (_, expires)| *expires > now);
        }
        let counters: Vec<u64> = ops
            .iter()
            .map(|op| match &op.kind {
                OpKind::Add if op.hits == 0 => c.get(&op.key, now),
                OpKind::Add => c.add(&op.key, op.hits, op.ttl_seconds, now),
                OpKind::Reserve { .. } => c.get(&op.key, now),
                OpKind::Settle { record } => c.settle(op, record, now),
            })
            .collect();
        let admitted = decision::admits(ops, &counters);
        if admitted {
            for op in ops {
                if let OpKind::Reserve { record } = &op.kind {
                    c.add(&op.key, op.hits, op.ttl_seconds, now);
                    // Two live requests under one id (a client's own
                    // x-request-id): their reservations add up.
                    let earlier = c
                        .records
                        .get(record)
                        .filter(|(_, expires)| *expires > now)
                        .and_then(|(v, _)| decision::parse_record(v))
                        .filter(|(_, key)| *key == op.key)
                        .map_or(0, |(hits, _)| hits);
                    let value = decision::record_value(earlier + op.hits, &op.key);
                    c.records
                        .insert(record.clone(), (value, now + op.ttl_seconds));
                }
            }
        }
        Applied { counters, admitted }
    }
}
