//! The upstream role's pure part: how one attempt's request is rewritten for
//! the backend that was picked.

use crate::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};
use crate::credentials::Credential;
use crate::error::GatewayError;
use crate::request::{parse_request, Endpoint};
use serde_json::Value;

/// The request as the backend must receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    pub path: String,
    pub host: Option<String>,
    /// `None`: send the client's body unchanged.
    pub body: Option<Vec<u8>>,
    /// Headers to set (lowercase names).
    pub set_headers: Vec<(String, String)>,
    /// Client headers this backend must not receive.
    pub remove_headers: Vec<&'static str>,
    /// Headers to set only when the client sent none of that name.
    pub default_headers: Vec<(String, String)>,
}

/// Headers a client may send that must never reach a provider: the client's
/// own credentials and the gateway's internal routing headers.
pub const CLIENT_HEADERS_REMOVED: &[&str] = &["authorization", "x-api-key", "api-key"];

/// Rewrites a request for `backend`.
pub fn prepare(
    endpoint: Endpoint,
    query: &str,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    match (endpoint, backend.schema) {
        (_, SchemaName::OpenAI | SchemaName::AzureOpenAI) => {
            prepare_openai(endpoint, query, backend, body)
        }
        // OpenAI chat clients in front of Claude and Bedrock Converse.
        (Endpoint::ChatCompletions, SchemaName::Anthropic | SchemaName::AWSAnthropic) => {
            crate::openai_to_anthropic::prepare(query, backend, body)
        }
        (Endpoint::ChatCompletions, SchemaName::AWSBedrock) => {
            crate::converse::prepare(backend, body)
        }
        (Endpoint::ChatCompletions, SchemaName::GCPVertexAI) => {
            crate::gemini::prepare(backend, body)
        }
        (Endpoint::ChatCompletions, SchemaName::GCPAnthropic) => {
            crate::gcp_anthropic::prepare_chat(backend, body)
        }
        (_, SchemaName::GCPAnthropic) => crate::gcp_anthropic::prepare(endpoint, backend, body),
        (Endpoint::Embeddings, SchemaName::AWSBedrock) => {
            crate::bedrock_invoke::prepare_embeddings(backend, body)
        }
        (Endpoint::AnthropicCountTokens, SchemaName::AWSAnthropic) => {
            crate::bedrock_invoke::prepare_count_tokens(backend, body)
        }
        (_, SchemaName::AWSAnthropic) => crate::bedrock::prepare(endpoint, backend, body),
        (_, SchemaName::Anthropic) => crate::anthropic::prepare(endpoint, query, backend, body),
        (_, other) => Err(GatewayError::client(
            501,
            format!(
                "{} is not supported yet on a {other:?} backend by this gateway",
                client_path(endpoint)
            ),
        )
        .with_code("unsupported_backend_schema")),
    }
}

/// The client-facing method and path of `endpoint`, for error messages.
fn client_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "POST /v1/chat/completions",
        Endpoint::Completions => "POST /v1/completions",
        Endpoint::Embeddings => "POST /v1/embeddings",
        Endpoint::AnthropicMessages => "POST /anthropic/v1/messages",
        Endpoint::AnthropicCountTokens => "POST /anthropic/v1/messages/count_tokens",
        Endpoint::Models => "GET /v1/models",
    }
}

/// The request for an OpenAI-schema backend when its body needs no change
/// (no model override, no stream usage to ask for): then the upstream role
/// rewrites headers only and never buffers the body.
pub fn prepare_headers_only(
    endpoint: Endpoint,
    query: &str,
    backend: &BackendConfig,
    model: &str,
    needs_stream_usage: bool,
) -> Option<UpstreamRequest> {
    let override_differs = backend
        .model_name_override
        .as_deref()
        .is_some_and(|m| m != model);
    let body_unchanged = match backend.schema {
        SchemaName::OpenAI => !override_differs,
        // The deployment in the path names the model; the body's is ignored.
        SchemaName::AzureOpenAI => true,
        _ => false,
    };
    if !body_unchanged || needs_stream_usage {
        return None;
    }
    Some(UpstreamRequest {
        path: openai_path(endpoint, query, backend, model).ok()?,
        host: backend.host.clone(),
        body: None,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        default_headers: Vec::new(),
    })
}

