//! Microsoft Entra ID access tokens for Azure OpenAI (`AzureCredentials`):
//! the OAuth2 client credentials grant at the tenant's v2.0 token endpoint,
//! the client authenticated by a client secret or by a federated
//! credential (an OIDC token sent as a JWT client assertion). Pure: the
//! requests and the answer; the POST itself is in [`super::http`].

use super::gcp::AccessToken;
use super::oidc::OidcClient;
use crate::error::CredentialError;

/// Where Entra ID is, unless `AIGW_AZURE_AUTHORITY` (or the Azure SDKs'
/// `AZURE_AUTHORITY_HOST`) says otherwise.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Azure OpenAI's (Cognitive Services') resource, as a v2.0 scope.
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The Secret key of `clientSecretRef` (as Envoy AI Gateway reads it).
pub const CLIENT_SECRET_KEY: &str = "client-secret";

/// How the application proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `clientSecretRef`: the application's client secret.
    Secret(String),
    /// `oidcExchangeToken`: a token from this OIDC provider, trusted by the
    /// application as a federated identity credential.
    Federated(OidcClient),
}

/// An Entra ID application (service principal) in a tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct EntraClient {
    /// Base URL of the authority, e.g. `https://login.microsoftonline.com`.
    pub authority: String,
    pub tenant_id: String,
    pub client_id: String,
    pub auth: ClientAuth,
}

impl std::fmt::Debug for EntraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth: &dyn std::fmt::Debug = match &self.auth {
            ClientAuth::Secret(_) => &"client secret <redacted>",
            ClientAuth::Federated(oidc) => oidc,
        };
        f.debug_struct("EntraClient")
            .field("authority", &self.authority)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("auth", auth)
            .finish()
    }
}

/// Whether `tenant` can name a tenant in a URL path: a GUID or a domain
/// (`contoso.onmicrosoft.com`), i.e. letters, digits, `-` and `.`.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !tenant.starts_with('.')
}

/// `{authority}/{tenant}/oauth2/v2.0/token`.
pub fn token_url(client: &EntraClient) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        client.authority.trim_end_matches('/'),
        client.tenant_id
    )
}

/// The form body with a client secret.
pub fn secret_body(client_id: &str, client_secret: &str) -> String {
    super::form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", SCOPE),
        ("client_secret", client_secret),
    ])
}

/// The form body with a federated credential: `assertion` is the OIDC
/// token, sent as a JWT bearer client assertion.
pub fn assertion_body(client_id: &str, assertion: &str) -> String {
    super::form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", SCOPE),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", assertion),
    ])
}

