//! Keeps minted credentials in the credential service: one task per
//! credential mints it, refreshes it before it expires, and on failure
//! keeps the current one while it is valid and retries with backoff.

use super::{http, mint, refresh_at, retry_delay, MintSource, Minted};
use crate::credentials::CredentialService;
use crate::error::CredentialError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Task {
    source: MintSource,
    handle: JoinHandle<()>,
    /// Turns true after the first attempt, whatever its outcome.
    attempted: watch::Receiver<bool>,
}

#[derive(Clone)]
pub struct Refresher {
    credentials: CredentialService,
    client: Result<http::Client, CredentialError>,
    /// Seconds a refreshed credential may take to reach the filter.
    margin: u64,
    tasks: Arc<Mutex<BTreeMap<String, Task>>>,
}

impl Refresher {
    /// `filter_cache_seconds`: how long the filter keeps fetched credentials.
    pub fn new(credentials: CredentialService, filter_cache_seconds: u64) -> Self {
        Refresher {
            credentials,
            client: http::Client::new(),
            margin: filter_cache_seconds.saturating_mul(2).max(10),
            tasks: Default::default(),
        }
    }

    /// Makes the running tasks match `sources` (credential id -> source):
    /// an unchanged source keeps its task and credential, a new or changed
    /// one gets a new task (a changed one keeps serving the old credential
    /// until the new one is minted), a removed one is stopped and dropped.
    pub fn sync(&self, sources: &BTreeMap<String, MintSource>) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        tasks.retain(|id, task| {
            let keep = sources.get(id) == Some(&task.source);
            if !keep {
                task.handle.abort();
                if !sources.contains_key(id) {
                    self.credentials.set_minted(id, None);
                }
            }
            keep
        });
        for (id, source) in sources {
            if tasks.contains_key(id) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let handle = tokio::spawn(keep_fresh(
                id.clone(),
                source.clone(),
                self.credentials.clone(),
                self.client.clone(),
                self.margin,
                tx,
            ));
            tasks.insert(
                id.clone(),
                Task {
                    source: source.clone(),
                    handle,
                    attempted: rx,
                },
            );
        }
    }

    /// Waits until every task made its first attempt, at most `timeout`.
    pub async fn first_attempts(&self, timeout: Duration) {
        let receivers: Vec<watch::Receiver<bool>> = match self.tasks.lock() {
            Ok(tasks) => tasks.values().map(|t| t.attempted.clone()).collect(),
            Err(_) => return,
        };
        let all = async {
            for mut rx in receivers {
                let _ = rx.wait_for(|done| *done).await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn keep_fresh(
    id: String,
    source: MintSource,
    credentials: CredentialService,
    client: Result<http::Client, CredentialError>,
    margin: u64,
    attempted: watch::Sender<bool>,
) {
    let mut current: Option<Minted> = None;
    let mut failures = 0u32;
    loop {
        let now = unix_now();
        if current.as_ref().is_some_and(|m| m.expires_at <= now) {
            current = None;
            credentials.set_minted(&id, None);
            eprintln!("aigw: credential {id}: expired and not refreshed; requests that need it fail until a refresh succeeds");
        }
        let result = match &client {
            Ok(client) => mint(&source, client, now).await,
            Err(e) => Err(e.clone()),
        };
        let now = unix_now();
        let wait = match result {
            Ok(minted) => {
                failures = 0;
                let at = refresh_at(now, minted.expires_at, margin);
                eprintln!(
                    "aigw: credential {id}: obtained, valid for {} s; refreshing in {} s",
                    minted.expires_at.saturating_sub(now),
                    at.saturating_sub(now)
                );
                credentials.set_minted(&id, Some(minted.value.clone()));
                current = Some(minted);
                Duration::from_secs(at.saturating_sub(now))
            }
            Err(e) => {
                failures += 1;
                let delay = retry_delay(failures);
                match &current {
                    Some(m) => {
                        let left = m.expires_at.saturating_sub(now);
                        eprintln!(
                            "aigw: credential {id}: refresh failed: {e}; the current one stays in use for {left} s; retrying in {} s",
                            delay.as_secs()
                        );
                        delay.min(Duration::from_secs(left.max(1)))
                    }
                    None => {
                        // A changed source's old credential is not served
                        // on: requests fail clearly rather than with it.
                        credentials.set_minted(&id, None);
                        eprintln!(
                            "aigw: credential {id}: cannot obtain it: {e}; requests that need it fail until it works; retrying in {} s",
                            delay.as_secs()
                        );
                        delay
                    }
                }
            }
        };
        attempted.send_replace(true);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{CredentialSet, CredentialValue};
    use crate::mint::gcp;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A token endpoint that counts calls, answers `fail` with 503 while
    /// set, and hands out `tok-N` valid for `expires_in` seconds.
    async fn token_server(
        expires_in: u64,
        fail: Arc<std::sync::atomic::AtomicBool>,
    ) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let counter = counter.clone();
                let fail = fail.clone();
                async move {
                    assert!(body.contains("assertion="));
                    if fail.load(Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error":"unavailable"}"#.to_string(),
                        );
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        axum::http::StatusCode::OK,
                        format!(r#"{{"access_token":"tok-{n}","expires_in":{expires_in}}}"#),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://127.0.0.1:{port}/token"), calls)
    }

    fn served(service: &CredentialService, id: &str) -> Option<CredentialValue> {
        service.snapshot().credentials.get(id).cloned()
    }

    #[tokio::test]
    async fn mints_keeps_on_reload_refreshes_and_drops() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (uri, calls) = token_server(2, fail.clone()).await;
        let service = CredentialService::new("t".into());
        service.update(CredentialSet::default());
        let refresher = Refresher::new(service.clone(), 0);
        let key = gcp::parse_key_file(&gcp::tests::key_file(&uri)).unwrap();
        let sources: BTreeMap<String, MintSource> =
            [("ns/gcp".to_string(), MintSource::GcpServiceAccount(key))].into();
        refresher.sync(&sources);
        refresher.first_attempts(Duration::from_secs(5)).await;
        assert_eq!(
            served(&service, "ns/gcp"),
            Some(CredentialValue::ApiKey("tok-1".into()))
        );
        // A reload with the same source mints nothing new.
        refresher.sync(&sources);
        refresher.first_attempts(Duration::from_secs(5)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Refreshed at half of its 2 s life.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(calls.load(Ordering::SeqCst) >= 2);
        assert_ne!(
            served(&service, "ns/gcp"),
            Some(CredentialValue::ApiKey("tok-1".into()))
        );
        refresher.sync(&BTreeMap::new());
        assert_eq!(served(&service, "ns/gcp"), None);
    }

    #[tokio::test]
    async fn failure_keeps_the_valid_one_then_drops_it_then_recovers() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (uri, _calls) = token_server(3, fail.clone()).await;
        let service = CredentialService::new("t".into());
        let refresher = Refresher::new(service.clone(), 0);
        let key = gcp::parse_key_file(&gcp::tests::key_file(&uri)).unwrap();
        let sources: BTreeMap<String, MintSource> =
            [("ns/gcp".to_string(), MintSource::GcpServiceAccount(key))].into();
        refresher.sync(&sources);
        refresher.first_attempts(Duration::from_secs(5)).await;
        fail.store(true, Ordering::SeqCst);
        // The refresh (at 1.5 s) fails; the token stays until it expires at 3 s.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(
            served(&service, "ns/gcp"),
            Some(CredentialValue::ApiKey("tok-1".into()))
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            served(&service, "ns/gcp"),
            None,
            "expired tokens are not served"
        );
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert!(
            matches!(served(&service, "ns/gcp"), Some(CredentialValue::ApiKey(t)) if t.starts_with("tok-"))
        );
    }
}
