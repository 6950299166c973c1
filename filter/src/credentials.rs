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

#[derive(Debug, Default)]
pub struct CredentialCache {
    /// Configuration version the controller had when it answered.
    config_version: u64,
    fetched_at: u64,
    loaded: bool,
    entries: BTreeMap<String, Credential>,
}

impl CredentialCache {
    /// Whether the cache can serve a request made under `config_version` at
    /// `now` (unix seconds).
    pub fn is_fresh(&self, now: u64, ttl_seconds: u64, config_version: u64) -> bool {
        self.loaded
            && self.config_version >= config_version
            && now.saturating_sub(self.fetched_at) < ttl_seconds
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
        assert!(!c.is_fresh(100, 30, 0));
        c.load(BODY, 100).unwrap();
        assert_eq!(
            c.get("default/openai"),
            Some(&Credential::ApiKey("sk-test".into()))
        );
        assert!(
            matches!(c.get("default/aws"), Some(Credential::Aws(a)) if a.session_token.as_deref() == Some("TOK"))
        );
        assert!(c.is_fresh(129, 30, 3));
        assert!(!c.is_fresh(130, 30, 3), "expired by age");
        assert!(!c.is_fresh(101, 30, 4), "older than the configuration");
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
