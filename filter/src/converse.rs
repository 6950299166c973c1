//! OpenAI chat completions served by AWS Bedrock's Converse API
//! (`AWSBedrock` schema): `POST /model/{id}/converse` and
//! `/converse-stream`, signed with SigV4 like [`crate::bedrock`].
//!
//! Request: [`Chat`] -> `messages` (text, image bytes from `data:` URLs,
//! `toolUse`, `toolResult`), `system`, `inferenceConfig` (`maxTokens`,
//! `temperature`, `topP`, `stopSequences`), `toolConfig` (tools;
//! `toolChoice` auto, required -> any, named -> tool). Converse has no
//! `none` tool choice: the tools are left out instead, and a conversation
//! that already holds tool calls (which needs the tools declared) gets a
//! 400. http(s) image URLs get a 400 (Converse takes bytes or S3 only).
//! `reasoning_effort` becomes `additionalModelRequestFields.thinking`,
//! which Claude models on Bedrock read.
//!
//! Response: `output.message.content` -> `chat.completion`; `stopReason`
//! -> `finish_reason`; usage: `prompt_tokens` = `inputTokens` +
//! `cacheReadInputTokens` + `cacheWriteInputTokens`, `completion_tokens` =
//! `outputTokens`, `cached_tokens` = `cacheReadInputTokens`. The
//! ConverseStream event-stream (`messageStart`, `contentBlockStart`,
//! `contentBlockDelta`, `contentBlockStop`, `messageStop`, `metadata`)
//! becomes `chat.completion.chunk` events; an exception frame becomes an
//! OpenAI error event that ends the stream.

use crate::bedrock::{translate_stream, StreamTranslation};
use crate::chat::{
    tool_call_json, Block, BlockToolCalls, Chat, ChunkWriter, Completion, Image, Role, ToolChoice,
};
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::eventstream::{Decoder, Message};
use crate::sigv4;
use crate::upstream::UpstreamRequest;
use crate::usage::Usage;
use serde_json::{json, Map, Value};

const REMOVED_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "content-length",
    "accept-encoding",
];

/// The Converse path for `model`.
pub fn converse_path(model: &str, stream: bool) -> String {
    let action = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!(
        "/model/{}/{action}",
        sigv4::uri_encode(model.as_bytes(), true)
    )
}

fn bad(message: &str) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param("messages")
        .with_code("unsupported_parameter")
}

