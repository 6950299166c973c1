//! OpenAI chat completions served by Gemini on Vertex AI (`GCPVertexAI`
//! schema): `POST /v1/projects/{project}/locations/{region}/publishers/
//! google/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`
//! for streams, with `Authorization: Bearer <access token>` (see
//! [`crate::upstream::credential_header`]).
//!
//! Request: the messages, tools and sampling parameters are read by
//! [`Chat::parse`] (which refuses what no backend here can do: logit_bias,
//! audio, prediction, the deprecated functions); the parameters
//! Gemini has and Claude has not are read here first and taken out of what
//! [`Chat::parse`] sees:
//!
//! | OpenAI | Gemini |
//! |---|---|
//! | system / developer messages | `systemInstruction.parts` |
//! | user / assistant turns | `contents` with roles `user` / `model` |
//! | `image_url` `data:` URL | `inlineData {mimeType, data}` |
//! | `image_url` http(s) URL | `fileData {mimeType, fileUri}`, type from the extension (else 400) |
//! | assistant `tool_calls` | `functionCall {name, args}` parts, with the `thoughtSignature` the gateway put in the call's id |
//! | `tool` messages | `functionResponse {name, response}` parts; the name is the matching call's, a non-object result is wrapped as `{"output": ...}` |
//! | `tools` | `tools[0].functionDeclarations` with `parametersJsonSchema` |
//! | `tool_choice` auto / none / required / named | `toolConfig.functionCallingConfig` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` |
//! | `temperature`, `top_p`, `stop`, `n`, `seed`, penalties | `generationConfig` `temperature`, `topP`, `stopSequences`, `candidateCount`, `seed`, `presencePenalty`, `frequencyPenalty` |
//! | `max_completion_tokens` / `max_tokens` | `maxOutputTokens` |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType: application/json` (+ `responseJsonSchema`) |
//! | `logprobs`, `top_logprobs` | `responseLogprobs`, `logprobs` |
//! | `reasoning_effort` none / minimal / low / medium / high | `thinkingConfig.thinkingBudget` 0 / 512 / 1024 / 8192 / 24576, `includeThoughts` unless none |
//!
//! `parallel_tool_calls: false` is refused (Gemini cannot be told to call
//! one function at a time); `user` is not sent (Gemini has no such field;
//! it does not change the answer).

use crate::chat::{Block, Chat, Image, Role, ToolChoice};
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::gemini_response::{is_base64, SIGNATURE_SEPARATOR};
use crate::sigv4::uri_encode;
use crate::upstream::UpstreamRequest;
use serde_json::{json, Map, Value};

const REMOVED_HEADERS: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "content-length",
    "accept-encoding",
];

/// Fields read here and hidden from [`Chat::parse`] (which refuses them for
/// backends without them).
const GEMINI_FIELDS: &[&str] = &[
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "reasoning_effort",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
];

fn unsupported(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param(param)
        .with_code("unsupported_parameter")
}

fn invalid(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param(param)
        .with_code("invalid_value")
}

/// The generateContent (or streamGenerateContent) path.
pub fn vertex_path(project: &str, region: &str, model: &str, stream: bool) -> String {
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    format!(
        "/v1/projects/{}/locations/{}/publishers/google/models/{}:{method}",
        uri_encode(project.as_bytes(), true),
        uri_encode(region.as_bytes(), true),
        uri_encode(model.as_bytes(), true),
    )
}

/// The MIME type of an image URL, from its file extension.
pub fn mime_from_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// What Gemini can do that [`Chat`] does not carry.
#[derive(Debug, Default, Clone, PartialEq)]
struct Extras {
    candidate_count: Option<u64>,
    seed: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    /// `responseMimeType` and the JSON Schema, if any.
    json: Option<Option<Value>>,
    /// `thinkingBudget`, `includeThoughts`.
    thinking: Option<(u64, bool)>,
    /// `responseLogprobs`, and `logprobs` (top candidates per token).
    logprobs: Option<Option<u64>>,
}

fn number(o: &Map<String, Value>, key: &str) -> Result<Option<f64>, GatewayError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("{key} must be a number"))),
    }
}

