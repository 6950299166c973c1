//! Upstream credentials the controller mints at run time and refreshes
//! before they expire: Google OAuth2 access tokens from a service-account
//! key or federation, Microsoft Entra ID tokens for Azure OpenAI, and
//! expiring AWS credentials (web identity, container endpoint).
//!
//! Pure parts (key files, JWTs, request bodies, answers, the schedule) are
//! in `gcp`, `azure`, `aws` and this module's functions; `http` is the client and
//! `refresher` the tasks that keep the credential service up to date.

pub mod aws;
pub mod azure;
pub mod federation;
pub mod gcp;
pub mod http;
pub mod oidc;
pub mod refresher;

use crate::credentials::CredentialValue;
use crate::error::CredentialError;
use std::time::Duration;

pub use refresher::Refresher;

/// What a credential is minted from. Equal sources mint the same
/// credential, so a configuration reload that keeps the source keeps the
/// current credential and its refresh schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintSource {
    GcpServiceAccount(gcp::ServiceAccountKey),
    /// GCP workload identity federation: an OIDC token exchanged at
    /// Google's STS, optionally impersonating a service account.
    GcpFederated {
        oidc: oidc::OidcClient,
        federation: federation::Federation,
    },
    Aws(aws::AwsSource),
    /// `azureCredentials`: an Entra ID access token for Azure OpenAI (client
    /// secret or federated OIDC token).
    Azure(azure::EntraClient),
    /// `awsCredentials.oidcExchangeToken`: an OIDC token exchanged with
    /// STS AssumeRoleWithWebIdentity.
    AwsOidc {
        oidc: oidc::OidcClient,
        role_arn: String,
        session_name: String,
        sts_endpoint: String,
    },
}

/// What the controller's environment says about minting: expiring AWS
/// credentials it points to, and endpoint overrides (private endpoints,
/// tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintEnvironment {
    /// Web identity or container credentials (after static keys).
    pub aws: Option<aws::AwsSource>,
    /// `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL`.
    pub aws_sts_endpoint: Option<String>,
    /// `AIGW_GCP_STS_ENDPOINT` (default `https://sts.googleapis.com`).
    pub gcp_sts_endpoint: Option<String>,
    /// `AIGW_GCP_IAM_CREDENTIALS_ENDPOINT` (default
    /// `https://iamcredentials.googleapis.com`).
    pub gcp_iam_credentials_endpoint: Option<String>,
    /// `AIGW_AZURE_AUTHORITY`, else `AZURE_AUTHORITY_HOST` (default
    /// `https://login.microsoftonline.com`).
    pub azure_authority: Option<String>,
}

impl MintEnvironment {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        MintEnvironment {
            aws: aws::from_environment(&var),
            aws_sts_endpoint: var("AWS_ENDPOINT_URL_STS").or_else(|| var("AWS_ENDPOINT_URL")),
            gcp_sts_endpoint: var("AIGW_GCP_STS_ENDPOINT"),
            gcp_iam_credentials_endpoint: var("AIGW_GCP_IAM_CREDENTIALS_ENDPOINT"),
            azure_authority: var("AIGW_AZURE_AUTHORITY").or_else(|| var("AZURE_AUTHORITY_HOST")),
        }
    }
}

/// A minted credential and when it expires (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub value: CredentialValue,
    pub expires_at: u64,
}

/// When to refresh a credential issued at `issued` that expires at
/// `expires` (Unix seconds): at 80% of its lifetime or 5 minutes before it
/// expires, whichever is earlier, but not before half of its lifetime; and
/// at least `margin` seconds before it expires when the lifetime allows
/// (the filter caches credentials for a while, so a refreshed one reaches
/// it late).
pub fn refresh_at(issued: u64, expires: u64, margin: u64) -> u64 {
    let life = expires.saturating_sub(issued);
    let lead = (life / 5).max(300.min(life / 2)).max(margin.min(life / 2));
    expires.saturating_sub(lead).max(issued + 1)
}

/// How long to wait before retry number `failures` (1, 2, ...): 1 s,
/// doubling, at most 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(5);
    Duration::from_secs((1u64 << exponent).min(30))
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    fn encode(text: &str, out: &mut String) {
        for b in text.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(k, &mut out);
        out.push('=');
        encode(v, &mut out);
    }
    out
}

