//! OpenAI Chat Completions as the client's API in front of a backend that
//! speaks something else (Anthropic Messages, Bedrock Converse).
//!
//! The request is read once into a small neutral form ([`Chat`]): system
//! text, alternating user/assistant turns of text, image, tool-use and
//! tool-result blocks, sampling parameters and tools. Each target renders
//! that form its own way. Everything a target cannot express is refused
//! here with a 400 naming the parameter, never dropped silently:
//! `n` > 1, `logprobs`/`top_logprobs`, `logit_bias`, non-zero
//! `presence_penalty`/`frequency_penalty`, audio, `prediction`, the
//! deprecated `functions`/`function_call`, and `response_format` of type
//! `json_object` or `json_schema` (neither Anthropic nor Converse has a JSON
//! mode; emulating one with a prompt would not guarantee JSON, so the
//! client is told).
//!
//! The output side builds `chat.completion` bodies, `chat.completion.chunk`
//! SSE events and OpenAI error bodies.

use crate::error::GatewayError;
use crate::usage::Usage;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// `max_tokens` sent when the client gives none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The smallest thinking budget Anthropic accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// From a `data:` URL: media type (e.g. `image/png`) and base64 data.
    Base64 { media_type: String, data: String },
    /// An `http(s)` URL.
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Text(String),
    Image(Image),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        id: String,
        content: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

/// An OpenAI chat request, validated and reduced to what targets render.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub system: Vec<String>,
    /// Consecutive messages of one role are merged into one turn.
    pub turns: Vec<Turn>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    /// A thinking budget from `reasoning_effort` (low, medium, high).
    pub thinking_budget: Option<u64>,
    pub user: Option<String>,
}

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

fn invalid(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param(param)
        .with_code("invalid_value")
}

fn opt_f64(o: &Map<String, Value>, key: &str) -> Result<Option<f64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("{key} must be a number"))),
    }
}

fn opt_u64(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(key, format!("{key} must be a positive integer"))),
        },
    }
}

/// Text of a content that is a string or an array of `text` parts.
fn text_of(content: &Value, param: &str) -> Result<String, GatewayError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let t = part
                            .get("text")
                            .or_else(|| part.get("refusal"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(param, "a text part needs a string text"))?;
                        text.push_str(t);
                    }
                    other => {
                        return Err(bad(
                            param,
                            format!(
                                "content parts of type {} are not supported here",
                                other.unwrap_or("(none)")
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(param, "content must be a string or an array")),
    }
}

/// Parses `data:<media type>;base64,<data>`.
pub fn parse_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    if media_type.is_empty() || data.is_empty() {
        return None;
    }
    Some((media_type.to_ascii_lowercase(), data.to_string()))
}

fn user_blocks(content: &Value, param: &str) -> Result<Vec<Block>, GatewayError> {
    let parts = match content {
        Value::String(s) => return Ok(vec![Block::Text(s.clone())]),
        Value::Array(parts) => parts,
        _ => return Err(invalid(param, "content must be a string or an array")),
    };
    let mut blocks = Vec::new();
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(param, "a text part needs a string text"))?;
                blocks.push(Block::Text(t.to_string()));
            }
            Some("image_url") => {
                let url = part
                    .get("image_url")
                    .and_then(|i| i.get("url").or(Some(i)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(param, "an image_url part needs image_url.url"))?;
                let image = if url.starts_with("data:") {
                    let (media_type, data) = parse_data_url(url).ok_or_else(|| {
                        invalid(param, "image data URLs must be data:<type>;base64,<data>")
                    })?;
                    Image::Base64 { media_type, data }
                } else if url.starts_with("https://") || url.starts_with("http://") {
                    Image::Url(url.to_string())
                } else {
                    return Err(invalid(param, "image URLs must be http(s) or data: URLs"));
                };
                blocks.push(Block::Image(image));
            }
            other => {
                return Err(bad(
                    param,
                    format!(
                        "content parts of type {} are not supported by this backend",
                        other.unwrap_or("(none)")
                    ),
                ))
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks(message: &Map<String, Value>, i: usize) -> Result<Vec<Block>, GatewayError> {
    let param = format!("messages[{i}]");
    let mut blocks = Vec::new();
    let text = text_of(message.get("content").unwrap_or(&Value::Null), &param)?;
    if !text.is_empty() {
        blocks.push(Block::Text(text));
    }
    if message.get("function_call").is_some_and(|v| !v.is_null()) {
        return Err(bad(
            &param,
            "function_call is deprecated and not supported; use tool_calls",
        ));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for call in calls {
                let function = call.get("function");
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&param, "a tool call needs function.name"))?;
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&param, "a tool call needs an id"))?;
                let arguments = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let input = if arguments.trim().is_empty() {
                    Value::Object(Map::new())
                } else {
                    match serde_json::from_str::<Value>(arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => {
                            return Err(invalid(
                                &param,
                                "tool call arguments must be a JSON object in a string",
                            ))
                        }
                    }
                };
                blocks.push(Block::ToolUse {
                    id: id.to_string(),
                    name: name.to_string(),
                    input,
                });
            }
        }
        Some(_) => return Err(invalid(&param, "tool_calls must be an array")),
    }
    Ok(blocks)
}

