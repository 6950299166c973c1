//! Counters in Redis: one Lua script per request applies all its ops
//! atomically (INCRBY and EXPIRE; reservations only when the whole request
//! is admitted; settlements against the recorded reservation). The script
//! follows `decision::{op_admits, fits, settle}`; the same table tests run
//! against it and the in-memory store.

use super::decision::{Applied, CounterOp, OpKind};
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::sync::OnceCell;

const TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
}

impl RedisStore {
    pub fn new(url: &str) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("invalid Redis URL {url:?}: {e}"))?;
        Ok(RedisStore {
            client,
            connection: OnceCell::new(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let c = self
            .connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(c.clone())
    }

    /// Applies one request's ops atomically (see `decision::Applied`).
    pub async fn apply(&self, ops: &[CounterOp]) -> Result<Applied, String> {
        if ops.is_empty() {
            return Ok(Applied {
                counters: Vec::new(),
                admitted: true,
            });
        }
        let mut connection = self.connection().await?;
        // EVAL: Redis keeps the compiled script by its digest.
        let mut invocation = redis::cmd("EVAL");
        invocation.arg(SCRIPT).arg(ops.len() * 2);
        for op in ops {
            let record = match &op.kind {
                OpKind::Add => "",
                OpKind::Reserve { record } | OpKind::Settle { record } => record.as_str(),
            };
            invocation.arg(&op.key).arg(record);
        }
        for op in ops {
            let kind = match &op.kind {
                OpKind::Add => "add",
                OpKind::Reserve { .. } => "reserve",
                OpKind::Settle { .. } => "settle",
            };
            invocation
                .arg(kind)
                .arg(op.hits)
                .arg(op.ttl_seconds)
                .arg(op.limit);
        }
        let query = invocation.query_async::<Vec<i64>>(&mut connection);
        let mut values = tokio::time::timeout(TIMEOUT * 2, query)
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        let admitted = values.pop() == Some(1);
        if values.len() != ops.len() {
            return Err(format!(
                "Redis script answered {} values for {} ops",
                values.len(),
                ops.len()
            ));
        }
        Ok(Applied {
            counters: values.into_iter().map(|v| v.max(0) as u64).collect(),
            admitted,
        })
    }
}

/// KEYS: per op its counter and its reservation record (empty for `add`).
/// ARGV: per op kind, hits, ttl, limit. Returns per op the counter (see
/// `Applied::counters`), then 1 when the request is admitted.
const SCRIPT: &str = r#"
local n = #KEYS / 2
local out = {}
local admit = 1
local function get(key) return tonumber(redis.call('GET', key) or '0') end
for i = 1, n do
  local key, record = KEYS[2 * i - 1], KEYS[2 * i]
  local kind = ARGV[4 * i - 3]
  local hits, ttl, limit = tonumber(ARGV[4 * i - 2]), ARGV[4 * i - 1], tonumber(ARGV[4 * i])
  local v
  if kind == 'add' then
    if hits == 0 then
      v = get(key)
      if v >= limit then admit = 0 end
    else
      v = redis.call('INCRBY', key, hits)
      redis.call('EXPIRE', key, ttl)
      if v > limit then admit = 0 end
    end
  elseif kind == 'reserve' then
    v = get(key)
    if not (v < limit and v + hits <= limit) then admit = 0 end
  else
    local rec = redis.call('GET', record)
    if rec then
      redis.call('DEL', record)
      local sp = string.find(rec, ' ', 1, true)
      local reserved, rkey = tonumber(string.sub(rec, 1, sp - 1)), string.sub(rec, sp + 1)
      v = 0
      if redis.call('EXISTS', rkey) == 1 then
        v = redis.call('INCRBY', rkey, hits - reserved)
        if v < 0 then
          redis.call('SET', rkey, 0, 'KEEPTTL')
          v = 0
        end
      end
    elseif hits > 0 then
      v = redis.call('INCRBY', key, hits)
      redis.call('EXPIRE', key, ttl)
    else
      v = get(key)
    end
  end
  out[i] = v
end
if admit == 1 then
  for i = 1, n do
    if ARGV[4 * i - 3] == 'reserve' then
      local key, record = KEYS[2 * i - 1], KEYS[2 * i]
      local hits, ttl = tonumber(ARGV[4 * i - 2]), ARGV[4 * i - 1]
      if hits > 0 then
        redis.call('INCRBY', key, hits)
        redis.call('EXPIRE', key, ttl)
      end
      local rec = redis.call('GET', record)
      if rec then
        local sp = string.find(rec, ' ', 1, true)
        if string.sub(rec, sp + 1) == key then
          hits = hits + tonumber(string.sub(rec, 1, sp - 1))
        end
      end
      redis.call('SET', record, hits .. ' ' .. key, 'EX', ttl)
    end
  end
end
out[n + 1] = admit
return out
"#;