fn extras(o: &Map<String, Value>) -> Result<Extras, GatewayError> {
    let mut x = Extras::default();
    match o.get("n") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(1) => {}
            Some(n @ 2..=8) => x.candidate_count = Some(n),
            Some(n) if n > 8 => {
                return Err(unsupported(
                    "n",
                    "Vertex AI Gemini returns at most 8 choices",
                ))
            }
            _ => return Err(invalid("n", "n must be a positive integer")),
        },
    }
    match o.get("seed") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let seed = v
                .as_i64()
                .filter(|s| i32::try_from(*s).is_ok())
                .ok_or_else(|| invalid("seed", "seed must be a 32-bit integer for Gemini"))?;
            x.seed = Some(seed);
        }
    }
    x.presence_penalty = number(o, "presence_penalty")?;
    x.frequency_penalty = number(o, "frequency_penalty")?;
    match o.get("response_format") {
        None | Some(Value::Null) => {}
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => x.json = Some(None),
            Some("json_schema") => {
                let schema = f
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        invalid(
                            "response_format",
                            "response_format json_schema needs json_schema.schema (an object)",
                        )
                    })?;
                x.json = Some(Some(schema.clone()));
            }
            Some(other) => {
                return Err(unsupported(
                    "response_format",
                    format!("response_format {other} is not supported by Gemini"),
                ))
            }
            None => return Err(invalid("response_format", "response_format needs a type")),
        },
    }
    match o.get("reasoning_effort") {
        None | Some(Value::Null) => {}
        Some(Value::String(effort)) => {
            x.thinking = Some(match effort.as_str() {
                "none" => (0, false),
                "minimal" => (512, true),
                "low" => (1024, true),
                "medium" => (8192, true),
                "high" => (24576, true),
                other => {
                    return Err(invalid(
                        "reasoning_effort",
                        format!("unknown reasoning_effort {other:?}"),
                    ))
                }
            })
        }
        Some(_) => {
            return Err(invalid(
                "reasoning_effort",
                "reasoning_effort must be a string",
            ))
        }
    }
    let wants_logprobs = match o.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("logprobs", "logprobs must be a boolean")),
    };
    let top = match o.get("top_logprobs") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 0..=20) => Some(n),
            _ => {
                return Err(invalid(
                    "top_logprobs",
                    "top_logprobs must be an integer from 0 to 20",
                ))
            }
        },
    };
    if top.is_some() && !wants_logprobs {
        return Err(invalid("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    if wants_logprobs {
        x.logprobs = Some(top.filter(|n| *n > 0));
    }
    if o.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(unsupported(
            "parallel_tool_calls",
            "parallel_tool_calls false is not supported by Gemini (it may call several functions at once)",
        ));
    }
    Ok(x)
}

/// The name of the call `id` answers: the nearest earlier call of that id.
fn call_name<'a>(turns: &'a [crate::chat::Turn], upto: usize, id: &str) -> Option<&'a str> {
    turns[..upto].iter().rev().find_map(|t| {
        t.blocks.iter().rev().find_map(|b| match b {
            Block::ToolUse { id: i, name, .. } if i == id => Some(name.as_str()),
            _ => None,
        })
    })
}

fn part(chat: &Chat, turn: usize, b: &Block) -> Result<Value, GatewayError> {
    Ok(match b {
        Block::Text(t) => json!({"text": t}),
        Block::Image(Image::Base64 { media_type, data }) => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Block::Image(Image::Url(url)) => {
            let mime = mime_from_url(url).ok_or_else(|| {
                let shown: String = url.chars().take(120).collect();
                invalid(
                    "messages",
                    format!("cannot tell the image type of {shown:?} from its name (png, jpeg, gif, webp, heic, heif or pdf); send it as a data: URL"),
                )
            })?;
            json!({"fileData": {"mimeType": mime, "fileUri": url}})
        }
        Block::ToolUse { id, name, input } => {
            let mut part = json!({"functionCall": {"name": name, "args": input}});
            // A signature the gateway put in the id goes back to Gemini.
            if let Some((_, signature)) = id.rsplit_once(SIGNATURE_SEPARATOR) {
                if is_base64(signature) {
                    part["thoughtSignature"] = Value::String(signature.to_string());
                }
            }
            part
        }
        Block::ToolResult { id, content } => {
            let name = call_name(&chat.turns, turn, id).ok_or_else(|| {
                invalid(
                    "messages",
                    format!("tool message for tool_call_id {id:?} follows no assistant tool call of that id"),
                )
            })?;
            let response = match serde_json::from_str::<Value>(content) {
                Ok(v @ Value::Object(_)) => v,
                _ => json!({"output": content}),
            };
            json!({"functionResponse": {"name": name, "response": response}})
        }
    })
}