fn tools(o: &Map<String, Value>) -> Result<Vec<Tool>, GatewayError> {
    let list = match o.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid("tools", "tools must be an array")),
    };
    let mut out = Vec::new();
    for tool in list {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad("tools", "only tools of type function are supported"));
        }
        let f = tool
            .get("function")
            .ok_or_else(|| invalid("tools", "a tool needs a function"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("tools", "a tool needs function.name"))?;
        let parameters = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => return Err(invalid("tools", "function.parameters must be an object")),
        };
        out.push(Tool {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
        });
    }
    Ok(out)
}

fn tool_choice(o: &Map<String, Value>) -> Result<Option<ToolChoice>, GatewayError> {
    Ok(match o.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(invalid("tool_choice", format!("unknown tool_choice {s:?}"))),
        }),
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "tool_choice must be auto, none, required or a named function",
                    )
                })?;
            Some(ToolChoice::Named(name.to_string()))
        }
    })
}

fn refuse_unsupported(o: &Map<String, Value>) -> Result<(), GatewayError> {
    if let Some(n) = o.get("n").and_then(Value::as_u64) {
        if n > 1 {
            return Err(bad("n", "n > 1 is not supported by this backend"));
        }
    }
    if o.get("logprobs").and_then(Value::as_bool) == Some(true)
        || o.get("top_logprobs").is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "logprobs",
            "logprobs are not supported by this backend",
        ));
    }
    if o.get("logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return Err(bad(
            "logit_bias",
            "logit_bias is not supported by this backend",
        ));
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if o.get(key).and_then(Value::as_f64).is_some_and(|p| p != 0.0) {
            return Err(bad(key, format!("{key} is not supported by this backend")));
        }
    }
    for key in ["audio", "prediction", "functions", "function_call"] {
        if o.get(key).is_some_and(|v| !v.is_null()) {
            return Err(bad(key, format!("{key} is not supported by this backend")));
        }
    }
    if let Some(Value::Array(m)) = o.get("modalities") {
        if m.iter().any(|m| m.as_str() != Some("text")) {
            return Err(bad(
                "modalities",
                "only text output is supported by this backend",
            ));
        }
    }
    match o.get("response_format") {
        None | Some(Value::Null) => {}
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind) => {
                return Err(bad(
                    "response_format",
                    format!("response_format {kind} is not supported by this backend (it has no JSON mode); describe the format in the prompt or use tools"),
                ))
            }
            None => return Err(invalid("response_format", "response_format needs a type")),
        },
    }
    Ok(())
}

fn thinking_budget(
    o: &Map<String, Value>,
    max_tokens: Option<u64>,
) -> Result<Option<u64>, GatewayError> {
    let effort = match o.get("reasoning_effort") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(invalid(
                "reasoning_effort",
                "reasoning_effort must be a string",
            ))
        }
    };
    let budget: u64 = match effort {
        "none" | "minimal" => return Ok(None),
        "low" => 1024,
        "medium" => 4096,
        "high" => 16384,
        other => {
            return Err(invalid(
                "reasoning_effort",
                format!("unknown reasoning_effort {other:?}"),
            ))
        }
    };
    match max_tokens {
        None => Ok(Some(budget)),
        Some(m) if m <= MIN_THINKING_BUDGET => Err(bad(
            "reasoning_effort",
            format!("reasoning needs max_completion_tokens above {MIN_THINKING_BUDGET}"),
        )),
        // Leave at least half of the limit for the answer.
        Some(m) => Ok(Some(budget.min(m / 2).max(MIN_THINKING_BUDGET))),
    }
}

