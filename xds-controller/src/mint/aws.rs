//! AWS credentials that expire: STS AssumeRoleWithWebIdentity (IRSA and
//! any web identity token file) and the container credentials endpoint
//! (EKS Pod Identity, ECS). Pure: which source the environment selects,
//! the request to make, and the answer's parsing.

use crate::credentials::CredentialValue;
use crate::error::CredentialError;
use serde_json::Value;

/// Where expiring AWS credentials come from, after static environment
/// variables (which [`crate::translate::AwsEnvironment`] covers).
#[derive(Clone, PartialEq, Eq)]
pub enum AwsSource {
    WebIdentity {
        /// Re-read before every call: the kubelet rotates it.
        token_file: String,
        role_arn: String,
        session_name: String,
        /// STS endpoint URL, without a path.
        sts_endpoint: String,
    },
    Container {
        uri: String,
        /// Re-read before every call when given.
        token_file: Option<String>,
        token: Option<String>,
    },
}

impl std::fmt::Debug for AwsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsSource::WebIdentity {
                role_arn,
                sts_endpoint,
                ..
            } => write!(f, "AwsWebIdentity({role_arn} via {sts_endpoint})"),
            AwsSource::Container { uri, .. } => write!(f, "AwsContainer({uri})"),
        }
    }
}

/// The expiring source the environment selects, in the AWS SDKs' order
/// (static keys, which come first, are handled by the caller): web
/// identity, then container credentials.
pub fn from_environment(var: &impl Fn(&str) -> Option<String>) -> Option<AwsSource> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let (Some(token_file), Some(role_arn)) =
        (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
    {
        let sts_endpoint = var("AWS_ENDPOINT_URL_STS")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(
                || match var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
                    Some(region) => format!("https://sts.{region}.amazonaws.com"),
                    None => "https://sts.amazonaws.com".into(),
                },
            );
        return Some(AwsSource::WebIdentity {
            token_file,
            role_arn,
            session_name: var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "aigw".into()),
            sts_endpoint: sts_endpoint.trim_end_matches('/').to_string(),
        });
    }
    let uri = var("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|p| format!("http://169.254.170.2{p}"))
    })?;
    Some(AwsSource::Container {
        uri,
        token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    })
}

/// The form body of an AssumeRoleWithWebIdentity call (query protocol,
/// unsigned: the web identity token is the proof).
pub fn assume_role_body(role_arn: &str, session_name: &str, web_identity_token: &str) -> String {
    super::form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", web_identity_token.trim()),
    ])
}

/// Credentials and when they expire (Unix seconds).
pub type Expiring = (CredentialValue, u64);

/// Reads STS's XML answer. Errors carry STS's `Code` and `Message` only.
pub fn parse_assume_role(status: u16, body: &str) -> Result<Expiring, CredentialError> {
    if status != 200 {
        let mut message = format!("STS AssumeRoleWithWebIdentity answered {status}");
        if let Some(code) = xml_text(body, "Code") {
            message.push_str(&format!(": {code}"));
            if let Some(m) = xml_text(body, "Message") {
                message.push_str(&format!(" ({})", m.chars().take(300).collect::<String>()));
            }
        }
        return Err(CredentialError::new(message));
    }
    let field = |name: &str| {
        xml_text(body, name)
            .ok_or_else(|| CredentialError::new(format!("STS's answer has no {name}")))
    };
    let value = CredentialValue::Aws {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
    };
    let expiration = field("Expiration")?;
    let expires = parse_time(&expiration).ok_or_else(|| {
        CredentialError::new(format!("STS's Expiration {expiration:?} is not a time"))
    })?;
    Ok((value, expires))
}

/// Reads the container credentials endpoint's JSON answer.
pub fn parse_container(status: u16, body: &[u8]) -> Result<Expiring, CredentialError> {
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
        let mut message = format!("the container credentials endpoint answered {status}");
        if let Some(code) = text("Code") {
            message.push_str(&format!(": {}", code.chars().take(100).collect::<String>()));
        }
        return Err(CredentialError::new(message));
    }
    let field = |name: &str| {
        text(name).ok_or_else(|| {
            CredentialError::new(format!(
                "the container credentials endpoint's answer has no {name}"
            ))
        })
    };
    let credential = CredentialValue::Aws {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: text("Token"),
    };
    let expiration = field("Expiration")?;
    let expires = parse_time(&expiration)
        .ok_or_else(|| CredentialError::new(format!("Expiration {expiration:?} is not a time")))?;
    Ok((credential, expires))
}

/// The text of the first `<name>...</name>` element, XML entities decoded.
fn xml_text(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    let text = body[start..end]
        .trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    Some(text)
}

