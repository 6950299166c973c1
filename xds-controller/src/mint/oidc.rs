//! An OIDC token from an identity provider with the client credentials
//! grant: the first step of `oidcExchangeToken` (AWS) and of GCP workload
//! identity federation, whose token is then exchanged for the cloud's own.

use crate::error::CredentialError;
use serde_json::Value;

/// Envoy Gateway's `OIDC` fields that matter here, with the client secret
/// read from its Secret (key `client-secret`).
#[derive(Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub issuer: String,
    /// `provider.tokenEndpoint`; discovered from the issuer when absent.
    pub token_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// `grantType`, default `client_credentials`.
    pub grant_type: String,
    /// `aud`: sent as `audience` when given.
    pub audience: Option<String>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// The Secret key holding the client secret (as Envoy Gateway reads it).
pub const CLIENT_SECRET_KEY: &str = "client-secret";

/// The well-known discovery URL of `issuer`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// `token_endpoint` from a discovery document.
pub fn parse_discovery(status: u16, body: &[u8]) -> Result<String, CredentialError> {
    if status != 200 {
        return Err(CredentialError::new(format!(
            "the OIDC discovery document answered {status}"
        )));
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("token_endpoint")?.as_str().map(str::to_string))
        .ok_or_else(|| CredentialError::new("the OIDC discovery document has no token_endpoint"))
}

/// The form body of the token request.
pub fn token_request_body(client: &OidcClient) -> String {
    let scope = client.scopes.join(" ");
    let mut pairs = vec![
        ("grant_type", client.grant_type.as_str()),
        ("client_id", client.client_id.as_str()),
        ("client_secret", client.client_secret.as_str()),
    ];
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    if let Some(aud) = &client.audience {
        pairs.push(("audience", aud));
    }
    super::form(&pairs)
}

/// The token to exchange: `id_token` when the provider gives one, else
/// `access_token`. Errors carry OAuth's `error` and `error_description`.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<String, CredentialError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let text = |key: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if status != 200 {
        let mut message = format!("the OIDC token endpoint answered {status}");
        if let Some(error) = text("error") {
            let short: String = error.chars().take(100).collect();
            message.push_str(&format!(": {short}"));
            if let Some(d) = text("error_description") {
                message.push_str(&format!(" ({})", d.chars().take(200).collect::<String>()));
            }
        }
        return Err(CredentialError::new(message));
    }
    text("id_token")
        .or_else(|| text("access_token"))
        .ok_or_else(|| {
            CredentialError::new("the OIDC token endpoint's answer has no id_token or access_token")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OidcClient {
        OidcClient {
            issuer: "https://idp.example/".into(),
            token_endpoint: None,
            client_id: "gw".into(),
            client_secret: "s3cr&t".into(),
            scopes: vec!["openid".into(), "profile".into()],
            grant_type: "client_credentials".into(),
            audience: Some("sts.amazonaws.com".into()),
        }
    }

    #[test]
    fn request_and_discovery() {
        assert_eq!(
            discovery_url("https://idp.example/"),
            "https://idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            token_request_body(&client()),
            "grant_type=client_credentials&client_id=gw&client_secret=s3cr%26t&scope=openid%20profile&audience=sts.amazonaws.com"
        );
        assert_eq!(
            parse_discovery(
                200,
                br#"{"issuer":"i","token_endpoint":"https://idp.example/token"}"#
            )
            .unwrap(),
            "https://idp.example/token"
        );
        assert!(parse_discovery(200, b"{}").is_err());
        assert!(parse_discovery(404, b"").is_err());
        assert!(!format!("{:?}", client()).contains("s3cr"));
    }

    #[test]
    fn token_answers() {
        assert_eq!(
            parse_token_response(200, br#"{"access_token":"a","id_token":"i"}"#).unwrap(),
            "i"
        );
        assert_eq!(
            parse_token_response(200, br#"{"access_token":"a"}"#).unwrap(),
            "a"
        );
        assert_eq!(
            parse_token_response(
                401,
                br#"{"error":"invalid_client","error_description":"bad secret"}"#
            )
            .unwrap_err()
            .0,
            "the OIDC token endpoint answered 401: invalid_client (bad secret)"
        );
        assert!(parse_token_response(200, b"{}").is_err());
    }
}
