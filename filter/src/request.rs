//! What the router role learns from a client request: which API endpoint it
//! calls and, from the body, the model and whether it streams.

use crate::error::{ErrorShape, GatewayError};
use serde::Deserialize;
use serde_json::Value;

/// The client-facing endpoints the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    AnthropicMessages,
    AnthropicCountTokens,
    Models,
}

impl Endpoint {
    /// Classifies a request by method and path (the query string is ignored).
    pub fn classify(method: &str, path: &str) -> Option<Endpoint> {
        let path = path.split('?').next().unwrap_or("");
        let path = path.strip_suffix('/').unwrap_or(path);
        match (method, path) {
            ("POST", "/v1/chat/completions") => Some(Endpoint::ChatCompletions),
            ("POST", "/v1/completions") => Some(Endpoint::Completions),
            ("POST", "/v1/embeddings") => Some(Endpoint::Embeddings),
            ("POST", "/anthropic/v1/messages") => Some(Endpoint::AnthropicMessages),
            ("POST", "/anthropic/v1/messages/count_tokens") => Some(Endpoint::AnthropicCountTokens),
            ("GET", "/v1/models") => Some(Endpoint::Models),
            _ => None,
        }
    }

    /// A short stable name, used to hand the endpoint to the upstream role.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::AnthropicMessages => "messages",
            Endpoint::AnthropicCountTokens => "count_tokens",
            Endpoint::Models => "models",
        }
    }

    pub fn from_name(name: &str) -> Option<Endpoint> {
        ALL.into_iter().find(|e| e.name() == name)
    }

    /// The error shape a client of a path expects, known even for paths the
    /// gateway does not serve.
    pub fn error_shape_for_path(path: &str) -> ErrorShape {
        if path.starts_with("/anthropic/") {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }

    pub fn error_shape(self) -> ErrorShape {
        match self {
            Endpoint::AnthropicMessages | Endpoint::AnthropicCountTokens => ErrorShape::Anthropic,
            _ => ErrorShape::OpenAi,
        }
    }

    /// The path of this endpoint below an OpenAI-schema backend's prefix.
    pub fn openai_suffix(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions => Some("/chat/completions"),
            Endpoint::Completions => Some("/completions"),
            Endpoint::Embeddings => Some("/embeddings"),
            Endpoint::Models => Some("/models"),
            _ => None,
        }
    }

    pub fn can_stream(self) -> bool {
        matches!(
            self,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::AnthropicMessages
        )
    }
}

/// What the router role hands the upstream role in an internal header: the
/// endpoint, and whether the gateway must ask for stream usage (so the body
/// must be rewritten). `chat` or `chat;stream-usage`.
pub fn handoff(endpoint: Endpoint, facts: &RequestFacts) -> String {
    if facts.stream && !facts.client_wants_usage {
        format!("{};stream-usage", endpoint.name())
    } else {
        endpoint.name().to_string()
    }
}

/// Reads [`handoff`]'s value: the endpoint and whether stream usage must be
/// asked for.
pub fn parse_handoff(value: &str) -> Option<(Endpoint, bool)> {
    let (name, flag) = value.split_once(';').unwrap_or((value, ""));
    Some((Endpoint::from_name(name)?, flag == "stream-usage"))
}

const ALL: [Endpoint; 6] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::AnthropicMessages,
    Endpoint::AnthropicCountTokens,
    Endpoint::Models,
];

/// The facts of a request body the gateway routes and accounts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: String,
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// Output tokens the request asks for at most (`reservation.rs`).
    pub requested_output: Option<u64>,
}

/// Deepest nesting of arrays and objects a request may have: what serde_json
/// accepts for values it builds. Skipped values have no such limit, and
/// providers' parsers may not be as robust.
const MAX_NESTING: usize = 128;