/// Unix seconds of an ISO 8601 / RFC 3339 UTC time such as
/// `2026-11-24T23:09:29Z`, `...29.123Z` or `...29+00:00`.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, o) = time.split_at(at);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (h, m) = o[1..].split_once(':').unwrap_or((&o[1..], "0"));
        (
            c,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (c.next()??, c.next()??, c.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_precedence_and_endpoints() {
        assert_eq!(from_environment(&env(&[])), None);
        let web = [
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_REGION", "eu-west-1"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
        ];
        let Some(AwsSource::WebIdentity {
            sts_endpoint,
            session_name,
            ..
        }) = from_environment(&env(&web))
        else {
            panic!("web identity wins over container credentials");
        };
        assert_eq!(sts_endpoint, "https://sts.eu-west-1.amazonaws.com");
        assert_eq!(session_name, "aigw");
        let mut custom = web.to_vec();
        custom.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"));
        custom.push(("AWS_ROLE_SESSION_NAME", "s"));
        assert!(matches!(from_environment(&env(&custom)),
            Some(AwsSource::WebIdentity { sts_endpoint, session_name, .. })
                if sts_endpoint == "http://127.0.0.1:1" && session_name == "s"));
        custom.push(("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2"));
        assert!(matches!(from_environment(&env(&custom)),
            Some(AwsSource::WebIdentity { sts_endpoint, .. }) if sts_endpoint == "http://127.0.0.1:2"));
        let global = env(&web[..2]);
        assert!(matches!(from_environment(&global),
            Some(AwsSource::WebIdentity { sts_endpoint, .. }) if sts_endpoint == "https://sts.amazonaws.com"));
        let container = from_environment(&env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok"),
        ]))
        .unwrap();
        assert!(matches!(&container,
            AwsSource::Container { uri, token: Some(t), token_file: None }
                if uri == "http://169.254.170.23/v1/credentials" && t == "tok"));
        assert!(!format!("{container:?}").contains("tok\""));
        assert!(
            matches!(from_environment(&env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/x")])),
            Some(AwsSource::Container { uri, .. }) if uri == "http://169.254.170.2/v2/x")
        );
    }

    #[test]
    fn assume_role_request_and_answer() {
        assert_eq!(
            assume_role_body("arn:aws:iam::1:role/r", "aigw", "ey.J+/=\n"),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=aigw&WebIdentityToken=ey.J%2B%2F%3D"
        );
        let xml = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAX</AccessKeyId>
      <SecretAccessKey>se/cr+et</SecretAccessKey>
      <SessionToken>to&amp;ken</SessionToken>
      <Expiration>2026-11-24T23:09:29Z</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let (value, expires) = parse_assume_role(200, xml).unwrap();
        assert_eq!(
            value,
            CredentialValue::Aws {
                access_key_id: "ASIAX".into(),
                secret_access_key: "se/cr+et".into(),
                session_token: Some("to&ken".into()),
            }
        );
        assert_eq!(expires, parse_time("2026-11-24T23:09:29Z").unwrap());
        let error = r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve verification key</Message></Error></ErrorResponse>"#;
        assert_eq!(
            parse_assume_role(400, error).unwrap_err().0,
            "STS AssumeRoleWithWebIdentity answered 400: InvalidIdentityToken (Couldn't retrieve verification key)"
        );
        assert!(parse_assume_role(200, "<x/>").is_err());
    }

    #[test]
    fn container_answer() {
        let body = br#"{"AccessKeyId":"ASIAY","SecretAccessKey":"S","Token":"T","Expiration":"2026-11-24T23:09:29.000Z","RoleArn":"r"}"#;
        let (value, expires) = parse_container(200, body).unwrap();
        assert!(
            matches!(value, CredentialValue::Aws { ref session_token, .. } if session_token.as_deref() == Some("T"))
        );
        assert_eq!(expires, parse_time("2026-11-24T23:09:29Z").unwrap());
        assert_eq!(
            parse_container(401, br#"{"Code":"AccessDenied","Message":"x"}"#)
                .unwrap_err()
                .0,
            "the container credentials endpoint answered 401: AccessDenied"
        );
        assert!(parse_container(200, br#"{"AccessKeyId":"A"}"#).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_time("2024-02-29T12:34:56Z"), Some(1_709_210_096));
        assert_eq!(
            parse_time("2024-02-29T14:34:56.5+02:00"),
            Some(1_709_210_096)
        );
        assert_eq!(parse_time("2024-02-29T10:34:56-02:00"), Some(1_709_210_096));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2024-13-01T00:00:00Z"), None);
    }
}
