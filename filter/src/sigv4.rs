//! AWS Signature Version 4, header signing (`Authorization` header), written
//! against the public specification with `sha2` and `hmac` only.
//!
//! The caller describes the request exactly as it will go on the wire and
//! gets back the headers to set on it. Everything is a pure function of the
//! input: the time is passed in, nothing is read from the environment.
//!
//! Signing steps:
//! 1. canonical request: method, canonical URI, canonical query string,
//!    canonical headers, signed header names, payload hash (hex SHA-256);
//! 2. string to sign: `AWS4-HMAC-SHA256`, the time, the credential scope
//!    `date/region/service/aws4_request` and the hex SHA-256 of step 1;
//! 3. signing key: HMAC-SHA256 chained over `"AWS4" + secret`, date, region,
//!    service and `aws4_request`; signature: hex HMAC of step 2 with it.
//!
//! Canonical URI: every AWS service but S3 signs the path URI-encoded once
//! more than it is sent ("double encoding"). Bedrock sends the model id
//! `anthropic.claude-3-haiku-20240307-v1:0` as
//! `/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke` and signs
//! `/model/anthropic.claude-3-haiku-20240307-v1%253A0/invoke`. That is the
//! default here ([`SigningSettings::double_encode_path`]); single encoding
//! (S3) decodes each segment and encodes it once.
//!
//! Which headers to sign is the caller's choice: pass `host` (required) and
//! whatever else must be protected, e.g. `content-type`. Do not pass headers
//! that something between this filter and AWS may still change (Envoy's
//! `x-envoy-*`, `x-forwarded-*`, `x-request-id`, `user-agent`,
//! `content-length` when the body is rewritten later): the signature would
//! no longer match.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The only algorithm this module signs with.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The payload hash of an empty body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Long-term (access key) or temporary (with session token) credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How the request is signed. The defaults are what Bedrock (and every
/// other service but S3) expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningSettings {
    /// Remove `.` and `..` segments and empty segments (`//`) from the path
    /// before encoding it. Default true.
    pub normalize_path: bool,
    /// Encode the (already encoded) path once more for the canonical URI:
    /// `%3A` signs as `%253A`. Default true; false is S3's single encoding.
    pub double_encode_path: bool,
    /// Add and sign `x-amz-content-sha256` with the payload hash. Default
    /// false (S3 needs it; Bedrock does not).
    pub add_content_sha256_header: bool,
    /// Sign `x-amz-security-token` when there is a session token. Default
    /// true; false adds the header after signing, unsigned, as a few
    /// services require.
    pub sign_session_token: bool,
}

impl Default for SigningSettings {
    fn default() -> Self {
        SigningSettings {
            normalize_path: true,
            double_encode_path: true,
            add_content_sha256_header: false,
            sign_session_token: true,
        }
    }
}

/// The request body, or its hash when the caller already has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The body as it will be sent; hashed here.
    Bytes(&'a [u8]),
    /// A precomputed lowercase hex SHA-256 of the body, or a literal AWS
    /// accepts in its place such as `UNSIGNED-PAYLOAD`.
    Hash(&'a str),
}

/// A request to sign, described as it will go on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SigningInput<'a> {
    /// `GET`, `POST`, ... as sent.
    pub method: &'a str,
    /// The path as sent, already URI-encoded, without `?` and query.
    pub path: &'a str,
    /// The query string as sent, without the `?`; empty for none.
    pub query: &'a str,
    /// The headers to sign, `host` among them. Names in any case; a name
    /// may repeat (the values are joined with commas in order).
    /// `authorization` and the headers this module sets are dropped.
    pub headers: &'a [(String, String)],
    pub payload: Payload<'a>,
    /// The signing name of the service, e.g. `bedrock`.
    pub service: &'a str,
    /// e.g. `us-west-2`.
    pub region: &'a str,
    /// Signing time, seconds since the Unix epoch (UTC).
    pub time: u64,
    pub credentials: Credentials<'a>,
    pub settings: SigningSettings,
}

