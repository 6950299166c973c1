//! Counters in Redis: INCRBY and EXPIRE in one MULTI/EXEC per request.

use super::decision::CounterOp;
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

    /// Applies the ops atomically; returns each counter after its op.
    pub async fn apply(&self, ops: &[CounterOp]) -> Result<Vec<u64>, String> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for op in ops {
            if op.hits == 0 {
                pipe.cmd("GET").arg(&op.key);
            } else {
                pipe.cmd("INCRBY").arg(&op.key).arg(op.hits);
                pipe.cmd("EXPIRE").arg(&op.key).arg(op.ttl_seconds).ignore();
            }
        }
        let query = pipe.query_async::<Vec<Option<u64>>>(&mut connection);
        let values = tokio::time::timeout(TIMEOUT * 2, query)
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
    }
}