/// The generateContent body for `chat` and the Gemini-only parameters.
fn body(chat: &Chat, x: &Extras) -> Result<Value, GatewayError> {
    let mut body = Map::new();
    let mut contents = Vec::new();
    for (i, turn) in chat.turns.iter().enumerate() {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let parts: Vec<Value> = turn
            .blocks
            .iter()
            .map(|b| part(chat, i, b))
            .collect::<Result<_, _>>()?;
        contents.push(json!({"role": role, "parts": parts}));
    }
    if contents.is_empty() {
        return Err(invalid(
            "messages",
            "Gemini needs at least one user or assistant message",
        ));
    }
    body.insert("contents".into(), Value::Array(contents));
    if !chat.system.is_empty() {
        let parts: Vec<Value> = chat.system.iter().map(|t| json!({"text": t})).collect();
        body.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    if !chat.tools.is_empty() {
        let declarations: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name});
                if let Some(desc) = &t.description {
                    d["description"] = Value::String(desc.clone());
                }
                d["parametersJsonSchema"] = t.parameters.clone();
                d
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(choice) = &chat.tool_choice {
        if chat.tools.is_empty() && *choice != ToolChoice::None && *choice != ToolChoice::Auto {
            return Err(invalid("tool_choice", "tool_choice needs tools"));
        }
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Named(n) => {
                if !chat.tools.iter().any(|t| &t.name == n) {
                    return Err(invalid(
                        "tool_choice",
                        format!("tool_choice names {n:?}, which is not in tools"),
                    ));
                }
                json!({"mode": "ANY", "allowedFunctionNames": [n]})
            }
        };
        if !chat.tools.is_empty() {
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    let mut g = Map::new();
    if let Some(t) = chat.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = chat.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(n) = x.candidate_count {
        g.insert("candidateCount".into(), json!(n));
    }
    if let Some(m) = chat.max_tokens {
        g.insert("maxOutputTokens".into(), json!(m));
    }
    if !chat.stop.is_empty() {
        if chat.stop.len() > 5 {
            return Err(unsupported("stop", "Gemini takes at most 5 stop sequences"));
        }
        g.insert("stopSequences".into(), json!(chat.stop));
    }
    if let Some(p) = x.presence_penalty {
        g.insert("presencePenalty".into(), json!(p));
    }
    if let Some(p) = x.frequency_penalty {
        g.insert("frequencyPenalty".into(), json!(p));
    }
    if let Some(s) = x.seed {
        g.insert("seed".into(), json!(s));
    }
    if let Some(schema) = &x.json {
        g.insert("responseMimeType".into(), json!("application/json"));
        if let Some(schema) = schema {
            g.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if let Some(top) = x.logprobs {
        g.insert("responseLogprobs".into(), Value::Bool(true));
        if let Some(n) = top {
            g.insert("logprobs".into(), json!(n));
        }
    }
    if let Some((budget, include)) = x.thinking {
        let mut t = json!({"thinkingBudget": budget});
        if include {
            t["includeThoughts"] = Value::Bool(true);
        }
        g.insert("thinkingConfig".into(), t);
    }
    if !g.is_empty() {
        body.insert("generationConfig".into(), Value::Object(g));
    }
    Ok(Value::Object(body))
}

/// The generateContent body for an OpenAI chat request body.
pub fn generate_content_body(request: &[u8]) -> Result<(Chat, Value), GatewayError> {
    let mut value: Value = serde_json::from_slice(request).map_err(|e| {
        GatewayError::bad_request(format!("request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    let o = value.as_object_mut().ok_or_else(|| {
        GatewayError::bad_request("request body must be a JSON object").with_code("invalid_json")
    })?;
    let x = extras(o)?;
    for key in GEMINI_FIELDS {
        o.remove(*key);
    }
    let chat = Chat::parse(value.to_string().as_bytes())?;
    let body = body(&chat, &x)?;
    Ok((chat, body))
}

/// Rewrites an OpenAI chat request for a `GCPVertexAI` backend.
pub fn prepare(backend: &BackendConfig, request: &[u8]) -> Result<UpstreamRequest, GatewayError> {
    let auth = backend.auth.as_ref();
    let project = auth
        .and_then(|a| a.project.as_deref())
        .filter(|p| !p.is_empty());
    let region = auth
        .and_then(|a| a.region.as_deref())
        .filter(|r| !r.is_empty());
    let (Some(project), Some(region)) = (project, region) else {
        return Err(GatewayError::internal(
            "the GCPVertexAI backend has no GCP project and region: give it a BackendSecurityPolicy of type GCPCredentials with projectName and region",
        )
        .with_code("backend_misconfigured"));
    };
    let (chat, value) = generate_content_body(request)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&chat.model);
    Ok(UpstreamRequest {
        path: vertex_path(project, region, model, chat.stream),
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

#[cfg(test)]
#[path = "gemini_tests.rs"]
mod tests;
