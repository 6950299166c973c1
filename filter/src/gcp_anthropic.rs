//! Claude on Google Vertex AI (`GCPAnthropic`): the Anthropic Messages
//! body, without `model` and with `anthropic_version` (the backend's
//! `schema.version`, default `vertex-2023-10-16`), goes to
//! `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`
//! (`:streamRawPredict` when `stream` is true). The answer is Anthropic's
//! own JSON or SSE, handled like the native API's. The project and region
//! come from the backend's GCPCredentials policy; the host from its Backend.
//!
//! OpenAI chat clients reuse [`crate::openai_to_anthropic`]'s translation.

use crate::chat::Chat;
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::openai_to_anthropic::messages_body;
use crate::request::{parse_request, Endpoint};
use crate::upstream::UpstreamRequest;
use serde_json::{Map, Value};

/// `anthropic_version` when the backend names none.
pub const DEFAULT_VERSION: &str = "vertex-2023-10-16";
/// Client headers Vertex must not see: the version goes in the body.
const REMOVED_HEADERS: &[&str] = &["anthropic-version", "content-length"];
/// For translated OpenAI requests, whose answer is rewritten too.
const REMOVED_FOR_CHAT: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "content-length",
    "accept-encoding",
];

/// The rawPredict path of `model` for this backend.
pub fn predict_path(
    backend: &BackendConfig,
    model: &str,
    stream: bool,
) -> Result<String, GatewayError> {
    let auth = backend.auth.as_ref();
    let project = auth
        .and_then(|a| a.project.as_deref())
        .filter(|p| !p.is_empty());
    let region = auth
        .and_then(|a| a.region.as_deref())
        .filter(|r| !r.is_empty());
    let (Some(project), Some(region)) = (project, region) else {
        return Err(GatewayError::internal(
            "a GCPAnthropic backend needs a GCPCredentials policy with projectName and region",
        ));
    };
    let action = if stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    Ok(format!(
        "/v1/projects/{}/locations/{}/publishers/anthropic/models/{}:{action}",
        segment(project),
        segment(region),
        segment(model)
    ))
}

/// Percent-encodes what may not stand in a path segment (a model name such
/// as `claude-sonnet-4@20250514` keeps its `@`).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn with_version(object: &mut Map<String, Value>, backend: &BackendConfig) {
    if !object.contains_key("anthropic_version") {
        let version = backend.version.as_deref().unwrap_or(DEFAULT_VERSION);
        object.insert("anthropic_version".into(), Value::String(version.into()));
    }
}