/// What signing produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningOutput {
    /// Headers to set on the request, replacing any of the same name:
    /// `x-amz-date`, then `x-amz-security-token` when there is a session
    /// token, then `x-amz-content-sha256` when asked for, then
    /// `authorization`. Names are lowercase.
    pub headers: Vec<(String, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lowercase hex.
    pub signature: String,
    /// The `SignedHeaders` list, e.g. `host;x-amz-date`.
    pub signed_headers: String,
}

impl SigningOutput {
    /// The value of one of [`headers`](SigningOutput::headers) (lowercase
    /// name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request cannot be signed. These are caller or configuration
/// errors, never a property of the client's request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Error {
    /// A field is empty or holds characters it must not hold.
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    /// A header name is empty or not an HTTP token (pseudo-headers such as
    /// `:authority` included: pass `host` instead).
    InvalidHeaderName(String),
    /// No `host` header was given; SigV4 requires it to be signed.
    MissingHost,
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigV4Error::InvalidField { field, reason } => {
                write!(f, "cannot sign request: {field} {reason}")
            }
            SigV4Error::InvalidHeaderName(name) => {
                write!(f, "cannot sign request: invalid header name {name:?}")
            }
            SigV4Error::MissingHost => {
                write!(f, "cannot sign request: no host header to sign")
            }
        }
    }
}

impl std::error::Error for SigV4Error {}

/// Signs a request with the `Authorization` header.
pub fn sign(input: &SigningInput<'_>) -> Result<SigningOutput, SigV4Error> {
    validate(input)?;
    let creds = &input.credentials;
    let settings = &input.settings;
    let amz_date = format_amz_date(input.time);
    let date = amz_date.get(..8).unwrap_or_default();

    let payload_hash = match input.payload {
        Payload::Bytes(body) => sha256_hex(body),
        Payload::Hash(hash) => hash.to_string(),
    };
    let token = creds.session_token;

    // Canonical headers, sorted by name; repeated names join in order.
    let mut canonical: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in input.headers {
        if !is_token(name) {
            return Err(SigV4Error::InvalidHeaderName(name.clone()));
        }
        let name = name.to_ascii_lowercase();
        let replaced = match name.as_str() {
            "authorization" | "x-amz-date" => true,
            "x-amz-security-token" => token.is_some(),
            "x-amz-content-sha256" => settings.add_content_sha256_header,
            _ => false,
        };
        if replaced {
            continue;
        }
        let value = trim_all(value);
        canonical
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    if !canonical.contains_key("host") {
        return Err(SigV4Error::MissingHost);
    }
    canonical.insert("x-amz-date".into(), amz_date.clone());
    if settings.add_content_sha256_header {
        canonical.insert("x-amz-content-sha256".into(), payload_hash.clone());
    }
    if let (Some(token), true) = (token, settings.sign_session_token) {
        canonical.insert("x-amz-security-token".into(), trim_all(token));
    }

    let signed_headers = canonical
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical_request = String::new();
    canonical_request.push_str(input.method);
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_uri(
        input.path,
        settings.normalize_path,
        settings.double_encode_path,
    ));
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_query_string(input.query));
    canonical_request.push('\n');
    for (name, value) in &canonical {
        canonical_request.push_str(name);
        canonical_request.push(':');
        canonical_request.push_str(value);
        canonical_request.push('\n');
    }
    canonical_request.push('\n');
    canonical_request.push_str(&signed_headers);
    canonical_request.push('\n');
    canonical_request.push_str(&payload_hash);

    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(creds.secret_access_key, date, input.region, input.service)?;
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes())?);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );

    let mut headers = vec![("x-amz-date".to_string(), amz_date)];
    if let Some(token) = token {
        headers.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    if settings.add_content_sha256_header {
        headers.push(("x-amz-content-sha256".to_string(), payload_hash));
    }
    headers.push(("authorization".to_string(), authorization));
    Ok(SigningOutput {
        headers,
        canonical_request,
        string_to_sign,
        signature,
        signed_headers,
    })
}

