//! Upstream credentials fetched from the controller's credential service and
//! kept per VM. Plain data and decisions; the fetch itself is in the ABI layer.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    ApiKey(String),
    Aws(AwsCredential),
}

#[derive(Deserialize, Clone, PartialEq, Eq)]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
}

// Secrets must never reach a log line, so Debug names the kind only.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Credential::Aws(_) => f.write_str("Aws(<redacted>)"),
        }
    }
}

#[derive(Deserialize)]
struct CredentialResponse {
    config_version: u64,
    credentials: BTreeMap<String, Credential>,
}

/// How a request may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than the TTL.
    Fresh,
    /// Older than the TTL: still used, and refreshed in the background (a
    /// request never waits for a refresh, nor for a controller that hangs).
    Stale,
    /// Never loaded, or older than the configuration the request was routed
    /// with (a credential may have changed with it): fetch before use.
    Missing,
}

/// A background refresh without an answer after this long is given up
/// (the call's own timeout is 5 s).
const REFRESH_GIVE_UP_SECONDS: u64 = 10;
/// After a failed refresh, the next one waits this long.
const REFRESH_RETRY_SECONDS: u64 = 5;

#[derive(Debug, Default)]
pub struct CredentialCache {
    /// Configuration version the controller had when it answered.
    config_version: u64,
    fetched_at: u64,
    loaded: bool,
    entries: BTreeMap<String, Credential>,
    /// When the background refresh in flight was sent.
    refreshing_since: Option<u64>,
    /// No background refresh before this time (after a failed one).
    retry_at: u64,
}

impl CredentialCache {
    /// Whether the cache can serve a request made under `config_version` at
    /// `now` (unix seconds).
    pub fn freshness(&self, now: u64, ttl_seconds: u64, config_version: u64) -> Freshness {
        if !self.loaded || self.config_version < config_version {
            Freshness::Missing
        } else if now.saturating_sub(self.fetched_at) < ttl_seconds {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// Whether a background refresh should be sent now: the cache is not
    /// fresh for `config_version` (never loaded, older than the TTL or than
    /// the configuration), no refresh is in flight and the last one did not
    /// just fail. A worker so fetches its credentials before its first
    /// request needs them, and again right after a configuration change.
    pub fn refresh_due(&self, now: u64, ttl_seconds: u64, config_version: u64) -> bool {
        self.freshness(now, ttl_seconds, config_version) != Freshness::Fresh
            && now >= self.retry_at
            && self
                .refreshing_since
                .is_none_or(|since| now.saturating_sub(since) >= REFRESH_GIVE_UP_SECONDS)
    }

    pub fn refresh_sent(&mut self, now: u64) {
        self.refreshing_since = Some(now);
    }

    /// The refresh failed (no answer, or an unusable one): the credentials
    /// fetched before stay in use and the next refresh waits a little.
    pub fn refresh_failed(&mut self, now: u64) {
        self.refreshing_since = None;
        self.retry_at = now.saturating_add(REFRESH_RETRY_SECONDS);
    }

    /// Replaces the cache with the controller's answer.
    pub fn load(&mut self, body: &[u8], now: u64) -> Result<(), String> {
        // serde's message can quote the offending value, which may be a
        // secret: report only where and what kind of error it was.
        let response: CredentialResponse = serde_json::from_slice(body).map_err(|e| {
            format!(
                "credential service answer is not usable ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        self.config_version = response.config_version;
        self.entries = response.credentials;
        self.fetched_at = now;
        self.loaded = true;
        self.refreshing_since = None;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Credential> {
        self.entries.get(id)
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"config_version":3,"credentials":{
        "default/openai":{"api_key":"sk-test"},
        "default/aws":{"aws":{"access_key_id":"AKID","secret_access_key":"SECRET","session_token":"TOK"}}}}"#;

    #[test]
    fn load_and_freshness() {
        let mut c = CredentialCache::default();
        assert_eq!(c.freshness(100, 30, 0), Freshness::Missing);
        c.load(BODY, 100).unwrap();
        assert_eq!(
            c.get("default/openai"),
            Some(&Credential::ApiKey("sk-test".into()))
        );
        assert!(
            matches!(c.get("default/aws"), Some(Credential::Aws(a)) if a.session_token.as_deref() == Some("TOK"))
        );
        assert_eq!(c.freshness(129, 30, 3), Freshness::Fresh);
        assert_eq!(
            c.freshness(130, 30, 3),
            Freshness::Stale,
            "old, still usable"
        );
        assert_eq!(
            c.freshness(101, 30, 4),
            Freshness::Missing,
            "older than the configuration"
        );
    }

    #[test]
    fn a_cache_not_fresh_is_refreshed_once_at_a_time_and_backs_off_after_a_failure() {
        let mut c = CredentialCache::default();
        assert!(
            c.refresh_due(0, 30, 3),
            "never loaded: fetched ahead of requests"
        );
        c.load(BODY, 100).unwrap();
        assert!(!c.refresh_due(129, 30, 3));
        assert!(c.refresh_due(129, 30, 4), "the configuration is newer");
        assert!(c.refresh_due(130, 30, 3));
        c.refresh_sent(130);
        assert!(!c.refresh_due(131, 30, 3), "one refresh in flight");
        assert!(
            c.refresh_due(140, 30, 3),
            "a refresh that never answered is given up"
        );
        c.refresh_sent(140);
        c.refresh_failed(141);
        assert!(!c.refresh_due(145, 30, 3), "waits after a failure");
        assert!(c.refresh_due(146, 30, 3));
        assert_eq!(c.freshness(146, 30, 3), Freshness::Stale);
        c.refresh_sent(146);
        c.load(BODY, 147).unwrap();
        assert_eq!(c.freshness(147, 30, 3), Freshness::Fresh);
        assert!(!c.refresh_due(176, 30, 3) && c.refresh_due(177, 30, 3));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut c = CredentialCache::default();
        c.load(BODY, 0).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-test") && !shown.contains("SECRET") && !shown.contains("TOK"));
    }

    #[test]
    fn load_error_never_quotes_a_secret() {
        let mut c = CredentialCache::default();
        for body in [
            &br#"{"config_version":1,"credentials":{"a":"sk-live-123"}}"#[..],
            br#"{"config_version":1,"credentials":{"a":{"sk-live-123":1}}}"#,
        ] {
            let e = c.load(body, 0).unwrap_err();
            assert!(!e.contains("sk-live"), "{e}");
        }
    }

    #[test]
    fn bad_answer_keeps_nothing_new() {
        let mut c = CredentialCache::default();
        assert!(c.load(b"{", 0).is_err());
        assert!(!c.is_loaded());
    }
}
