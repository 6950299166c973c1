//! GCP workload identity federation: an OIDC token is exchanged at Google's
//! Security Token Service (RFC 8693) for a federated access token, which
//! may then impersonate a service account (IAM Credentials
//! `generateAccessToken`). Pure: the requests and the answers.

use super::gcp::{AccessToken, SCOPE};
use crate::error::CredentialError;
use serde_json::{json, Value};

pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com";
pub const DEFAULT_IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";

/// Where federation is done, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    /// `//iam.googleapis.com/projects/{project}/locations/global/workloadIdentityPools/{pool}/providers/{provider}`
    pub audience: String,
    /// Base URL of Google's STS (`/v1/token` is added).
    pub sts_endpoint: String,
    /// Service account e-mail to impersonate, if any.
    pub impersonate: Option<String>,
    /// Base URL of the IAM Credentials API.
    pub iam_credentials_endpoint: String,
}

pub fn audience(project: &str, pool: &str, provider: &str) -> String {
    format!("//iam.googleapis.com/projects/{project}/locations/global/workloadIdentityPools/{pool}/providers/{provider}")
}

/// The e-mail of service account `name` in `project` (a full e-mail is kept).
pub fn service_account_email(name: &str, project: &str) -> String {
    if name.contains('@') {
        name.to_string()
    } else {
        format!("{name}@{project}.iam.gserviceaccount.com")
    }
}

pub fn sts_url(f: &Federation) -> String {
    format!("{}/v1/token", f.sts_endpoint.trim_end_matches('/'))
}

/// The form body of the token exchange for `subject_token` (an OIDC JWT).
pub fn exchange_body(f: &Federation, subject_token: &str) -> String {
    super::form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", &f.audience),
        ("scope", SCOPE),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("subject_token", subject_token),
    ])
}

/// STS answers like an OAuth token endpoint.
pub fn parse_exchange(status: u16, body: &[u8]) -> Result<AccessToken, CredentialError> {
    super::gcp::parse_token_response(status, body).map_err(|e| {
        CredentialError::new(e.0.replace("the token endpoint", "Google STS (token exchange)"))
    })
}

pub fn impersonation_url(f: &Federation, email: &str) -> String {
    format!(
        "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
        f.iam_credentials_endpoint.trim_end_matches('/')
    )
}

pub fn impersonation_body() -> String {
    json!({"scope": [SCOPE], "lifetime": "3600s"}).to_string()
}

/// `generateAccessToken`'s answer: `accessToken` and `expireTime`
/// (RFC 3339), as a token valid for so many seconds from `now`.
pub fn parse_impersonation(
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<AccessToken, CredentialError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        let mut message = format!("IAM generateAccessToken answered {status}");
        if let Some(m) = value.as_ref().and_then(|v| v["error"]["message"].as_str()) {
            message.push_str(&format!(": {}", m.chars().take(300).collect::<String>()));
        }
        return Err(CredentialError::new(message));
    }
    let token = value
        .as_ref()
        .and_then(|v| v["accessToken"].as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CredentialError::new("generateAccessToken's answer has no accessToken"))?;
    let expires = value
        .as_ref()
        .and_then(|v| v["expireTime"].as_str())
        .and_then(super::aws::parse_time)
        .ok_or_else(|| {
            CredentialError::new("generateAccessToken's answer has no usable expireTime")
        })?;
    Ok(AccessToken {
        token: token.to_string(),
        expires_in: expires.saturating_sub(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn federation() -> Federation {
        Federation {
            audience: audience("123", "pool", "prov"),
            sts_endpoint: DEFAULT_STS_ENDPOINT.into(),
            impersonate: Some(service_account_email("gw", "my-proj")),
            iam_credentials_endpoint: DEFAULT_IAM_CREDENTIALS_ENDPOINT.into(),
        }
    }

    #[test]
    fn exchange() {
        let f = federation();
        assert_eq!(sts_url(&f), "https://sts.googleapis.com/v1/token");
        assert_eq!(
            exchange_body(&f, "eyJ.x.y"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
&audience=%2F%2Fiam.googleapis.com%2Fprojects%2F123%2Flocations%2Fglobal%2FworkloadIdentityPools%2Fpool%2Fproviders%2Fprov\
&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform\
&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&subject_token=eyJ.x.y"
        );
        let t = parse_exchange(
            200,
            br#"{"access_token":"fed","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!((t.token.as_str(), t.expires_in), ("fed", 3599));
        let e = parse_exchange(
            400,
            br#"{"error":"invalid_grant","error_description":"The audience does not match"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "Google STS (token exchange) answered 400: invalid_grant (The audience does not match)"
        );
    }

    #[test]
    fn impersonation() {
        let f = federation();
        assert_eq!(
            impersonation_url(&f, f.impersonate.as_deref().unwrap()),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/gw@my-proj.iam.gserviceaccount.com:generateAccessToken"
        );
        assert_eq!(service_account_email("a@b.com", "p"), "a@b.com");
        let now = crate::mint::aws::parse_time("2026-01-01T00:00:00Z").unwrap();
        let t = parse_impersonation(
            200,
            br#"{"accessToken":"ya29.imp","expireTime":"2026-01-01T01:00:00Z"}"#,
            now,
        )
        .unwrap();
        assert_eq!((t.token.as_str(), t.expires_in), ("ya29.imp", 3600));
        let e = parse_impersonation(
            403,
            br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#,
            now,
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("IAM generateAccessToken answered 403: Permission"),
            "{e}"
        );
        assert!(parse_impersonation(200, br#"{"accessToken":"x"}"#, now).is_err());
    }
}
