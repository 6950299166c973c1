//! Upstream credentials: the values the filter fetches from the controller
//! (never placed in Envoy's configuration), and the HTTP endpoint serving them.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialValue {
    ApiKey(String),
    Aws {
        access_key_id: String,
        secret_access_key: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
    },
}

impl std::fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialValue::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            CredentialValue::Aws { .. } => f.write_str("Aws(<redacted>)"),
        }
    }
}

/// What the credential endpoint answers, as the filter reads it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CredentialSet {
    pub config_version: u64,
    pub credentials: BTreeMap<String, CredentialValue>,
}

#[derive(Clone)]
pub struct CredentialService {
    token: Arc<String>,
    /// From the configuration (Secrets, the environment).
    current: Arc<RwLock<CredentialSet>>,
    /// Minted at run time and refreshed (`crate::mint`); these win.
    minted: Arc<RwLock<BTreeMap<String, CredentialValue>>>,
}

impl CredentialService {
    pub fn new(token: String) -> Self {
        CredentialService {
            token: Arc::new(token),
            current: Arc::new(RwLock::new(CredentialSet::default())),
            minted: Arc::new(RwLock::new(BTreeMap::new())),
        }
    }

    /// Sets (or with `None` removes) a minted credential.
    pub fn set_minted(&self, id: &str, value: Option<CredentialValue>) {
        if let Ok(mut minted) = self.minted.write() {
            match value {
                Some(v) => minted.insert(id.to_string(), v),
                None => minted.remove(id),
            };
        }
    }

    /// What the endpoint serves now: the configuration's credentials and
    /// the minted ones.
    pub fn snapshot(&self) -> CredentialSet {
        let mut set = self.current.read().map(|s| s.clone()).unwrap_or_default();
        if let Ok(minted) = self.minted.read() {
            for (id, value) in minted.iter() {
                set.credentials.insert(id.clone(), value.clone());
            }
        }
        set
    }

    pub fn update(&self, set: CredentialSet) {
        if let Ok(mut current) = self.current.write() {
            *current = set;
        }
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/credentials", axum::routing::get(serve))
            .with_state(self.clone())
    }
}

async fn serve(State(service): State<CredentialService>, headers: HeaderMap) -> Response {
    let expected = format!("Bearer {}", service.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    let body = match serde_json::to_string(&service.snapshot()) {
        Ok(body) => body,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    ([("content-type", "application/json")], body).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_shape_matches_the_filter() {
        let mut set = CredentialSet {
            config_version: 2,
            ..Default::default()
        };
        set.credentials
            .insert("default/k".into(), CredentialValue::ApiKey("sk".into()));
        let json = serde_json::to_vec(&set).unwrap();
        let mut cache = aigw_filter::credentials::CredentialCache::default();
        cache.load(&json, 0).unwrap();
        assert_eq!(
            cache.freshness(0, 30, 2),
            aigw_filter::credentials::Freshness::Fresh
        );
        assert_eq!(
            cache.get("default/k"),
            Some(&aigw_filter::credentials::Credential::ApiKey("sk".into()))
        );
        assert!(!format!("{set:?}").contains("sk\""));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