impl Chat {
    /// Reads and validates an OpenAI chat request body.
    pub fn parse(body: &[u8]) -> Result<Chat, GatewayError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(format!("request body is not valid JSON: {e}"))
                .with_code("invalid_json")
        })?;
        let o = value.as_object().ok_or_else(|| {
            GatewayError::bad_request("request body must be a JSON object")
                .with_code("invalid_json")
        })?;
        let model = o
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("model", "you must provide a model parameter"))?
            .to_string();
        refuse_unsupported(o)?;
        let stream = o.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = o
            .get("stream_options")
            .and_then(|s| s.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let messages = o
            .get("messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("messages", "messages must be a non-empty array"))?;
        let mut system = Vec::new();
        let mut turns: Vec<Turn> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let param = format!("messages[{i}]");
            let m = m
                .as_object()
                .ok_or_else(|| invalid(&param, "a message must be an object"))?;
            let content = m.get("content").unwrap_or(&Value::Null);
            let (role, blocks) = match m.get("role").and_then(Value::as_str) {
                Some("system") | Some("developer") => {
                    let text = text_of(content, &param)?;
                    if !text.is_empty() {
                        system.push(text);
                    }
                    continue;
                }
                Some("user") => (Role::User, user_blocks(content, &param)?),
                Some("assistant") => (Role::Assistant, assistant_blocks(m, i)?),
                Some("tool") => {
                    let id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(&param, "a tool message needs tool_call_id"))?;
                    let block = Block::ToolResult {
                        id: id.to_string(),
                        content: text_of(content, &param)?,
                    };
                    (Role::User, vec![block])
                }
                Some(other) => {
                    return Err(bad(
                        &param,
                        format!("messages with role {other:?} are not supported"),
                    ))
                }
                None => return Err(invalid(&param, "a message needs a role")),
            };
            if blocks.is_empty() {
                continue;
            }
            match turns.last_mut() {
                Some(last) if last.role == role => last.blocks.extend(blocks),
                _ => turns.push(Turn { role, blocks }),
            }
        }
        let max_tokens = match opt_u64(o, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_u64(o, "max_tokens")?,
        };
        let stop = match o.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("stop", "stop must be a string or strings"))?,
            Some(_) => return Err(invalid("stop", "stop must be a string or strings")),
        };
        Ok(Chat {
            model,
            stream,
            include_usage,
            system,
            turns,
            thinking_budget: thinking_budget(o, max_tokens)?,
            max_tokens,
            temperature: opt_f64(o, "temperature")?,
            top_p: opt_f64(o, "top_p")?,
            stop,
            tools: tools(o)?,
            tool_choice: tool_choice(o)?,
            parallel_tool_calls: o.get("parallel_tool_calls").and_then(Value::as_bool),
            user: o.get("user").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// `max_tokens` to send: the client's, else the default, raised to fit a
    /// thinking budget when the client set none.
    pub fn effective_max_tokens(&self) -> u64 {
        match (self.max_tokens, self.thinking_budget) {
            (Some(n), _) => n,
            (None, Some(b)) => b.saturating_add(DEFAULT_MAX_TOKENS),
            (None, None) => DEFAULT_MAX_TOKENS,
        }
    }

    /// Whether any turn carries tool calls or results.
    pub fn has_tool_blocks(&self) -> bool {
        self.turns.iter().any(|t| {
            t.blocks
                .iter()
                .any(|b| matches!(b, Block::ToolUse { .. } | Block::ToolResult { .. }))
        })
    }
}

/// The OpenAI `usage` object for `u`.
pub fn usage_json(u: &Usage) -> Value {
    serde_json::to_value(UsageBody::from(u)).unwrap_or(Value::Null)
}

/// OpenAI's `usage` object.
#[derive(Serialize)]
struct UsageBody {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl From<&Usage> for UsageBody {
    fn from(u: &Usage) -> Self {
        UsageBody {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.total,
            prompt_tokens_details: CachedTokens {
                cached_tokens: u.cached_input,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: u.reasoning,
            },
        }
    }
}

/// A tool call of a `chat.completion` message.
pub fn tool_call_json(id: &str, name: &str, input: &Value) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    })
}

/// What a `chat.completion` body is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub text: Option<String>,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<Value>,
    pub finish_reason: &'static str,
    pub usage: Option<Usage>,
}

impl Completion {
    /// Written through typed structs: building it as a `Value` first cost
    /// several times more (a map allocation and hashing per object).
    pub fn body(&self) -> Vec<u8> {
        let body = CompletionBody {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices: [Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: self.text.as_deref(),
                    reasoning_content: self.reasoning.as_deref(),
                    tool_calls: &self.tool_calls,
                },
                logprobs: None,
                finish_reason: self.finish_reason,
            }],
            usage: self.usage.as_ref().map(UsageBody::from),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageBody>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tool_calls: &'a [Value],
}

