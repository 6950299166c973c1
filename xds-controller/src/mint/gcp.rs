//! Google service-account credentials: the key file, the RS256-signed JWT
//! assertion (RFC 7523) and the OAuth token endpoint's answer. Pure; the
//! POST itself is in [`super::http`].

use crate::error::CredentialError;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::{json, Value};

/// The Secret key Envoy AI Gateway reads the key file from.
pub const SECRET_KEY: &str = "service_account.json";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_SECONDS: u64 = 3600;

/// The parts of a service-account key file that minting needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    /// PKCS#8 DER of the RSA private key.
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// Reads a service-account key file (JSON). Errors never quote the file.
pub fn parse_key_file(text: &str) -> Result<ServiceAccountKey, CredentialError> {
    let file: KeyFile = serde_json::from_str(text).map_err(|e| {
        CredentialError::new(format!(
            "not a service-account key file (JSON {:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
        return Err(CredentialError::new(format!(
            "the key file is of type {kind:?}; only \"service_account\" keys are supported here (workload identity federation is configured with workloadIdentityFederationConfig)"
        )));
    }
    let client_email = file
        .client_email
        .filter(|e| !e.is_empty())
        .ok_or_else(|| CredentialError::new("the key file has no client_email"))?;
    let pem = file
        .private_key
        .ok_or_else(|| CredentialError::new("the key file has no private_key"))?;
    let private_key = pem_pkcs8(&pem)?;
    RsaKeyPair::from_pkcs8(&private_key).map_err(|e| {
        CredentialError::new(format!(
            "the key file's private_key is not a usable RSA key ({e})"
        ))
    })?;
    Ok(ServiceAccountKey {
        client_email,
        private_key_id: file.private_key_id.filter(|k| !k.is_empty()),
        token_uri: file
            .token_uri
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
        private_key,
    })
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_pkcs8(pem: &str) -> Result<Vec<u8>, CredentialError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem.find(BEGIN).ok_or_else(|| {
        CredentialError::new("the key file's private_key is not a PEM \"PRIVATE KEY\" (PKCS#8)")
    })? + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or_else(|| CredentialError::new("the key file's private_key PEM is not terminated"))?
        + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|_| CredentialError::new("the key file's private_key is not valid base64"))
}

/// The signed JWT assertion for `key`, issued at `now` (Unix seconds).
pub fn assertion(key: &ServiceAccountKey, now: u64) -> Result<String, CredentialError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &key.private_key_id {
        header["kid"] = Value::String(kid.clone());
    }
    let claims = json!({
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": key.token_uri,
        "iat": now,
        "exp": now + ASSERTION_SECONDS,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let pair = RsaKeyPair::from_pkcs8(&key.private_key)
        .map_err(|e| CredentialError::new(format!("the private key is not usable ({e})")))?;
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| CredentialError::new("signing the JWT assertion failed"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The form body of the token request.
pub fn token_request_body(assertion: &str) -> String {
    super::form(&[("grant_type", GRANT_TYPE), ("assertion", assertion)])
}

/// An OAuth2 access token and its lifetime in seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AccessToken(<redacted>, expires_in: {})",
            self.expires_in
        )
    }
}

/// Reads a token endpoint's answer. A non-200 answer becomes an error with
/// OAuth's `error` and `error_description`, never the raw body.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, CredentialError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    let text = |key: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect::<String>())
    };
    if status != 200 {
        let mut message = format!("the token endpoint answered {status}");
        if let Some(error) = text("error") {
            message.push_str(&format!(": {error}"));
            if let Some(description) = text("error_description") {
                message.push_str(&format!(" ({description})"));
            }
        }
        return Err(CredentialError::new(message));
    }
    let token = value
        .as_ref()
        .and_then(|v| v.get("access_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CredentialError::new("the token endpoint's answer has no access_token"))?
        .to_string();
    let expires_in = value
        .as_ref()
        .and_then(|v| v.get("expires_in"))
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(3600);
    Ok(AccessToken { token, expires_in })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use ring::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A throwaway 2048-bit RSA key made for these tests (PKCS#8 PEM).
    pub const TEST_KEY_PEM: &str = include_str!("testdata/sa_key.pem");

    pub fn key_file(token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid1",
            "private_key": TEST_KEY_PEM,
            "client_email": "gw@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn key_file_is_read_and_redacted() {
        let key = parse_key_file(&key_file("http://127.0.0.1:9/token")).unwrap();
        assert_eq!(key.client_email, "gw@p.iam.gserviceaccount.com");
        assert_eq!(key.token_uri, "http://127.0.0.1:9/token");
        assert_eq!(key.private_key_id.as_deref(), Some("kid1"));
        let shown = format!("{key:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("MII"),
            "{shown}"
        );
    }

    #[test]
    fn bad_key_files_say_why_without_quoting() {
        let e = parse_key_file("{\"private_key\": \"secret-stuff").unwrap_err();
        assert!(!e.0.contains("secret-stuff"), "{e}");
        let e = parse_key_file(r#"{"client_email":"a","private_key":"nope"}"#).unwrap_err();
        assert!(e.0.contains("PKCS#8"), "{e}");
        let e = parse_key_file(r#"{"type":"external_account"}"#).unwrap_err();
        assert!(e.0.contains("external_account"), "{e}");
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = parse_key_file(&json!({"client_email":"a","private_key":garbage}).to_string())
            .unwrap_err();
        assert!(e.0.contains("not a usable RSA key"), "{e}");
        let key =
            parse_key_file(&json!({"client_email":"a","private_key":TEST_KEY_PEM}).to_string())
                .unwrap();
        assert_eq!(key.token_uri, "https://oauth2.googleapis.com/token");
    }

    #[test]
    fn assertion_is_signed_with_the_key_and_has_the_claims() {
        let key = parse_key_file(&key_file("https://oauth2.googleapis.com/token")).unwrap();
        let jwt = assertion(&key, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg":"RS256","typ":"JWT","kid":"kid1"}));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss":"gw@p.iam.gserviceaccount.com","scope":SCOPE,
                   "aud":"https://oauth2.googleapis.com/token",
                   "iat":1_700_000_000u64,"exp":1_700_003_600u64})
        );
        let pair = RsaKeyPair::from_pkcs8(&key.private_key).unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key());
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &signature).unwrap();
        assert!(public.verify(b"tampered", &signature).is_err());
    }

    #[test]
    fn token_request_is_a_form() {
        assert_eq!(
            token_request_body("a.b_c-d"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b_c-d"
        );
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.token, "ya29.x");
        assert_eq!(t.expires_in, 3599);
        assert!(!format!("{t:?}").contains("ya29"));
        let e = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "the token endpoint answered 400: invalid_grant (Invalid JWT Signature.)"
        );
        let e = parse_token_response(500, b"<html>secret-ish page</html>").unwrap_err();
        assert_eq!(e.0, "the token endpoint answered 500");
        assert!(parse_token_response(200, br#"{"expires_in":1}"#).is_err());
        assert!(parse_token_response(200, b"nope").is_err());
    }
}