/// Entra ID answers like any OAuth2 token endpoint (`access_token`,
/// `expires_in`; `error`, `error_description` with an AADSTS code).
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, CredentialError> {
    super::gcp::parse_token_response(status, body).map_err(|e| {
        CredentialError::new(e.0.replace(
            "the token endpoint",
            "the Microsoft Entra ID token endpoint",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(auth: ClientAuth) -> EntraClient {
        EntraClient {
            authority: "https://login.microsoftonline.com/".into(),
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            client_id: "00001111-aaaa-2222-bbbb-3333cccc4444".into(),
            auth,
        }
    }

    #[test]
    fn requests() {
        let c = client(ClientAuth::Secret("s3cr&t~".into()));
        assert_eq!(
            token_url(&c),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(
            secret_body(&c.client_id, "s3cr&t~"),
            "grant_type=client_credentials&client_id=00001111-aaaa-2222-bbbb-3333cccc4444\
&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default&client_secret=s3cr%26t~"
        );
        assert_eq!(
            assertion_body("app", "eyJ.a_b-c.sig"),
            "grant_type=client_credentials&client_id=app\
&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default\
&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
&client_assertion=eyJ.a_b-c.sig"
        );
    }

    #[test]
    fn tenants() {
        assert!(valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(valid_tenant("contoso.onmicrosoft.com"));
        for bad in ["", "a/b", "..", ".x", "t?x=1", "a b", "t#"] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let shown = format!("{:?}", client(ClientAuth::Secret("s3cr&t~".into())));
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cr"),
            "{shown}"
        );
        assert!(shown.contains("00001111-aaaa"), "{shown}");
        let oidc = OidcClient {
            issuer: "https://idp".into(),
            token_endpoint: None,
            client_id: "gw".into(),
            client_secret: "idp-secret".into(),
            scopes: vec![],
            grant_type: "client_credentials".into(),
            audience: None,
        };
        let shown = format!("{:?}", client(ClientAuth::Federated(oidc)));
        assert!(
            shown.contains("https://idp") && !shown.contains("idp-secret"),
            "{shown}"
        );
    }

    /// The whole mint against a local token endpoint that checks the form.
    #[tokio::test]
    async fn mints_with_a_secret_and_with_an_assertion() {
        use std::collections::HashMap;
        let app = axum::Router::new()
            .route(
                "/{tenant}/oauth2/v2.0/token",
                axum::routing::post(
                    |axum::extract::Path(tenant): axum::extract::Path<String>, body: String| async move {
                        let form: HashMap<String, String> = body
                            .split('&')
                            .filter_map(|p| p.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%2F", "/")))
                            .collect();
                        let ok = tenant == "t1"
                            && form["grant_type"] == "client_credentials"
                            && form["client_id"] == "app"
                            && form["scope"] == SCOPE
                            && (form.get("client_secret").map(String::as_str) == Some("sec")
                                || (form.get("client_assertion_type").map(String::as_str)
                                    == Some(CLIENT_ASSERTION_TYPE)
                                    && form.get("client_assertion").map(String::as_str)
                                        == Some("idp-jwt")));
                        if ok {
                            (axum::http::StatusCode::OK, r#"{"token_type":"Bearer","expires_in":60,"access_token":"entra-tok"}"#)
                        } else {
                            (axum::http::StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#)
                        }
                    },
                ),
            )
            .route(
                "/idp/token",
                axum::routing::post(|| async { r#"{"id_token":"idp-jwt","expires_in":300}"# }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = super::super::http::Client::new().unwrap();
        let entra = |auth| {
            super::super::MintSource::Azure(EntraClient {
                authority: base.clone(),
                tenant_id: "t1".into(),
                client_id: "app".into(),
                auth,
            })
        };
        let minted = super::super::mint(&entra(ClientAuth::Secret("sec".into())), &http, 1000)
            .await
            .unwrap();
        assert_eq!(
            minted.value,
            crate::credentials::CredentialValue::ApiKey("entra-tok".into())
        );
        assert_eq!(minted.expires_at, 1060);
        let oidc = OidcClient {
            issuer: format!("{base}/idp"),
            token_endpoint: Some(format!("{base}/idp/token")),
            client_id: "gw".into(),
            client_secret: "x".into(),
            scopes: vec![],
            grant_type: "client_credentials".into(),
            audience: Some("api://AzureADTokenExchange".into()),
        };
        let minted = super::super::mint(&entra(ClientAuth::Federated(oidc)), &http, 0)
            .await
            .unwrap();
        assert_eq!(minted.expires_at, 60);
        let e = super::super::mint(&entra(ClientAuth::Secret("wrong".into())), &http, 0)
            .await
            .unwrap_err();
        assert!(
            e.0.contains("answered 401: invalid_client (AADSTS7000215"),
            "{e}"
        );
        assert!(!e.0.contains("wrong"), "{e}");
    }

    #[test]
    fn answers() {
        let t = parse_token_response(
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.entra.tok"}"#,
        )
        .unwrap();
        assert_eq!(
            (t.token.as_str(), t.expires_in),
            ("eyJ0eXAi.entra.tok", 3599)
        );
        assert!(!format!("{t:?}").contains("entra.tok"));
        let e = parse_token_response(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "the Microsoft Entra ID token endpoint answered 401: invalid_client (AADSTS7000215: Invalid client secret provided.)"
        );
        let e = parse_token_response(502, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(e.0, "the Microsoft Entra ID token endpoint answered 502");
        assert!(parse_token_response(200, br#"{"expires_in":3599}"#).is_err());
    }
}