/// The tool calls of a chunk stream translated from a provider that streams
/// content blocks (Anthropic Messages, Bedrock ConverseStream): the OpenAI
/// tool call index of each block that is a tool call.
#[derive(Debug, Clone, Default)]
pub struct BlockToolCalls {
    /// (content block index, tool call index), in the order they started.
    calls: Vec<(u64, usize)>,
}

impl BlockToolCalls {
    /// A tool call starts in content block `block`: its first delta (id,
    /// name, no arguments yet).
    pub fn start(&mut self, w: &ChunkWriter, block: u64, id: &str, name: &str, out: &mut Vec<u8>) {
        let n = self.calls.len();
        self.calls.push((block, n));
        w.delta(
            json!({"tool_calls": [{"index": n, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
            out,
        );
    }

    /// More of the arguments of the tool call in content block `block`
    /// (nothing for a block that is no tool call, or no text).
    pub fn arguments(&self, w: &ChunkWriter, block: u64, arguments: &str, out: &mut Vec<u8>) {
        let Some(&(_, n)) = self.calls.iter().find(|(i, _)| *i == block) else {
            return;
        };
        if !arguments.is_empty() {
            w.delta(
                json!({"tool_calls": [{"index": n, "function": {"arguments": arguments}}]}),
                None,
                out,
            );
        }
    }
}

/// Writes `chat.completion.chunk` SSE events for one response.
#[derive(Debug, Clone, Default)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl ChunkWriter {
    fn event(value: &Value, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(value.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// A chunk with one choice carrying `delta` and `finish_reason`.
    pub fn delta(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        Self::event(&v, out);
    }

    /// The usage-only chunk sent when the client asked for
    /// `stream_options.include_usage`.
    pub fn usage(&self, u: &Usage, out: &mut Vec<u8>) {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(u),
        });
        Self::event(&v, out);
    }

    pub fn done(out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// An error in the stream, the way OpenAI sends one (the SDK raises it).
    pub fn error(kind: &str, message: &str, out: &mut Vec<u8>) {
        let v = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
        Self::event(&v, out);
    }
}

/// OpenAI's error type for an HTTP status.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_exceeded",
        _ => "api_error",
    }
}

/// An upstream error body (Anthropic's `{"type":"error","error":{...}}`,
/// Bedrock's `{"message": ...}`, or anything else) as an OpenAI error body.
pub fn error_body(status: u16, body: &[u8], provider: &str) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    // Already OpenAI's shape (the gateway's own upstream-role errors): as is.
    if let Some(v) = &parsed {
        if v.get("error").is_some_and(Value::is_object) && v.get("type").is_none() {
            return body.to_vec();
        }
    }
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message"))
                .or_else(|| v.get("message"))
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{provider} answered HTTP {status}"));
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("error").and_then(|e| e.get("type")))
        .and_then(Value::as_str)
        .map(str::to_string);
    json!({"error": {
        "message": message,
        "type": openai_error_type(status),
        "param": null,
        "code": code,
    }})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_body_is_what_openai_writes_field_for_field() {
        let usage = Usage {
            input: 12,
            output: 14,
            total: 26,
            cached_input: 3,
            reasoning: 5,
            ..Default::default()
        };
        let call = tool_call_json("t1", "f", &json!({"a": 1}));
        let cases = [
            Completion::default(),
            Completion {
                id: "chatcmpl-1".into(),
                model: "m".into(),
                created: 7,
                text: Some("hi \"there\"".into()),
                finish_reason: "stop",
                usage: Some(usage),
                ..Default::default()
            },
            Completion {
                reasoning: Some("because".into()),
                tool_calls: vec![call.clone(), call],
                finish_reason: "tool_calls",
                ..Default::default()
            },
        ];
        for c in cases {
            // The same object built as a Value, keys in OpenAI's order.
            let mut message = json!({"role": "assistant", "content": c.text});
            if let Some(r) = &c.reasoning {
                message["reasoning_content"] = json!(r);
            }
            if !c.tool_calls.is_empty() {
                message["tool_calls"] = json!(c.tool_calls);
            }
            let mut want = json!({
                "id": c.id, "object": "chat.completion", "created": c.created, "model": c.model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": c.finish_reason}],
            });
            if let Some(u) = &c.usage {
                want["usage"] = json!({
                    "prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.total,
                    "prompt_tokens_details": {"cached_tokens": u.cached_input},
                    "completion_tokens_details": {"reasoning_tokens": u.reasoning},
                });
            }
            assert_eq!(String::from_utf8(c.body()).unwrap(), want.to_string());
        }
    }