fn validate(input: &SigningInput<'_>) -> Result<(), SigV4Error> {
    let invalid = |field, reason| Err(SigV4Error::InvalidField { field, reason });
    if !is_token(input.method) {
        return invalid("method", "is not an HTTP method token");
    }
    if input.path.contains(['?', '#']) {
        return invalid("path", "must not contain '?' or '#': pass the query separately");
    }
    if input.path.bytes().any(|b| b.is_ascii_control()) {
        return invalid("path", "contains control characters");
    }
    if input.query.contains('#') || input.query.bytes().any(|b| b.is_ascii_control()) {
        return invalid("query", "contains '#' or control characters");
    }
    for (field, value) in [
        ("service", input.service),
        ("region", input.region),
        ("access key id", input.credentials.access_key_id),
    ] {
        if value.is_empty() {
            return invalid(field, "is empty");
        }
        if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b',') {
            return invalid(field, "must be visible ASCII without '/' or ','");
        }
    }
    if input.credentials.secret_access_key.is_empty() {
        return invalid("secret access key", "is empty");
    }
    if let Some(token) = input.credentials.session_token {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("session token", "must be non-empty visible ASCII");
        }
    }
    if let Payload::Hash(hash) = input.payload {
        if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("payload hash", "must be non-empty visible ASCII");
        }
    }
    Ok(())
}

/// RFC 9110 token characters (header names, methods).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A header value with leading and trailing whitespace removed and every
/// inner run of whitespace (folded lines included) turned into one space.
fn trim_all(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical URI of a path as sent on the wire.
///
/// `normalize` removes `.` and `..` segments and empty segments, keeping a
/// trailing slash. With `double_encode` the path is URI-encoded as it is
/// (`%` becomes `%25`, `/` is kept); without it each segment is
/// percent-decoded and encoded once. An empty path is `/`.
pub fn canonical_uri(path: &str, normalize: bool, double_encode: bool) -> String {
    let normalized;
    let path = if normalize {
        normalized = normalize_path(path);
        normalized.as_str()
    } else if path.is_empty() {
        "/"
    } else {
        path
    };
    if double_encode {
        uri_encode(path.as_bytes(), false)
    } else {
        path.split('/')
            .map(|segment| uri_encode(&percent_decode(segment), true))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Removes dot segments and empty segments; always starts with `/`.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len().saturating_add(1));
    out.push('/');
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query string: parameters split on `&` and at their first
/// `=`, each name and value percent-decoded then URI-encoded, sorted by
/// encoded name then value, a missing value signed as empty. `+` is a
/// literal plus (AWS SDKs send spaces as `%20`).
pub fn canonical_query_string(query: &str) -> String {
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(name), true),
                uri_encode(&percent_decode(value), true),
            )
        })
        .collect();
    params.sort();
    params
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// AWS URI encoding: unreserved characters (`A-Z a-z 0-9 - _ . ~`) as they
/// are, every other byte as `%XX` with uppercase hex; `/` is kept unless
/// `encode_slash`.
pub fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if b == b'/' && !encode_slash {
            out.push('/');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i.saturating_add(1)).and_then(|&c| hex_value(c));
            let lo = bytes.get(i.saturating_add(2)).and_then(|&c| hex_value(c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i = i.saturating_add(3);
                continue;
            }
        }
        out.push(b);
        i = i.saturating_add(1);
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for seconds since the Unix epoch.
pub fn format_amz_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01,
/// counting in 400-year eras that start on March 1st so that the leap day
/// falls at the end of each year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719_468 days from 0000-03-01 to 1970-01-01. u64 cannot overflow here:
    // days < 2^64 / 86400.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The SigV4 signing key for a day (`YYYYMMDD`), region and service. It
/// only changes daily, so callers may cache it.
pub fn signing_key(
    secret_access_key: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Result<[u8; 32], SigV4Error> {
    let k_secret = format!("AWS4{secret_access_key}");
    let k_date = hmac_sha256(k_secret.as_bytes(), date.as_bytes())?;
    let k_region = hmac_sha256(&k_date, region.as_bytes())?;
    let k_service = hmac_sha256(&k_region, service.as_bytes())?;
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], SigV4Error> {
    // HMAC takes keys of any length; the error branch is unreachable but
    // kept so that nothing here can panic.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| {
        SigV4Error::InvalidField {
            field: "secret access key",
            reason: "was rejected as an HMAC key",
        }
    })?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}
