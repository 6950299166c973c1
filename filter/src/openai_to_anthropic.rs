//! OpenAI chat completions served by Claude: the native Anthropic Messages
//! API (`Anthropic` schema) or Anthropic-on-Bedrock InvokeModel
//! (`AWSAnthropic`, signed like [`crate::bedrock`]).
//!
//! Request: [`Chat`] -> a Messages body. System and developer messages go
//! to `system`; tool calls become `tool_use` blocks and tool messages
//! `tool_result` blocks; `data:` images become base64 image sources and
//! http(s) images URL sources (native API only: Bedrock takes no URLs);
//! `max_completion_tokens`/`max_tokens` (default 4096), `temperature`,
//! `top_p`, `stop` -> `stop_sequences`, `tools`/`tool_choice` (auto, none,
//! required -> any, named -> tool; `parallel_tool_calls: false` ->
//! `disable_parallel_tool_use`), `reasoning_effort` -> `thinking` with a
//! budget, `user` -> `metadata.user_id`.
//!
//! Response: a Messages body -> `chat.completion`, and Messages stream
//! events -> `chat.completion.chunk` events (role first, text deltas, tool
//! calls as header then argument fragments, thinking as
//! `reasoning_content`, the finish reason, the usage chunk when the client
//! asked for it, `[DONE]`). Usage counts the whole prompt as
//! `prompt_tokens` (input + cache reads + cache writes), like
//! [`crate::anthropic`].

use crate::anthropic::{AnthropicUsage, StreamUsage, DEFAULT_VERSION};
use crate::bedrock::{invoke_path, EventStreamToSse, DEFAULT_ANTHROPIC_VERSION};
use crate::chat::{
    tool_call_json, Block, BlockToolCalls, Chat, ChunkWriter, Completion, Image, Role, ToolChoice,
};
use crate::config::{BackendConfig, SchemaName};
use crate::error::GatewayError;
use crate::response::MAX_SSE_EVENT;
use crate::sse::SseSplitter;
use crate::upstream::UpstreamRequest;
use crate::usage::Usage;
use serde_json::{json, Map, Value};

/// Client headers an Anthropic backend must not get for an OpenAI client
/// (the body is rewritten, so the response must not be compressed either).
const REMOVED_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "content-length",
    "accept-encoding",
];

/// The Messages body for `chat`, to be sent as `model` (`None`: no
/// `model` and `stream` fields, as Bedrock wants).
pub fn messages_body(
    chat: &Chat,
    model: Option<&str>,
    urls_allowed: bool,
) -> Result<Value, GatewayError> {
    let mut body = Map::new();
    if let Some(model) = model {
        body.insert("model".into(), Value::String(model.into()));
    }
    body.insert("max_tokens".into(), json!(chat.effective_max_tokens()));
    match chat.system.as_slice() {
        [] => {}
        [one] => {
            body.insert("system".into(), Value::String(one.clone()));
        }
        many => {
            let blocks: Vec<Value> = many
                .iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect();
            body.insert("system".into(), Value::Array(blocks));
        }
    }
    let mut messages = Vec::new();
    for turn in &chat.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content = match turn.blocks.as_slice() {
            [Block::Text(t)] => Value::String(t.clone()),
            blocks => Value::Array(
                blocks
                    .iter()
                    .map(|b| block(b, urls_allowed))
                    .collect::<Result<_, _>>()?,
            ),
        };
        messages.push(json!({"role": role, "content": content}));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = chat.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = chat.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !chat.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(chat.stop));
    }
    if !chat.tools.is_empty() {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    tool["description"] = Value::String(d.clone());
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let choice = match &chat.tool_choice {
        None if chat.parallel_tool_calls == Some(false) && !chat.tools.is_empty() => {
            Some(json!({"type": "auto"}))
        }
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Named(n)) => Some(json!({"type": "tool", "name": n})),
    };
    if let Some(mut choice) = choice {
        if chat.parallel_tool_calls == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        body.insert("tool_choice".into(), choice);
    }
    if let Some(budget) = chat.thinking_budget {
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if let Some(user) = &chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if model.is_some() && chat.stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(body))
}

