//! In-memory counters, for one controller without Redis.

use super::decision::CounterOp;
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
    ops_since_sweep: u32,
}

impl MemoryStore {
    /// Applies the ops in order; returns each counter after its op.
    pub fn apply(&self, ops: &[CounterOp], now: u64) -> Vec<u64> {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.ops_since_sweep += 1;
        if c.ops_since_sweep >= 1024 {
            c.ops_since_sweep = 0;
            c.values.retain(|_, (_, expires)| *expires > now);
        }
        ops.iter()
            .map(|op| {
                if op.hits == 0 {
                    return match c.values.get(&op.key) {
                        Some((count, expires)) if *expires > now => *count,
                        _ => 0,
                    };
                }
                let entry = c.values.entry(op.key.clone()).or_insert((0, 0));
                if entry.1 <= now {
                    *entry = (0, now + op.ttl_seconds);
                }
                entry.0 = entry.0.saturating_add(op.hits);
                entry.1 = now + op.ttl_seconds;
                entry.0
            })
            .collect()
    }
}