fn openai_path(
    endpoint: Endpoint,
    query: &str,
    backend: &BackendConfig,
    model: &str,
) -> Result<String, GatewayError> {
    let suffix = endpoint.openai_suffix().ok_or_else(|| {
        GatewayError::client(
            404,
            "this endpoint is not available on an OpenAI-schema backend",
        )
    })?;
    if backend.schema == SchemaName::AzureOpenAI {
        return crate::azure::path(suffix, query, backend, model);
    }
    let prefix = backend
        .prefix
        .as_deref()
        .unwrap_or("/v1")
        .trim_end_matches('/');
    let mut path = format!("{prefix}{suffix}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    Ok(path)
}

fn prepare_openai(
    endpoint: Endpoint,
    query: &str,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let facts = parse_request(endpoint, body)?;
    let path = openai_path(endpoint, query, backend, &facts.model)?;
    let override_model = backend
        .model_name_override
        .as_deref()
        .filter(|m| *m != facts.model && backend.schema == SchemaName::OpenAI);
    let ask_for_usage = facts.stream && !facts.client_wants_usage;
    let body = if override_model.is_some() || ask_for_usage {
        let mut value: Value = serde_json::from_slice(body)
            .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
        if let Some(model) = override_model {
            object.insert("model".into(), Value::String(model.to_string()));
        }
        if ask_for_usage {
            let options = object
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if !options.is_object() {
                *options = Value::Object(Default::default());
            }
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        Some(value.to_string().into_bytes())
    } else {
        None
    };
    Ok(UpstreamRequest {
        path,
        host: backend.host.clone(),
        body,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        default_headers: Vec::new(),
    })
}

/// The header map an attempt sends (written with one host call): the
/// client's `original` map without the gateway's `internal` headers and the
/// client's credentials, with `request`'s changes applied, then `added`
/// (the backend's credential or signature). A header that is set keeps its
/// place in the map and loses any repeats.
pub fn attempt_headers(
    original: &[(String, Vec<u8>)],
    internal: &[&str],
    request: &UpstreamRequest,
    added: &[(&str, String)],
) -> Vec<(String, Vec<u8>)> {
    fn set(map: &mut Vec<(String, Vec<u8>)>, name: &str, value: &str) {
        let mut first = true;
        map.retain_mut(|(n, v)| {
            if n != name {
                return true;
            }
            // The first keeps its place with the new value; repeats go.
            if !first {
                return false;
            }
            *v = value.as_bytes().to_vec();
            first = false;
            true
        });
        if first {
            map.push((name.to_string(), value.as_bytes().to_vec()));
        }
    }
    let removed = |name: &str| {
        internal.contains(&name)
            || CLIENT_HEADERS_REMOVED.contains(&name)
            || request.remove_headers.contains(&name)
    };
    let mut map: Vec<(String, Vec<u8>)> = original
        .iter()
        .filter(|(n, _)| !removed(n))
        .cloned()
        .collect();
    // The gateway reads every answer: ask for it uncompressed (see
    // encoding.rs; a compressed one is decoded anyway).
    set(&mut map, "accept-encoding", "identity");
    for (name, value) in &request.set_headers {
        set(&mut map, name, value);
    }
    for (name, value) in &request.default_headers {
        if !map.iter().any(|(n, _)| n == name) {
            map.push((name.clone(), value.as_bytes().to_vec()));
        }
    }
    set(&mut map, ":path", &request.path);
    if let Some(host) = &request.host {
        set(&mut map, ":authority", host);
    }
    if let Some(body) = &request.body {
        set(&mut map, "content-length", &body.len().to_string());
    }
    for (name, value) in added {
        set(&mut map, name, value);
    }
    map
}

/// Above this many single-header writes, the whole map is written instead.
/// Envoy applies a whole map slowly: a Bedrock request (about 7 edits)
/// costs 9 us less Envoy CPU written edit by edit (A/B over 10 alternating
/// rounds, `scripts/bench/ab.py`, 7 of 10 rounds better).
const MAX_HEADER_EDITS: usize = 8;

/// The single-header writes (`None`: remove) that turn the map Envoy holds,
/// `current`, into `desired`, or `None` when the whole map should be
/// written instead: too many changes, or a changed header that has
/// several values.
pub fn header_edits(
    current: &[(String, Vec<u8>)],
    desired: &[(String, Vec<u8>)],
) -> Option<Vec<(String, Option<Vec<u8>>)>> {
    // Maps are short (a dozen headers): scanning beats building indexes,
    // and nothing is copied unless it is written.
    fn values<'a>(map: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
        map.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
    let first_of_name =
        |map: &[(String, Vec<u8>)], i: usize| map[..i].iter().all(|(n, _)| *n != map[i].0);
    let mut edits = Vec::new();
    for (i, (name, _)) in current.iter().enumerate() {
        if first_of_name(current, i) && !desired.iter().any(|(n, _)| n == name) {
            edits.push((name.clone(), None));
        }
    }
    for (i, (name, value)) in desired.iter().enumerate() {
        if !first_of_name(desired, i) {
            continue;
        }
        let (wanted, held) = (values(desired, name), values(current, name));
        if wanted == held {
            continue;
        }
        // (Whether a set drops a name's other values differs between Envoy
        // versions.)
        if wanted.len() > 1 || held.len() > 1 {
            return None;
        }
        edits.push((name.clone(), Some(value.clone())));
    }
    (edits.len() <= MAX_HEADER_EDITS).then_some(edits)
}

/// The header that carries a static credential for `auth`, or `None` for
/// schemes that sign the request instead.
pub fn credential_header(
    auth: &BackendAuth,
    credential: &Credential,
) -> Result<Option<(&'static str, String)>, GatewayError> {
    let key = match credential {
        Credential::ApiKey(key) => key,
        Credential::Aws(_) if auth.kind == AuthKind::AwsSigV4 => return Ok(None),
        Credential::Aws(_) => {
            return Err(GatewayError::internal(
                "backend credential is of the wrong kind for its security policy",
            ))
        }
    };
    Ok(Some(match auth.kind {
        AuthKind::ApiKey => ("authorization", format!("Bearer {key}")),
        AuthKind::AnthropicApiKey => ("x-api-key", key.clone()),
        AuthKind::AzureApiKey => ("api-key", key.clone()),
        AuthKind::GcpAccessToken | AuthKind::AzureAccessToken => {
            ("authorization", format!("Bearer {key}"))
        }
        AuthKind::AwsSigV4 => {
            return Err(GatewayError::internal(
                "backend needs AWS credentials but its credential is an API key",
            ))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn attempt_headers_apply_every_change_in_place() {
        let original = map(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("authorization", "Bearer client-secret"),
            ("x-api-key", "client-secret-2"),
            ("x-aigw-endpoint", "chat"),
            ("x-ai-eg-model", "m"),
            ("anthropic-version", "client-choice"),
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br"),
            ("content-length", "27"),
            ("x-trace", "1"),
        ]);
        let request = UpstreamRequest {
            path: "/model/m/converse".into(),
            host: Some("bedrock.example".into()),
            body: Some(b"{}".to_vec()),
            set_headers: vec![("content-type".into(), "application/json".into())],
            remove_headers: vec!["x-trace"],
            default_headers: vec![
                ("anthropic-version".into(), "2023-06-01".into()),
                ("x-new-default".into(), "d".into()),
            ],
        };
        let added = [("authorization", "AWS4-HMAC-SHA256 sig".to_string())];
        let out = attempt_headers(&original, &["x-aigw-endpoint"], &request, &added);
        let expected = map(&[
            (":method", "POST"),
            (":path", "/model/m/converse"),
            (":authority", "bedrock.example"),
            ("x-ai-eg-model", "m"),
            ("anthropic-version", "client-choice"),
            ("accept-encoding", "identity"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("x-new-default", "d"),
            ("authorization", "AWS4-HMAC-SHA256 sig"),
        ]);
        assert_eq!(out, expected);
    }

    #[test]
    fn attempt_headers_keep_an_unchanged_request_as_it_came() {
        let original = map(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("content-length", "27"),
        ]);
        let request = UpstreamRequest {
            path: "/v1/chat/completions".into(),
            host: None,
            body: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            default_headers: Vec::new(),
        };
        let mut expected = original.clone();
        expected.push(("accept-encoding".into(), b"identity".to_vec()));
        assert_eq!(attempt_headers(&original, &[], &request, &[]), expected);
    }

    /// Applies `edits` to a map: a set writes the name's one value, a
    /// remove drops the name.
    fn apply(
        mut map: Vec<(String, Vec<u8>)>,
        edits: &[(String, Option<Vec<u8>>)],
    ) -> Vec<(String, Vec<u8>)> {
        for (name, value) in edits {
            let at = map.iter().position(|(n, _)| n == name);
            map.retain(|(n, _)| n != name);
            if let Some(v) = value {
                let at = at.unwrap_or(map.len()).min(map.len());
                map.insert(at, (name.clone(), v.clone()));
            }
        }
        map
    }

    #[test]
    fn header_edits_write_only_what_changed() {
        let current = map(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("x-aigw-endpoint", "chat"),
            ("authorization", "Bearer client"),
            ("x-tag", "a"),
            ("x-tag", "b"),
        ]);
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<usize>);
        let cases: &[Case] = &[
            // Unchanged: nothing to write.
            (
                &[
                    (":method", "POST"),
                    (":path", "/v1/chat/completions"),
                    ("x-aigw-endpoint", "chat"),
                    ("authorization", "Bearer client"),
                    ("x-tag", "a"),
                    ("x-tag", "b"),
                ],
                Some(0),
            ),
            // Two removed, one added, one changed.
            (
                &[
                    (":method", "POST"),
                    (":path", "/openai/v1/chat/completions"),
                    ("x-tag", "a"),
                    ("x-tag", "b"),
                    ("accept-encoding", "identity"),
                ],
                Some(4),
            ),
            // A repeated header collapsed to one value: the whole map.
            (
                &[
                    (":method", "POST"),
                    (":path", "/v1/chat/completions"),
                    ("x-aigw-endpoint", "chat"),
                    ("authorization", "Bearer client"),
                    ("x-tag", "a"),
                ],
                None,
            ),
            // Several values of one name changed: the whole map.
            (
                &[
                    (":method", "POST"),
                    (":path", "/v1/chat/completions"),
                    ("x-aigw-endpoint", "chat"),
                    ("authorization", "Bearer client"),
                    ("x-tag", "b"),
                    ("x-tag", "a"),
                ],
                None,
            ),
            // Too many changes: the whole map.
            (
                &[
                    (":method", "GET"),
                    (":path", "/"),
                    ("a", "1"),
                    ("b", "2"),
                    ("c", "3"),
                    ("d", "4"),
                ],
                None,
            ),
        ];
        for (desired, count) in cases {
            let desired = map(desired);
            let edits = header_edits(&current, &desired);
            assert_eq!(edits.as_ref().map(Vec::len), *count, "{desired:?}");
            if let Some(edits) = edits {
                let mut got = apply(current.clone(), &edits);
                let mut want = desired.clone();
                got.sort();
                want.sort();
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn header_edits_of_a_passthrough_attempt_are_two_writes() {
        let original = map(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gateway.local"),
            ("content-length", "27"),
            ("x-aigw-endpoint", "chat"),
            ("x-ai-eg-model", "m"),
        ]);
        let request = prepare_headers_only(
            Endpoint::ChatCompletions,
            "",
            &BackendConfig::default(),
            "m",
            false,
        )
        .unwrap();
        let desired = attempt_headers(&original, &["x-aigw-endpoint"], &request, &[]);
        let edits = header_edits(&original, &desired).unwrap();
        assert_eq!(
            edits,
            vec![
                ("x-aigw-endpoint".to_string(), None),
                ("accept-encoding".to_string(), Some(b"identity".to_vec())),
            ]
        );
    }

    fn backend(prefix: Option<&str>, model: Option<&str>) -> BackendConfig {
        BackendConfig {
            prefix: prefix.map(str::to_string),
            model_name_override: model.map(str::to_string),
            host: Some("api.example.com".into()),
            ..Default::default()
        }
    }

    #[test]
    fn passthrough_keeps_body_bytes() {
        let body = br#"{"model":"m","messages":[]}"#;
        let r = prepare(Endpoint::ChatCompletions, "", &backend(None, None), body).unwrap();
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body, None);
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
    }

    #[test]
    fn headers_only_when_the_body_needs_no_change() {
        let plain = backend(None, None);
        let r = prepare_headers_only(Endpoint::ChatCompletions, "", &plain, "m", false).unwrap();
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body, None);
        assert!(prepare_headers_only(Endpoint::ChatCompletions, "", &plain, "m", true).is_none());
        let same = backend(None, Some("m"));
        assert!(prepare_headers_only(Endpoint::ChatCompletions, "", &same, "m", false).is_some());
        let other = backend(None, Some("x"));
        assert!(prepare_headers_only(Endpoint::ChatCompletions, "", &other, "m", false).is_none());
        let bedrock = BackendConfig {
            schema: SchemaName::AWSAnthropic,
            ..Default::default()
        };
        assert!(
            prepare_headers_only(Endpoint::AnthropicMessages, "", &bedrock, "m", false).is_none()
        );
        assert!(
            prepare_headers_only(Endpoint::AnthropicMessages, "", &plain, "m", false).is_none()
        );
    }

    #[test]
    fn prefix_query_and_override() {
        let body = br#"{"model":"m","messages":[],"zeta":1,"alpha":2}"#;
        let r = prepare(
            Endpoint::Embeddings,
            "a=b",
            &backend(Some("/api/v1/"), Some("real")),
            body,
        )
        .unwrap();
        assert_eq!(r.path, "/api/v1/embeddings?a=b");
        let text = String::from_utf8(r.body.unwrap()).unwrap();
        assert_eq!(
            text, r#"{"model":"real","messages":[],"zeta":1,"alpha":2}"#,
            "key order kept"
        );
    }

    #[test]
    fn streaming_asks_for_usage_once() {
        let r = prepare(
            Endpoint::ChatCompletions,
            "",
            &backend(None, None),
            br#"{"model":"m","stream":true,"stream_options":{"x":1}}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
        assert_eq!(
            v["stream_options"],
            serde_json::json!({"x":1,"include_usage":true})
        );
        let r = prepare(
            Endpoint::ChatCompletions,
            "",
            &backend(None, None),
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.body, None);
    }

    #[test]
    fn other_schemas_say_not_supported() {
        let b = BackendConfig {
            schema: SchemaName::GCPVertexAI,
            ..Default::default()
        };
        let e = prepare(Endpoint::AnthropicMessages, "", &b, b"{}").unwrap_err();
        assert!(e.message.contains("not supported yet"));
        assert!(
            e.message.contains("/anthropic/v1/messages"),
            "{}",
            e.message
        );
        // Every endpoint on every schema: a rewrite or a clear 4xx/5xx.
        let schemas = [
            SchemaName::OpenAI,
            SchemaName::Anthropic,
            SchemaName::AWSAnthropic,
            SchemaName::AWSBedrock,
            SchemaName::AzureOpenAI,
            SchemaName::GCPVertexAI,
            SchemaName::GCPAnthropic,
        ];
        let endpoints = [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::AnthropicMessages,
            Endpoint::AnthropicCountTokens,
        ];
        for schema in schemas {
            for endpoint in endpoints {
                let b = BackendConfig {
                    schema,
                    version: Some("2024-10-21".into()),
                    host: Some("bedrock-runtime.us-west-2.amazonaws.com".into()),
                    ..Default::default()
                };
                let body = br#"{"model":"m","input":"x","messages":[{"role":"user","content":"x"}],"prompt":"x","max_tokens":5}"#;
                if let Err(e) = prepare(endpoint, "", &b, body) {
                    assert!(
                        matches!(e.status, 400 | 404 | 500 | 501),
                        "{schema:?} {endpoint:?}: {e}"
                    );
                    assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn credential_headers() {
        let key = Credential::ApiKey("k".into());
        let auth = |kind| BackendAuth {
            kind,
            credential: "c".into(),
            region: None,
            project: None,
        };
        assert_eq!(
            credential_header(&auth(AuthKind::ApiKey), &key).unwrap(),
            Some(("authorization", "Bearer k".into()))
        );
        assert_eq!(
            credential_header(&auth(AuthKind::AnthropicApiKey), &key).unwrap(),
            Some(("x-api-key", "k".into()))
        );
        assert_eq!(
            credential_header(&auth(AuthKind::AzureApiKey), &key).unwrap(),
            Some(("api-key", "k".into()))
        );
        for bearer in [AuthKind::GcpAccessToken, AuthKind::AzureAccessToken] {
            assert_eq!(
                credential_header(&auth(bearer), &key).unwrap(),
                Some(("authorization", "Bearer k".into()))
            );
        }
        assert!(credential_header(&auth(AuthKind::AwsSigV4), &key).is_err());
    }
}