/// Mints one credential from `source` at `now` (Unix seconds).
pub async fn mint(
    source: &MintSource,
    client: &http::Client,
    now: u64,
) -> Result<Minted, CredentialError> {
    match source {
        MintSource::GcpServiceAccount(key) => {
            let jwt = gcp::assertion(key, now)?;
            let answer = client
                .post_form(&key.token_uri, gcp::token_request_body(&jwt))
                .await?;
            let token = gcp::parse_token_response(answer.status, &answer.body)?;
            Ok(Minted {
                value: CredentialValue::ApiKey(token.token),
                expires_at: now + token.expires_in,
            })
        }
        MintSource::GcpFederated { oidc, federation } => {
            let subject = oidc_token(oidc, client).await?;
            let answer = client
                .post_form(
                    &federation::sts_url(federation),
                    federation::exchange_body(federation, &subject),
                )
                .await?;
            let mut token = federation::parse_exchange(answer.status, &answer.body)?;
            if let Some(email) = &federation.impersonate {
                let bearer = format!("Bearer {}", token.token);
                let answer = client
                    .post(
                        &federation::impersonation_url(federation, email),
                        "application/json",
                        federation::impersonation_body(),
                        &[("authorization", &bearer)],
                    )
                    .await?;
                token = federation::parse_impersonation(answer.status, &answer.body, now)?;
            }
            Ok(Minted {
                value: CredentialValue::ApiKey(token.token),
                expires_at: now + token.expires_in,
            })
        }
        MintSource::Azure(entra) => {
            let body = match &entra.auth {
                azure::ClientAuth::Secret(secret) => azure::secret_body(&entra.client_id, secret),
                azure::ClientAuth::Federated(oidc) => {
                    let assertion = oidc_token(oidc, client).await?;
                    azure::assertion_body(&entra.client_id, &assertion)
                }
            };
            let answer = client.post_form(&azure::token_url(entra), body).await?;
            let token = azure::parse_token_response(answer.status, &answer.body)?;
            Ok(Minted {
                value: CredentialValue::ApiKey(token.token),
                expires_at: now + token.expires_in,
            })
        }
        MintSource::AwsOidc {
            oidc,
            role_arn,
            session_name,
            sts_endpoint,
        } => {
            let subject = oidc_token(oidc, client).await?;
            let body = aws::assume_role_body(role_arn, session_name, &subject);
            let answer = client.post_form(&format!("{sts_endpoint}/"), body).await?;
            let text = String::from_utf8_lossy(&answer.body);
            let (value, expires_at) = aws::parse_assume_role(answer.status, &text)?;
            Ok(Minted { value, expires_at })
        }
        MintSource::Aws(aws::AwsSource::WebIdentity {
            token_file,
            role_arn,
            session_name,
            sts_endpoint,
        }) => {
            let token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                CredentialError::new(format!(
                    "cannot read AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {e}"
                ))
            })?;
            let body = aws::assume_role_body(role_arn, session_name, &token);
            let answer = client.post_form(&format!("{sts_endpoint}/"), body).await?;
            let text = String::from_utf8_lossy(&answer.body);
            let (value, expires_at) = aws::parse_assume_role(answer.status, &text)?;
            Ok(Minted { value, expires_at })
        }
        MintSource::Aws(aws::AwsSource::Container {
            uri,
            token_file,
            token,
        }) => {
            let token = match token_file {
                Some(path) => Some(tokio::fs::read_to_string(path).await.map_err(|e| {
                    CredentialError::new(format!(
                        "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {e}"
                    ))
                })?),
                None => token.clone(),
            };
            let token = token.map(|t| t.trim().to_string());
            let headers: Vec<(&str, &str)> = token
                .as_deref()
                .map(|t| ("authorization", t))
                .into_iter()
                .collect();
            let answer = client.get(uri, &headers).await?;
            let (value, expires_at) = aws::parse_container(answer.status, &answer.body)?;
            Ok(Minted { value, expires_at })
        }
    }
}

/// An OIDC token from `oidc`'s provider (discovering its token endpoint
/// when none is configured).
async fn oidc_token(
    oidc: &oidc::OidcClient,
    client: &http::Client,
) -> Result<String, CredentialError> {
    let endpoint = match &oidc.token_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => {
            let answer = client.get(&oidc::discovery_url(&oidc.issuer), &[]).await?;
            oidc::parse_discovery(answer.status, &answer.body)?
        }
    };
    let answer = client
        .post_form(&endpoint, oidc::token_request_body(oidc))
        .await?;
    oidc::parse_token_response(answer.status, &answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_schedule() {
        // One hour: at 80% (48 min), which is before "5 min before".
        assert_eq!(refresh_at(0, 3600, 60), 2880);
        // 15 minutes: 5 minutes before expiry comes first.
        assert_eq!(refresh_at(0, 900, 60), 600);
        // Short lifetimes: at half, never immediately.
        assert_eq!(refresh_at(100, 110, 60), 105);
        assert_eq!(refresh_at(100, 101, 60), 101);
        assert_eq!(refresh_at(100, 100, 60), 101);
        // A long cache margin moves it earlier, but not before half.
        assert_eq!(refresh_at(0, 3600, 1000), 2600);
        assert_eq!(refresh_at(0, 3600, 3000), 1800);
    }

    #[test]
    fn retry_backoff() {
        let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn azure_authority_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            MintEnvironment::from_env(move |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
            .azure_authority
        };
        assert_eq!(env(&[]), None);
        assert_eq!(
            env(&[("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")]).as_deref(),
            Some("https://login.microsoftonline.us/")
        );
        assert_eq!(
            env(&[
                ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
                ("AIGW_AZURE_AUTHORITY", "http://127.0.0.1:9"),
            ])
            .as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(env(&[("AIGW_AZURE_AUTHORITY", "")]), None);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form(&[("a b", "c&d=é"), ("x", "")]),
            "a%20b=c%26d%3D%C3%A9&x="
        );
    }
}