/// Whether arrays and objects nest deeper than `limit` (strings skipped).
fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The body fields routing and accounting read. The rest of the body (a
/// conversation can be megabytes) is checked as JSON but never built.
#[derive(Deserialize, Default, Debug)]
pub struct RoutingFields {
    #[serde(default)]
    pub model: Option<Value>,
    #[serde(default)]
    pub stream: Option<Value>,
    #[serde(default)]
    pub stream_options: Option<Value>,
    #[serde(default)]
    pub max_tokens: Option<Value>,
    #[serde(default)]
    pub max_completion_tokens: Option<Value>,
    #[serde(default)]
    pub n: Option<Value>,
}

/// Parses a request body just far enough to route it. The body must be a
/// JSON object with a non-empty string `model`; a key given twice is an
/// error (the gateway and the provider could read different values).
pub fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<RequestFacts, GatewayError> {
    // serde would also read a struct from an array, by position.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            GatewayError::bad_request("request body must be a JSON object")
                .with_code("invalid_json"),
        );
    }
    if nesting_exceeds(body, MAX_NESTING) {
        return Err(GatewayError::bad_request(format!(
            "request body is not valid JSON: nested deeper than {MAX_NESTING} levels"
        ))
        .with_code("invalid_json"));
    }
    let fields: RoutingFields = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request(format!("request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    let model = match &fields.model {
        Some(Value::String(m)) if m.chars().any(char::is_control) => {
            // The model becomes a header value: no line breaks or NULs.
            return Err(
                GatewayError::bad_request("model must not contain control characters")
                    .with_param("model")
                    .with_code("invalid_model"),
            );
        }
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(
                GatewayError::bad_request("you must provide a model parameter")
                    .with_param("model")
                    .with_code("missing_model"),
            )
        }
        Some(_) => {
            return Err(GatewayError::bad_request("model must be a string")
                .with_param("model")
                .with_code("invalid_type"))
        }
    };
    let stream = match &fields.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::bad_request("stream must be a boolean")
                .with_param("stream")
                .with_code("invalid_type"))
        }
    };
    if stream && !endpoint.can_stream() {
        return Err(
            GatewayError::bad_request("this endpoint does not support streaming")
                .with_param("stream"),
        );
    }
    let client_wants_usage = fields
        .stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(RequestFacts {
        model,
        stream,
        client_wants_usage,
        requested_output: crate::reservation::requested_output(endpoint, &fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases = [
            (
                "POST",
                "/v1/chat/completions",
                Some(Endpoint::ChatCompletions),
            ),
            (
                "POST",
                "/v1/chat/completions?x=1",
                Some(Endpoint::ChatCompletions),
            ),
            (
                "POST",
                "/v1/chat/completions/",
                Some(Endpoint::ChatCompletions),
            ),
            ("POST", "/v1/completions", Some(Endpoint::Completions)),
            ("POST", "/v1/embeddings", Some(Endpoint::Embeddings)),
            (
                "POST",
                "/anthropic/v1/messages",
                Some(Endpoint::AnthropicMessages),
            ),
            ("GET", "/v1/models", Some(Endpoint::Models)),
            ("GET", "/v1/chat/completions", None),
            ("POST", "/v2/chat/completions", None),
            ("POST", "", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(Endpoint::classify(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn names_round_trip() {
        for e in ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
        }
        assert_eq!(Endpoint::from_name("nope"), None);
    }

    #[test]
    fn handoff_round_trip() {
        let facts = |stream, usage| RequestFacts {
            model: "m".into(),
            stream,
            client_wants_usage: usage,
            requested_output: None,
        };
        for (f, want) in [
            (facts(true, false), true),
            (facts(true, true), false),
            (facts(false, false), false),
        ] {
            let value = handoff(Endpoint::ChatCompletions, &f);
            assert_eq!(
                parse_handoff(&value),
                Some((Endpoint::ChatCompletions, want)),
                "{value}"
            );
        }
        assert_eq!(parse_handoff("nope;stream-usage"), None);
    }

    #[test]
    fn parse_ok() {
        let f = parse_request(
            Endpoint::ChatCompletions,
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            RequestFacts {
                model: "m".into(),
                stream: true,
                client_wants_usage: true,
                requested_output: None,
            }
        );
        let f = parse_request(Endpoint::Embeddings, br#"{"model":"e","input":"x"}"#).unwrap();
        assert!(!f.stream && !f.client_wants_usage);
    }

    #[test]
    fn parse_errors_are_client_400s() {
        let cases: [&[u8]; 12] = [
            br#"{"model":"a","model":"b"}"#,
            br#"{"model":"a\r\nx-injected: yes"}"#,
            b"",
            b"{",
            b"[]",
            b"{}",
            br#"{"model":""}"#,
            br#"{"model":7}"#,
            br#"{"model":"m","stream":"yes"}"#,
            b"\xff\xfe",
            br#"{"model":"m","stream":true}"#, // embeddings cannot stream
            br#"["m"]"#,
        ];
        for body in cases {
            let err = parse_request(Endpoint::Embeddings, body).unwrap_err();
            assert_eq!(err.status, 400, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn nesting_depth() {
        assert!(!nesting_exceeds(br#"{"a":[[{"b":"[[[[[["}]]]}"#, 4));
        assert!(nesting_exceeds(br#"{"a":[[{"b":[]}]]}"#, 4));
        assert!(!nesting_exceeds(br#"{"a":"\"[[[[[[[[\\"}"#, 1));
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(!nesting_exceeds(ok.as_bytes(), MAX_NESTING));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(nesting_exceeds(deep.as_bytes(), MAX_NESTING));
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let mut body = String::from(r#"{"model":"m","x":"#);
        body.push_str(&"[".repeat(100_000));
        body.push_str(&"]".repeat(100_000));
        body.push('}');
        assert_eq!(
            parse_request(Endpoint::ChatCompletions, body.as_bytes())
                .unwrap_err()
                .status,
            400
        );
    }
}