fn block(b: &Block, urls_allowed: bool) -> Result<Value, GatewayError> {
    Ok(match b {
        Block::Text(t) => json!({"type": "text", "text": t}),
        Block::Image(Image::Base64 { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Block::Image(Image::Url(url)) => {
            if !urls_allowed {
                return Err(GatewayError::bad_request(
                    "this backend takes images only as data: URLs (base64)",
                )
                .with_param("messages")
                .with_code("unsupported_parameter"));
            }
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Block::ToolUse { id, name, input } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Block::ToolResult { id, content } => {
            json!({"type": "tool_result", "tool_use_id": id, "content": content})
        }
    })
}

/// Rewrites an OpenAI chat request for an `Anthropic` or `AWSAnthropic`
/// backend.
pub fn prepare(
    query: &str,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let chat = Chat::parse(body)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&chat.model);
    if backend.schema == SchemaName::AWSAnthropic {
        let mut value = messages_body(&chat, None, false)?;
        let version = backend
            .version
            .as_deref()
            .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
        if let Some(o) = value.as_object_mut() {
            o.insert("anthropic_version".into(), Value::String(version.into()));
        }
        return Ok(UpstreamRequest {
            path: invoke_path(model, chat.stream),
            host: backend.host.clone(),
            body: Some(value.to_string().into_bytes()),
            set_headers: vec![("content-type".into(), "application/json".into())],
            remove_headers: REMOVED_HEADERS.to_vec(),
            default_headers: Vec::new(),
        });
    }
    let value = messages_body(&chat, Some(model), true)?;
    let prefix = backend
        .prefix
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let mut path = format!("{prefix}/v1/messages");
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    Ok(UpstreamRequest {
        path,
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![
            ("content-type".into(), "application/json".into()),
            ("anthropic-version".into(), DEFAULT_VERSION.into()),
        ],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// OpenAI's finish reason for an Anthropic stop reason.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// A Messages response body as a `chat.completion` body, with its usage.
/// `model` and `created` fill what the body does not say.
pub fn completion(body: &[u8], model: &str, created: u64) -> Option<(Vec<u8>, Option<Usage>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = v.as_object()?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    text.get_or_insert_with(String::new).push_str(t);
                }
            }
            Some("thinking") => {
                if let Some(t) = b.get("thinking").and_then(Value::as_str) {
                    reasoning.get_or_insert_with(String::new).push_str(t);
                }
            }
            Some("tool_use") => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let empty = Value::Object(Map::new());
                let input = b.get("input").unwrap_or(&empty);
                tool_calls.push(tool_call_json(id, name, input));
            }
            _ => {}
        }
    }
    let usage = v
        .get("usage")
        .and_then(AnthropicUsage::from_value)
        .map(AnthropicUsage::normalized);
    let c = Completion {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("chatcmpl-aigw")
            .to_string(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string(),
        created,
        text,
        reasoning,
        tool_calls,
        finish_reason: finish_reason(v.get("stop_reason").and_then(Value::as_str)),
        usage,
    };
    Some((c.body(), usage))
}

/// Turns Messages stream events into `chat.completion.chunk` events.
#[derive(Debug)]
pub struct EventsToChunks {
    w: ChunkWriter,
    include_usage: bool,
    usage: StreamUsage,
    /// The tool_use blocks.
    tools: BlockToolCalls,
    started: bool,
    stop_reason: Option<String>,
    finished: bool,
    done: bool,
}

impl EventsToChunks {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        EventsToChunks {
            w: ChunkWriter {
                id: "chatcmpl-aigw".into(),
                model: model.into(),
                created,
            },
            include_usage,
            usage: StreamUsage::default(),
            tools: BlockToolCalls::default(),
            started: false,
            stop_reason: None,
            finished: false,
            done: false,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.w
                .delta(json!({"role": "assistant", "content": ""}), None, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.finished {
            self.start(out);
            self.finished = true;
            let reason = finish_reason(self.stop_reason.as_deref());
            self.w.delta(json!({}), Some(reason), out);
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.finish(out);
        if self.include_usage {
            let u = self.usage.usage().unwrap_or_default();
            self.w.usage(&u, out);
        }
        ChunkWriter::done(out);
        self.done = true;
    }

    /// Fails the stream with an OpenAI error event; nothing follows it.
    pub fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if !self.done {
            ChunkWriter::error(kind, message, out);
            self.done = true;
        }
    }

    /// Translates one event (its JSON).
    pub fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.usage.observe(v);
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = v.get("message");
                if let Some(id) = m.and_then(|m| m.get("id")).and_then(Value::as_str) {
                    self.w.id = id.to_string();
                }
                if let Some(model) = m.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.w.model = model.to_string();
                }
                self.start(out);
            }
            Some("content_block_start") => {
                self.start(out);
                let Some(b) = v.get("content_block") else {
                    return;
                };
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                        self.tools.start(&self.w, index, id, name, out);
                    }
                    Some("text") => {
                        if let Some(t) = b
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.w.delta(json!({"content": t}), None, out);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                self.start(out);
                let Some(d) = v.get("delta") else { return };
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = d.get("text").and_then(Value::as_str) {
                            self.w.delta(json!({"content": t}), None, out);
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = d.get("thinking").and_then(Value::as_str) {
                            self.w.delta(json!({"reasoning_content": t}), None, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(p) = d.get("partial_json").and_then(Value::as_str) {
                            self.tools.arguments(&self.w, index, p, out);
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(r.to_string());
                    self.finish(out);
                }
            }
            Some("message_stop") => self.end(out),
            Some("error") => {
                let e = v.get("error");
                let kind = e
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let message = e
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error");
                self.fail(kind, message, out);
            }
            _ => {}
        }
    }

    /// Call at the end of the upstream body.
    pub fn close(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.finished {
            // Finished but no message_stop: close the stream properly.
            self.end(out);
        } else {
            self.fail(
                "api_error",
                "the provider's stream ended before the message was complete",
                out,
            );
        }
    }
}

/// Native Anthropic SSE -> OpenAI chunks.
#[derive(Debug)]
pub struct SseToChunks {
    splitter: SseSplitter,
    chunks: EventsToChunks,
}

impl SseToChunks {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        SseToChunks {
            splitter: SseSplitter::default(),
            chunks: EventsToChunks::new(model, created, include_usage),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.chunks.usage()
    }

    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.chunks.is_done() {
            return out;
        }
        for e in self.splitter.push(chunk) {
            if e.data.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&e.data) {
                Ok(v) => self.chunks.event(&v, &mut out),
                Err(_) => self.chunks.fail(
                    "api_error",
                    "the provider sent a stream event that is not JSON",
                    &mut out,
                ),
            }
        }
        if self.splitter.pending_len() > MAX_SSE_EVENT {
            self.splitter.take_rest();
            self.chunks.fail(
                "api_error",
                "the provider sent a stream event too large to translate",
                &mut out,
            );
        }
        if end_of_stream {
            self.chunks.close(&mut out);
        }
        out
    }
}