fn image_format(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

fn block(b: &Block) -> Result<Value, GatewayError> {
    Ok(match b {
        Block::Text(t) => json!({"text": t}),
        Block::Image(Image::Base64 { media_type, data }) => {
            let format = image_format(media_type)
                .ok_or_else(|| bad("Bedrock takes png, jpeg, gif and webp images"))?;
            json!({"image": {"format": format, "source": {"bytes": data}}})
        }
        Block::Image(Image::Url(_)) => {
            return Err(bad(
                "Bedrock takes images only as data: URLs (base64), not http(s) URLs",
            ))
        }
        Block::ToolUse { id, name, input } => {
            json!({"toolUse": {"toolUseId": id, "name": name, "input": input}})
        }
        Block::ToolResult { id, content } => {
            json!({"toolResult": {"toolUseId": id, "content": [{"text": content}]}})
        }
    })
}

/// The Converse body for `chat`.
pub fn converse_body(chat: &Chat) -> Result<Value, GatewayError> {
    let mut body = Map::new();
    let mut messages = Vec::new();
    for turn in &chat.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let content: Vec<Value> = turn.blocks.iter().map(block).collect::<Result<_, _>>()?;
        messages.push(json!({"role": role, "content": content}));
    }
    body.insert("messages".into(), Value::Array(messages));
    if !chat.system.is_empty() {
        let system: Vec<Value> = chat.system.iter().map(|t| json!({"text": t})).collect();
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if chat.max_tokens.is_some() || chat.thinking_budget.is_some() {
        inference.insert("maxTokens".into(), json!(chat.effective_max_tokens()));
    }
    if let Some(t) = chat.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = chat.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !chat.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(chat.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let declare_tools = !chat.tools.is_empty()
        && (chat.tool_choice != Some(ToolChoice::None) || chat.has_tool_blocks());
    if chat.tool_choice == Some(ToolChoice::None) && chat.has_tool_blocks() {
        return Err(GatewayError::bad_request(
            "tool_choice none is not supported by Bedrock Converse in a conversation with tool calls",
        )
        .with_param("tool_choice")
        .with_code("unsupported_parameter"));
    }
    if declare_tools {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = &t.description {
                    spec["description"] = Value::String(d.clone());
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        match &chat.tool_choice {
            Some(ToolChoice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Named(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            Some(ToolChoice::None) | None => {}
        }
        body.insert("toolConfig".into(), config);
    }
    if let Some(budget) = chat.thinking_budget {
        body.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    Ok(Value::Object(body))
}

/// Rewrites an OpenAI chat request for an `AWSBedrock` backend.
pub fn prepare(backend: &BackendConfig, body: &[u8]) -> Result<UpstreamRequest, GatewayError> {
    let chat = Chat::parse(body)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&chat.model);
    let value = converse_body(&chat)?;
    Ok(UpstreamRequest {
        path: converse_path(model, chat.stream),
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// A Converse `usage` object, normalized.
pub fn usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cache_read = n("cacheReadInputTokens");
    let cache_write = n("cacheWriteInputTokens");
    let input = n("inputTokens")
        .saturating_add(cache_read)
        .saturating_add(cache_write);
    let output = n("outputTokens");
    Some(Usage {
        input,
        output,
        total: input.saturating_add(output),
        cached_input: cache_read,
        cache_creation_input: cache_write,
        reasoning: 0,
    })
}

/// OpenAI's finish reason for a Converse stop reason.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened") | Some("content_filtered") => "content_filter",
        _ => "stop",
    }
}

/// A Converse response body as a `chat.completion` body, with its usage.
pub fn completion(
    body: &[u8],
    id: &str,
    model: &str,
    created: u64,
) -> Option<(Vec<u8>, Option<Usage>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = v.as_object()?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    let content = v
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array);
    for b in content.into_iter().flatten() {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.get_or_insert_with(String::new).push_str(t);
        } else if let Some(t) = b
            .get("reasoningContent")
            .and_then(|r| r.get("reasoningText"))
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str)
        {
            reasoning.get_or_insert_with(String::new).push_str(t);
        } else if let Some(u) = b.get("toolUse") {
            let id = u.get("toolUseId").and_then(Value::as_str).unwrap_or("");
            let name = u.get("name").and_then(Value::as_str).unwrap_or("");
            let empty = Value::Object(Map::new());
            tool_calls.push(tool_call_json(id, name, u.get("input").unwrap_or(&empty)));
        }
    }
    let usage = v.get("usage").and_then(usage);
    let c = Completion {
        id: id.to_string(),
        model: model.to_string(),
        created,
        text,
        reasoning,
        tool_calls,
        finish_reason: finish_reason(v.get("stopReason").and_then(Value::as_str)),
        usage,
    };
    Some((c.body(), usage))
}

/// OpenAI's error type for a Bedrock exception name.
pub fn error_type(exception: &str) -> &'static str {
    let e = exception.to_ascii_lowercase();
    match e.as_str() {
        "throttlingexception" => "rate_limit_exceeded",
        "validationexception" => "invalid_request_error",
        "accessdeniedexception" => "permission_error",
        _ => "api_error",
    }
}

/// ConverseStream's event-stream -> OpenAI chunks, as it arrives.
#[derive(Debug)]
pub struct StreamToChunks {
    decoder: Decoder,
    w: ChunkWriter,
    include_usage: bool,
    usage: Option<Usage>,
    /// The toolUse blocks.
    tools: BlockToolCalls,
    started: bool,
    stop_reason: Option<String>,
    finished: bool,
    done: bool,
}

impl StreamToChunks {
    pub fn new(id: &str, model: &str, created: u64, include_usage: bool) -> Self {
        StreamToChunks {
            decoder: Decoder::default(),
            w: ChunkWriter {
                id: id.into(),
                model: model.into(),
                created,
            },
            include_usage,
            usage: None,
            tools: BlockToolCalls::default(),
            started: false,
            stop_reason: None,
            finished: false,
            done: false,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        translate_stream(self, chunk, end_of_stream)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.w
                .delta(json!({"role": "assistant", "content": ""}), None, out);
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.finished {
            self.start(out);
            self.finished = true;
            self.w.delta(
                json!({}),
                Some(finish_reason(self.stop_reason.as_deref())),
                out,
            );
        }
        if self.include_usage {
            self.w.usage(&self.usage.unwrap_or_default(), out);
        }
        ChunkWriter::done(out);
        self.done = true;
    }
}

impl StreamTranslation for StreamToChunks {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn ended(&self) -> bool {
        self.done
    }

    fn exception_type(exception: &str) -> &'static str {
        error_type(exception)
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if !self.done {
            ChunkWriter::error(kind, message, out);
            self.done = true;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if self.finished {
            self.end(out);
        }
        self.finished
    }

    fn event(&mut self, m: &Message, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
            self.fail(
                "api_error",
                "Bedrock sent a stream event that is not JSON",
                out,
            );
            return;
        };
        match m.header_str(":event-type") {
            Some("messageStart") => self.start(out),
            Some("contentBlockStart") => {
                self.start(out);
                if let Some(t) = v.get("start").and_then(|s| s.get("toolUse")) {
                    let index = v
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let id = t.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                    self.tools.start(&self.w, index, id, name, out);
                }
            }
            Some("contentBlockDelta") => {
                self.start(out);
                let Some(d) = v.get("delta") else { return };
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    self.w.delta(json!({"content": t}), None, out);
                } else if let Some(input) = d
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    let index = v
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    self.tools.arguments(&self.w, index, input, out);
                } else if let Some(t) = d
                    .get("reasoningContent")
                    .and_then(|r| r.get("text"))
                    .and_then(Value::as_str)
                {
                    self.w.delta(json!({"reasoning_content": t}), None, out);
                }
            }
            Some("messageStop") => {
                self.stop_reason = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.start(out);
                self.finished = true;
                self.w.delta(
                    json!({}),
                    Some(finish_reason(self.stop_reason.as_deref())),
                    out,
                );
            }
            Some("metadata") => {
                if let Some(u) = v.get("usage").and_then(usage) {
                    self.usage = Some(u);
                }
                self.end(out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchemaName;
    use crate::eventstream::{encode, Header};

    fn backend() -> BackendConfig {
        BackendConfig {
            schema: SchemaName::AWSBedrock,
            host: Some("bedrock-runtime.us-east-1.amazonaws.com".into()),
            model_name_override: Some("us.amazon.nova-pro-v1:0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn golden_request() {
        let body = br#"{"model":"nova","stream":true,"messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/"}}]},
            {"role":"assistant","tool_calls":[{"id":"t1","type":"function","function":{"name":"get","arguments":"{\"q\":1}"}}]},
            {"role":"tool","tool_call_id":"t1","content":"42"}],
            "max_tokens":50,"temperature":0.1,"top_p":0.9,"stop":"END",
            "tools":[{"type":"function","function":{"name":"get","description":"gets","parameters":{"type":"object"}}}],
            "tool_choice":"auto"}"#;
        let r = prepare(&backend(), body).unwrap();
        assert_eq!(r.path, "/model/us.amazon.nova-pro-v1%3A0/converse-stream");
        assert_eq!(
            r.set_headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            concat!(
                r#"{"messages":[{"role":"user","content":[{"text":"look"},{"image":{"format":"jpeg","source":{"bytes":"/9j/"}}}]},"#,
                r#"{"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"get","input":{"q":1}}}]},"#,
                r#"{"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"text":"42"}]}}]}],"#,
                r#""system":[{"text":"be brief"}],"inferenceConfig":{"maxTokens":50,"temperature":0.1,"topP":0.9,"stopSequences":["END"]},"#,
                r#""toolConfig":{"tools":[{"toolSpec":{"name":"get","inputSchema":{"json":{"type":"object"}},"description":"gets"}}],"toolChoice":{"auto":{}}}}"#
            )
        );
        let plain = br#"{"model":"nova","messages":[{"role":"user","content":"hi"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}"#;
        let r = prepare(&backend(), plain).unwrap();
        assert_eq!(r.path, "/model/us.amazon.nova-pro-v1%3A0/converse");
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#
        );
        let thinking = br#"{"model":"c","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"low",
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        let r = prepare(&backend(), thinking).unwrap();
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            concat!(
                r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":5120},"#,
                r#""toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object","properties":{}}}}}],"toolChoice":{"tool":{"name":"f"}}},"#,
                r#""additionalModelRequestFields":{"thinking":{"type":"enabled","budget_tokens":1024}}}"#
            )
        );
        for bad in [
            &br#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#[..],
            br#"{"model":"c","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,AA"}}]}]}"#,
            br#"{"model":"c","messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}"#,
            br#"{"model":"c","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
        ] {
            assert_eq!(prepare(&backend(), bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn golden_completion() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"hmm","signature":"s"}}},
            {"text":"Checking."},{"toolUse":{"toolUseId":"tooluse_1","name":"get","input":{"q":"x"}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":30,"outputTokens":12,"totalTokens":47,"cacheReadInputTokens":5},
            "metrics":{"latencyMs":100}}"#;
        let (out, usage) = completion(body, "req-1", "nova", 9).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                r#"{"id":"req-1","object":"chat.completion","created":9,"model":"nova","choices":[{"index":0,"#,
                r#""message":{"role":"assistant","content":"Checking.","reasoning_content":"hmm","#,
                r#""tool_calls":[{"id":"tooluse_1","type":"function","function":{"name":"get","arguments":"{\"q\":\"x\"}"}}]},"#,
                r#""logprobs":null,"finish_reason":"tool_calls"}],"#,
                r#""usage":{"prompt_tokens":35,"completion_tokens":12,"total_tokens":47,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":0}}}"#
            )
        );
        assert_eq!(usage.unwrap().total, 47);
        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(reason)), want);
        }
        assert!(completion(b"[", "i", "m", 1).is_none());
    }

    fn frame(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                Header::string(":event-type", kind),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    pub(crate) fn stream() -> Vec<u8> {
        let events = [
            ("messageStart", r#"{"role":"assistant","p":"abc"}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hi "},"p":"a"}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"there"},"p":"a"}"#,
            ),
            ("contentBlockStop", r#"{"contentBlockIndex":0,"p":"a"}"#),
            (
                "contentBlockStart",
                r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_1","name":"get"}},"p":"a"}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"q\":"}},"p":"a"}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"x\"}"}},"p":"a"}"#,
            ),
            ("contentBlockStop", r#"{"contentBlockIndex":1,"p":"a"}"#),
            ("messageStop", r#"{"stopReason":"tool_use","p":"a"}"#),
            (
                "metadata",
                r#"{"usage":{"inputTokens":30,"outputTokens":12,"totalTokens":42},"metrics":{"latencyMs":5},"p":"a"}"#,
            ),
        ];
        events.iter().flat_map(|(k, p)| frame(k, p)).collect()
    }

    fn want(include_usage: bool) -> String {
        let prefix = r#"data: {"id":"r1","object":"chat.completion.chunk","created":3,"model":"nova","choices":[{"index":0,"delta":"#;
        let deltas = [
            r#"{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"content":"Hi "},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"content":"there"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"tool_calls":[{"index":0,"id":"tooluse_1","type":"function","function":{"name":"get","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
            r#"{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
        ];
        let mut s: String = deltas.iter().map(|d| format!("{prefix}{d}\n\n")).collect();
        if include_usage {
            s.push_str(r#"data: {"id":"r1","object":"chat.completion.chunk","created":3,"model":"nova","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#);
            s.push_str("\n\n");
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    #[test]
    fn golden_stream_at_every_chunking() {
        let bytes = stream();
        for include_usage in [true, false] {
            let want = want(include_usage);
            for size in 1..=bytes.len() {
                let mut t = StreamToChunks::new("r1", "nova", 3, include_usage);
                let mut out = Vec::new();
                let parts: Vec<&[u8]> = bytes.chunks(size).collect();
                for (i, p) in parts.iter().enumerate() {
                    out.extend(t.push(p, i + 1 == parts.len()));
                }
                assert_eq!(String::from_utf8(out).unwrap(), want, "size {size}");
                let u = t.usage().unwrap();
                assert_eq!((u.input, u.output, u.total), (30, 12, 42));
            }
        }
    }

    #[test]
    fn exceptions_and_truncation_end_the_stream_with_an_error() {
        let mut bytes = frame("messageStart", r#"{"role":"assistant"}"#);
        bytes.extend(encode(
            &[
                Header::string(":exception-type", "throttlingException"),
                Header::string(":message-type", "exception"),
            ],
            br#"{"message":"Too many tokens"}"#,
        ));
        bytes.extend(frame("messageStop", r#"{"stopReason":"end_turn"}"#));
        let mut t = StreamToChunks::new("r", "m", 1, true);
        let out = String::from_utf8(t.push(&bytes, true)).unwrap();
        assert!(out.ends_with(
            "data: {\"error\":{\"message\":\"throttlingException: Too many tokens\",\"type\":\"rate_limit_exceeded\",\"param\":null,\"code\":null}}\n\n"
        ), "{out}");
        assert!(!out.contains("[DONE]"));
        let all = stream();
        let mut t = StreamToChunks::new("r", "m", 1, false);
        let out = String::from_utf8(t.push(&all[..all.len() - 5], true)).unwrap();
        assert!(out.contains("invalid response stream"), "{out}");
        let mut t = StreamToChunks::new("r", "m", 1, false);
        let out = String::from_utf8(t.push(&frame("messageStart", "{}"), true)).unwrap();
        assert!(out.contains("ended before the message was complete"));
        let mut t = StreamToChunks::new("r", "m", 1, false);
        let out = String::from_utf8(t.push(b"\x00\x00\x00\x10garbage-garbage!", false)).unwrap();
        assert!(out.starts_with("data: {\"error\""));
        // Without metadata the stream still closes after messageStop.
        let mut t = StreamToChunks::new("r", "m", 1, true);
        let mut bytes = frame("messageStart", "{}");
        bytes.extend(frame("messageStop", r#"{"stopReason":"max_tokens"}"#));
        let out = String::from_utf8(t.push(&bytes, true)).unwrap();
        assert!(out.contains(r#""finish_reason":"length""#) && out.ends_with("data: [DONE]\n\n"));
    }
}
