//! Anthropic Messages responses: usage from a JSON body and from the
//! stream events (`message_start`, `message_delta`), shared by the native
//! Anthropic API and Claude on Bedrock, whose payloads are the same.
//!
//! Input tokens are counted as the whole prompt, like OpenAI's
//! `prompt_tokens`: Anthropic's `input_tokens` (the uncached part) plus
//! `cache_read_input_tokens` plus `cache_creation_input_tokens`; the two
//! cache counts are also reported on their own.

use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::request::{parse_request, Endpoint};
use crate::upstream::UpstreamRequest;
use crate::usage::Usage;
use serde_json::Value;

/// `anthropic-version` sent when the client gives none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// Rewrites a Messages request for a native Anthropic backend: the same
/// API, so only the path, the model (`modelNameOverride`) and a default
/// `anthropic-version` header.
pub fn prepare(
    endpoint: Endpoint,
    query: &str,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let suffix = match endpoint {
        Endpoint::AnthropicMessages => "/v1/messages",
        Endpoint::AnthropicCountTokens => "/v1/messages/count_tokens",
        _ => return Err(GatewayError::client(
            404,
            "this endpoint is not available on an Anthropic backend; use /anthropic/v1/messages",
        )),
    };
    let prefix = backend
        .prefix
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let mut path = format!("{prefix}{suffix}");
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    let facts = parse_request(endpoint, body)?;
    let body = match backend
        .model_name_override
        .as_deref()
        .filter(|m| *m != facts.model)
    {
        Some(model) => {
            let mut value: Value = serde_json::from_slice(body)
                .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
            let object = value
                .as_object_mut()
                .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
            object.insert("model".into(), Value::String(model.into()));
            Some(value.to_string().into_bytes())
        }
        None => None,
    };
    Ok(UpstreamRequest {
        path,
        host: backend.host.clone(),
        body,
        set_headers: Vec::new(),
        remove_headers: Vec::new(),
        default_headers: vec![("anthropic-version".into(), DEFAULT_VERSION.into())],
    })
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// What an Anthropic `usage` object says, field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnthropicUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
}

impl AnthropicUsage {
    pub fn from_value(usage: &Value) -> Option<AnthropicUsage> {
        if !usage.is_object() {
            return None;
        }
        Some(AnthropicUsage {
            input_tokens: count(usage, "input_tokens").unwrap_or(0),
            output_tokens: count(usage, "output_tokens").unwrap_or(0),
            cache_read_input_tokens: count(usage, "cache_read_input_tokens").unwrap_or(0),
            cache_creation_input_tokens: count(usage, "cache_creation_input_tokens").unwrap_or(0),
        })
    }

    pub fn normalized(self) -> Usage {
        let input = self
            .input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens);
        Usage {
            input,
            output: self.output_tokens,
            total: input.saturating_add(self.output_tokens),
            cached_input: self.cache_read_input_tokens,
            cache_creation_input: self.cache_creation_input_tokens,
            reasoning: 0,
        }
    }
}

/// The usage of a whole (non-streaming) Messages response body.
pub fn usage_from_body(body: &[u8]) -> Option<Usage> {
    let usage = crate::usage::usage_object(body)?;
    AnthropicUsage::from_value(&usage).map(AnthropicUsage::normalized)
}

/// Follows the usage of a Messages stream, one event at a time.
#[derive(Debug, Clone, Default)]
pub struct StreamUsage {
    usage: Option<AnthropicUsage>,
    complete: bool,
}

impl StreamUsage {
    /// Whether `message_stop` or an error event was seen: the stream did
    /// not just stop.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Reads one stream event's JSON.
    pub fn observe(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_stop" | "error") => self.complete = true,
            Some("message_start") => {
                if let Some(u) = event
                    .get("message")
                    .and_then(|m| m.get("usage"))
                    .and_then(AnthropicUsage::from_value)
                {
                    self.usage = Some(u);
                }
            }
            Some("message_delta") => {
                let Some(delta) = event.get("usage") else {
                    return;
                };
                let u = self.usage.get_or_insert_with(Default::default);
                // output_tokens is cumulative; input counts appear here only
                // in newer API versions and then replace the start's.
                if let Some(n) = count(delta, "output_tokens") {
                    u.output_tokens = n;
                }
                if let Some(n) = count(delta, "input_tokens") {
                    u.input_tokens = n;
                }
                if let Some(n) = count(delta, "cache_read_input_tokens") {
                    u.cache_read_input_tokens = n;
                }
                if let Some(n) = count(delta, "cache_creation_input_tokens") {
                    u.cache_creation_input_tokens = n;
                }
            }
            _ => {}
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthropicUsage::normalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn native_request() {
        let backend = BackendConfig {
            schema: crate::config::SchemaName::Anthropic,
            host: Some("api.anthropic.com".into()),
            ..Default::default()
        };
        let body = br#"{"model":"claude","max_tokens":5,"messages":[]}"#;
        let r = prepare(Endpoint::AnthropicMessages, "beta=true", &backend, body).unwrap();
        assert_eq!(r.path, "/v1/messages?beta=true");
        assert_eq!(r.body, None, "the client's bytes go as they came");
        assert_eq!(
            r.default_headers,
            vec![("anthropic-version".to_string(), "2023-06-01".to_string())]
        );
        let r = prepare(Endpoint::AnthropicCountTokens, "", &backend, body).unwrap();
        assert_eq!(r.path, "/v1/messages/count_tokens");
        let mut b = backend.clone();
        b.model_name_override = Some("claude-real".into());
        b.prefix = Some("/proxy/".into());
        let r = prepare(Endpoint::AnthropicMessages, "", &b, body).unwrap();
        assert_eq!(r.path, "/proxy/v1/messages");
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            r#"{"model":"claude-real","max_tokens":5,"messages":[]}"#
        );
        assert_eq!(
            prepare(Endpoint::ChatCompletions, "", &backend, body)
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn body_usage_counts_cache_as_input() {
        let body = br#"{"type":"message","content":[],"usage":{"input_tokens":10,"output_tokens":5,
            "cache_read_input_tokens":3,"cache_creation_input_tokens":2}}"#;
        assert_eq!(
            usage_from_body(body),
            Some(Usage {
                input: 15,
                output: 5,
                total: 20,
                cached_input: 3,
                cache_creation_input: 2,
                reasoning: 0
            })
        );
        assert_eq!(usage_from_body(b"{}"), None);
        assert_eq!(usage_from_body(b"not json"), None);
        assert_eq!(usage_from_body(br#"{"usage":7}"#), None);
    }

    #[test]
    fn stream_usage_from_start_and_last_delta() {
        let mut s = StreamUsage::default();
        assert_eq!(s.usage(), None);
        s.observe(&json!({"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}));
        s.observe(&json!({"type":"content_block_delta","delta":{"text":"x"}}));
        s.observe(&json!({"type":"message_delta","usage":{"output_tokens":4}}));
        s.observe(&json!({"type":"message_delta","usage":{"output_tokens":9}}));
        let u = s.usage().unwrap();
        assert_eq!((u.input, u.output, u.total), (12, 9, 21));
        s.observe(&json!({"type":"message_delta","usage":{"output_tokens":"x"}}));
        assert_eq!(s.usage().unwrap().output, 9, "junk is ignored");
    }
}