    fn parse(v: Value) -> Result<Chat, GatewayError> {
        Chat::parse(v.to_string().as_bytes())
    }

    #[test]
    fn full_conversation() {
        let chat = parse(json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "no jokes"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/PNG;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.jpg", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "one"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9,
            "stop": "END", "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}}}, {"type": "function", "function": {"name": "g"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": false, "user": "u1", "n": 1, "seed": 3, "response_format": {"type": "text"}
        }))
        .unwrap();
        assert!(chat.stream && chat.include_usage);
        assert_eq!(chat.system, vec!["be brief", "no jokes"]);
        assert_eq!(chat.max_tokens, Some(20));
        assert_eq!(chat.stop, vec!["END"]);
        assert_eq!(chat.tool_choice, Some(ToolChoice::Named("f".into())));
        assert_eq!(
            chat.tools[1].parameters,
            json!({"type":"object","properties":{}})
        );
        assert_eq!(
            chat.turns.len(),
            3,
            "tool results merge with the next user turn"
        );
        assert_eq!(
            chat.turns[0].blocks[1],
            Block::Image(Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBO".into()
            })
        );
        assert_eq!(
            chat.turns[1].blocks[1],
            Block::ToolUse {
                id: "call_2".into(),
                name: "g".into(),
                input: json!({})
            }
        );
        assert_eq!(chat.turns[2].blocks.len(), 3);
        assert!(chat.has_tool_blocks());
        assert_eq!(chat.effective_max_tokens(), 20);
    }

    #[test]
    fn refusals_name_the_parameter() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (extra, param) in [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"logit_bias": {"1": 2}}), "logit_bias"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (
                json!({"response_format": {"type": "json_object"}}),
                "response_format",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
                "response_format",
            ),
            (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
            (
                json!({"reasoning_effort": "high", "max_tokens": 1000}),
                "reasoning_effort",
            ),
            (json!({"tools": [{"type": "web_search"}]}), "tools"),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"stop": [1]}), "stop"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "messages[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}),
                "messages[0]",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0]",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0]",
            ),
        ] {
            let mut body = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, 400, "{extra}");
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
        }
        for body in [&b"nope"[..], b"[]", b"{}", br#"{"model":"m"}"#] {
            assert_eq!(Chat::parse(body).unwrap_err().status, 400);
        }
    }

    #[test]
    fn reasoning_budgets() {
        let with = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse(b).unwrap()
        };
        let c = with(json!({"reasoning_effort": "medium"}));
        assert_eq!(c.thinking_budget, Some(4096));
        assert_eq!(c.effective_max_tokens(), 8192);
        let c = with(json!({"reasoning_effort": "high", "max_completion_tokens": 5000}));
        assert_eq!(c.thinking_budget, Some(2500));
        let c = with(json!({"reasoning_effort": "low", "max_completion_tokens": 1100}));
        assert_eq!(c.thinking_budget, Some(1024));
        assert_eq!(
            with(json!({"reasoning_effort": "minimal"})).thinking_budget,
            None
        );
        assert_eq!(with(json!({})).effective_max_tokens(), DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn upstream_errors_become_openai_errors() {
        let b = error_body(
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#,
            "Anthropic",
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"error":{"message":"max_tokens: too big","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#
        );
        let v: Value =
            serde_json::from_slice(&error_body(429, br#"{"message":"slow down"}"#, "Bedrock"))
                .unwrap();
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        let own = br#"{"error":{"message":"n > 1","type":"invalid_request_error","param":"n","code":null}}"#;
        assert_eq!(error_body(400, own, "Anthropic"), own.to_vec());
        let v: Value = serde_json::from_slice(&error_body(502, b"<html>", "Bedrock")).unwrap();
        assert_eq!(v["error"]["message"], "Bedrock answered HTTP 502");
    }

    #[test]
    fn writer_shapes() {
        let w = ChunkWriter {
            id: "i".into(),
            model: "m".into(),
            created: 7,
        };
        let mut out = Vec::new();
        w.delta(json!({"content": "x"}), None, &mut out);
        ChunkWriter::done(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"id\":\"i\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"logprobs\":null,\"finish_reason\":null}]}\n\ndata: [DONE]\n\n"
        );
    }
}