/// Bedrock InvokeModel event-stream -> Anthropic SSE -> OpenAI chunks.
#[derive(Debug)]
pub struct EventStreamToChunks {
    bedrock: EventStreamToSse,
    sse: SseToChunks,
    /// The Anthropic SSE the last chunk decoded to: what the provider said,
    /// readable (the event-stream frames carry it base64-encoded).
    decoded: Vec<u8>,
}

impl EventStreamToChunks {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        EventStreamToChunks {
            bedrock: EventStreamToSse::default(),
            sse: SseToChunks::new(model, created, include_usage),
            decoded: Vec::new(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.sse.usage()
    }

    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let sse = self.bedrock.push(chunk, end_of_stream);
        let out = self.sse.push(&sse, end_of_stream);
        self.decoded = sse;
        out
    }

    /// The provider's events from the last [`push`](Self::push), as SSE.
    pub fn decoded(&self) -> &[u8] {
        &self.decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKind, BackendAuth};

    fn native() -> BackendConfig {
        BackendConfig {
            schema: SchemaName::Anthropic,
            host: Some("api.anthropic.com".into()),
            ..Default::default()
        }
    }

    fn bedrock() -> BackendConfig {
        BackendConfig {
            schema: SchemaName::AWSAnthropic,
            version: Some("bedrock-2023-05-31".into()),
            host: Some("bedrock-runtime.us-west-2.amazonaws.com".into()),
            auth: Some(BackendAuth {
                kind: AuthKind::AwsSigV4,
                credential: "c".into(),
                region: Some("us-west-2".into()),
                project: None,
            }),
            ..Default::default()
        }
    }