/// Rewrites an Anthropic Messages request for Vertex AI.
pub fn prepare(
    endpoint: Endpoint,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    match endpoint {
        Endpoint::AnthropicMessages => {}
        Endpoint::AnthropicCountTokens => {
            return Err(GatewayError::client(
                501,
                "count_tokens is not available on a GCPAnthropic (Vertex AI) backend",
            )
            .with_code("unsupported_endpoint"))
        }
        _ => {
            return Err(GatewayError::client(
                404,
                "this endpoint is not available on a GCPAnthropic backend; use /anthropic/v1/messages or /v1/chat/completions",
            ))
        }
    }
    let facts = parse_request(endpoint, body)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&facts.model);
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
    object.shift_remove("model");
    with_version(object, backend);
    Ok(UpstreamRequest {
        path: predict_path(backend, model, facts.stream)?,
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// Rewrites an OpenAI chat request for Vertex AI's Claude.
pub fn prepare_chat(backend: &BackendConfig, body: &[u8]) -> Result<UpstreamRequest, GatewayError> {
    let chat = Chat::parse(body)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&chat.model);
    // Image URLs are refused like for Bedrock: Vertex takes base64 only.
    let mut value = messages_body(&chat, None, false)?;
    if let Some(object) = value.as_object_mut() {
        if chat.stream {
            object.insert("stream".into(), Value::Bool(true));
        }
        with_version(object, backend);
    }
    Ok(UpstreamRequest {
        path: predict_path(backend, model, chat.stream)?,
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_FOR_CHAT.to_vec(),
        default_headers: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKind, BackendAuth, SchemaName};
    use serde_json::json;

    fn backend(version: Option<&str>) -> BackendConfig {
        BackendConfig {
            schema: SchemaName::GCPAnthropic,
            version: version.map(str::to_string),
            host: Some("us-east5-aiplatform.googleapis.com".into()),
            auth: Some(BackendAuth {
                kind: AuthKind::GcpAccessToken,
                credential: "default/gcp".into(),
                region: Some("us-east5".into()),
                project: Some("my-project".into()),
            }),
            ..Default::default()
        }
    }

    fn body_of(r: &UpstreamRequest) -> Value {
        serde_json::from_slice(r.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn messages_go_to_raw_predict_without_model() {
        let body = br#"{"model":"claude-sonnet-4@20250514","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
        let r = prepare(Endpoint::AnthropicMessages, &backend(None), body).unwrap();
        assert_eq!(
            r.path,
            "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        assert_eq!(
            r.host.as_deref(),
            Some("us-east5-aiplatform.googleapis.com")
        );
        assert_eq!(
            String::from_utf8(r.body.clone().unwrap()).unwrap(),
            r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}],"anthropic_version":"vertex-2023-10-16"}"#
        );
        assert!(r.remove_headers.contains(&"anthropic-version"));
        assert!(r.remove_headers.contains(&"content-length"));
    }

    #[test]
    fn streams_use_stream_raw_predict_and_keep_the_flag() {
        let body = br#"{"model":"m","stream":true,"max_tokens":1,"messages":[],"anthropic_version":"client-v"}"#;
        let mut b = backend(Some("vertex-2099-01-01"));
        b.model_name_override = Some("claude x/y".into());
        let r = prepare(Endpoint::AnthropicMessages, &b, body).unwrap();
        assert!(
            r.path.ends_with("/models/claude%20x%2Fy:streamRawPredict"),
            "{}",
            r.path
        );
        let v = body_of(&r);
        assert_eq!(v["stream"], json!(true));
        assert_eq!(
            v["anthropic_version"],
            json!("client-v"),
            "the client's wins"
        );
        assert!(v.get("model").is_none());
        let r = prepare(
            Endpoint::AnthropicMessages,
            &b,
            br#"{"model":"m","max_tokens":1,"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(body_of(&r)["anthropic_version"], json!("vertex-2099-01-01"));
    }

    #[test]
    fn openai_chat_is_translated() {
        let body = br#"{"model":"claude-haiku","stream":true,"max_tokens":9,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let r = prepare_chat(&backend(None), body).unwrap();
        assert!(r.path.ends_with("/models/claude-haiku:streamRawPredict"));
        assert_eq!(
            body_of(&r),
            json!({"max_tokens":9,"system":"be brief","messages":[{"role":"user","content":"hi"}],
                   "stream":true,"anthropic_version":"vertex-2023-10-16"})
        );
        let r = prepare_chat(
            &backend(None),
            br#"{"model":"claude-haiku","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert!(r.path.ends_with(":rawPredict"));
        assert!(body_of(&r).get("stream").is_none());
        assert!(r.remove_headers.contains(&"accept-encoding"));
    }

    #[test]
    fn errors_are_clear() {
        let e = prepare(Endpoint::AnthropicCountTokens, &backend(None), b"{}").unwrap_err();
        assert_eq!(e.status, 501);
        assert!(e.message.contains("count_tokens"));
        let e = prepare(Endpoint::Embeddings, &backend(None), b"{}").unwrap_err();
        assert_eq!(e.status, 404);
        let mut no_project = backend(None);
        no_project.auth = None;
        let e = prepare(
            Endpoint::AnthropicMessages,
            &no_project,
            br#"{"model":"m","max_tokens":1,"messages":[]}"#,
        )
        .unwrap_err();
        assert!(
            e.message.contains("projectName and region"),
            "{}",
            e.message
        );
    }
}