    const REQUEST: &str = r#"{"model":"claude","stream":true,"messages":[
        {"role":"system","content":"be brief"},
        {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]},
        {"role":"assistant","content":"calling","tool_calls":[{"id":"t1","type":"function","function":{"name":"get","arguments":"{\"q\":\"x\"}"}}]},
        {"role":"tool","tool_call_id":"t1","content":"42"},
        {"role":"user","content":"so?"}],
        "max_completion_tokens":100,"temperature":0.2,"top_p":0.5,"stop":["END"],
        "tools":[{"type":"function","function":{"name":"get","description":"gets","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}],
        "tool_choice":"required","parallel_tool_calls":false,"user":"u-1"}"#;

    #[test]
    fn golden_native_request() {
        let r = prepare("", &native(), REQUEST.as_bytes()).unwrap();
        assert_eq!(r.path, "/v1/messages");
        assert!(r
            .set_headers
            .contains(&("anthropic-version".into(), "2023-06-01".into())));
        assert!(r.remove_headers.contains(&"accept-encoding"));
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            concat!(
                r#"{"model":"claude","max_tokens":100,"system":"be brief","messages":["#,
                r#"{"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBO"}}]},"#,
                r#"{"role":"assistant","content":[{"type":"text","text":"calling"},{"type":"tool_use","id":"t1","name":"get","input":{"q":"x"}}]},"#,
                r#"{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"42"},{"type":"text","text":"so?"}]}],"#,
                r#""temperature":0.2,"top_p":0.5,"stop_sequences":["END"],"#,
                r#""tools":[{"name":"get","input_schema":{"type":"object","properties":{"q":{"type":"string"}}},"description":"gets"}],"#,
                r#""tool_choice":{"type":"any","disable_parallel_tool_use":true},"metadata":{"user_id":"u-1"},"stream":true}"#
            )
        );
    }

    #[test]
    fn golden_bedrock_request() {
        let mut b = bedrock();
        b.model_name_override = Some("anthropic.claude-3-haiku-20240307-v1:0".into());
        let body = br#"{"model":"claude","stream":true,"reasoning_effort":"low","messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        let r = prepare("", &b, body).unwrap();
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
        );
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            concat!(
                r#"{"max_tokens":5120,"messages":[{"role":"user","content":"hi"}],"#,
                r#""tools":[{"name":"f","input_schema":{"type":"object","properties":{}}}],"#,
                r#""tool_choice":{"type":"tool","name":"f"},"thinking":{"type":"enabled","budget_tokens":1024},"#,
                r#""anthropic_version":"bedrock-2023-05-31"}"#
            )
        );
        let url = br#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        assert_eq!(prepare("", &b, url).unwrap_err().status, 400);
        let r = prepare("", &native(), url).unwrap();
        assert!(String::from_utf8(r.body.unwrap())
            .unwrap()
            .contains(r#"{"type":"image","source":{"type":"url","url":"https://x/y.png"}}"#));
        let none = br#"{"model":"c","messages":[{"role":"user","content":"x"}],"tool_choice":"none","max_tokens":9,"n":1}"#;
        let r = prepare("", &native(), none).unwrap();
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            r#"{"model":"c","max_tokens":9,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"none"}}"#
        );
        assert_eq!(
            prepare(
                "",
                &native(),
                br#"{"model":"c","messages":[{"role":"user","content":"x"}],"n":3}"#
            )
            .unwrap_err()
            .status,
            400
        );
    }

    #[test]
    fn golden_completion() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Let me check."},
                       {"type":"tool_use","id":"toolu_1","name":"get","input":{"q":"x"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":3,"cache_creation_input_tokens":2}}"#;
        let (out, usage) = completion(body, "claude", 7).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"id":"msg_1","object":"chat.completion","created":7,"model":"claude-x","choices":[{"index":0,"#,
                r#""message":{"role":"assistant","content":"Let me check.","reasoning_content":"hmm","#,
                r#""tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get","arguments":"{\"q\":\"x\"}"}}]},"#,
                r#""logprobs":null,"finish_reason":"tool_calls"}],"#,
                r#""usage":{"prompt_tokens":15,"completion_tokens":5,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":0}}}"#
            )
        );
        assert_eq!(usage.unwrap().total, 20);
        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
        ] {
            assert_eq!(finish_reason(Some(reason)), want);
        }
        let (out, usage) = completion(br#"{"content":7}"#, "m", 1).unwrap();
        assert!(usage.is_none());
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(r#""content":null"#));
        assert!(completion(b"nope", "m", 1).is_none());
    }

    pub(crate) const EVENTS: [&str; 12] = [
        r#"{"type":"message_start","message":{"id":"msg_9","type":"message","role":"assistant","content":[],"model":"claude-x","usage":{"input_tokens":20,"cache_read_input_tokens":4,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\": \"x\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    const PREFIX: &str = r#"data: {"id":"msg_9","object":"chat.completion.chunk","created":7,"model":"claude-x","choices":[{"index":0,"delta":"#;

    pub(crate) fn want_chunks(include_usage: bool) -> String {
        let deltas = [
            r#"{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"content":"Hi "},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"content":"there"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"get","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\": \"x\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
        ];
        let mut want: String = deltas.iter().map(|d| format!("{PREFIX}{d}\n\n")).collect();
        if include_usage {
            want.push_str(r#"data: {"id":"msg_9","object":"chat.completion.chunk","created":7,"model":"claude-x","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":9,"total_tokens":33,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}}"#);
            want.push_str("\n\n");
        }
        want.push_str("data: [DONE]\n\n");
        want
    }

    fn sse_stream() -> String {
        EVENTS
            .iter()
            .map(|e| {
                let v: Value = serde_json::from_str(e).unwrap();
                format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
            })
            .collect()
    }

    #[test]
    fn golden_sse_stream_at_every_chunking() {
        let stream = sse_stream();
        let bytes = stream.as_bytes();
        for include_usage in [false, true] {
            let want = want_chunks(include_usage);
            for size in 1..=bytes.len() {
                let mut t = SseToChunks::new("claude", 7, include_usage);
                let mut out = Vec::new();
                let parts: Vec<&[u8]> = bytes.chunks(size).collect();
                for (i, p) in parts.iter().enumerate() {
                    out.extend(t.push(p, i + 1 == parts.len()));
                }
                assert_eq!(String::from_utf8(out).unwrap(), want, "size {size}");
                let u = t.usage().unwrap();
                assert_eq!((u.input, u.output, u.total, u.cached_input), (24, 9, 33, 4));
            }
        }
    }

    #[test]
    fn golden_bedrock_stream_at_every_chunking() {
        use crate::eventstream::{encode, Header};
        let mut stream = Vec::new();
        for e in EVENTS {
            let payload = json!({"bytes": b64(e.as_bytes())}).to_string();
            stream.extend(encode(
                &[
                    Header::string(":event-type", "chunk"),
                    Header::string(":content-type", "application/json"),
                    Header::string(":message-type", "event"),
                ],
                payload.as_bytes(),
            ));
        }
        let want = want_chunks(true);
        for size in 1..=stream.len() {
            let mut t = EventStreamToChunks::new("claude", 7, true);
            let mut out = Vec::new();
            let mut decoded = Vec::new();
            let parts: Vec<&[u8]> = stream.chunks(size).collect();
            for (i, p) in parts.iter().enumerate() {
                out.extend(t.push(p, i + 1 == parts.len()));
                decoded.extend_from_slice(t.decoded());
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "size {size}");
            // The provider's model is readable once decoded (for the metrics).
            assert_eq!(
                crate::metrics::find_model(&decoded).as_deref(),
                Some("claude-x"),
                "size {size}"
            );
        }
        // An exception frame becomes an OpenAI error event.
        let mut t = EventStreamToChunks::new("claude", 7, false);
        let mut bad = stream[..100].to_vec();
        let first_len = u32::from_be_bytes([stream[0], stream[1], stream[2], stream[3]]) as usize;
        bad.truncate(0);
        bad.extend_from_slice(&stream[..first_len]);
        bad.extend(encode(
            &[
                Header::string(":exception-type", "throttlingException"),
                Header::string(":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        let out = String::from_utf8(t.push(&bad, true)).unwrap();
        assert!(
            out.ends_with(
                "data: {\"error\":{\"message\":\"throttlingException: slow down\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":null}}\n\n"
            ),
            "{out}"
        );
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn errors_and_truncation() {
        let mut t = SseToChunks::new("m", 1, false);
        let out = String::from_utf8(t.push(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            false,
        ))
        .unwrap();
        assert_eq!(
            out,
            "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"param\":null,\"code\":null}}\n\n"
        );
        assert!(t
            .push(b"data: {\"type\":\"message_stop\"}\n\n", true)
            .is_empty());
        let mut t = SseToChunks::new("m", 1, false);
        let stream = sse_stream();
        let out = String::from_utf8(t.push(&stream.as_bytes()[..400], true)).unwrap();
        assert!(
            out.contains("ended before the message was complete"),
            "{out}"
        );
        let mut t = SseToChunks::new("m", 1, false);
        let out = String::from_utf8(t.push(b"data: {nope\n\n", true)).unwrap();
        assert!(out.contains("not JSON"));
    }
}
