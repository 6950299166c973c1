//! Gemini (Vertex AI) answers in OpenAI's chat shapes: a
//! `GenerateContentResponse` body -> `chat.completion`, the
//! `streamGenerateContent?alt=sse` stream (`data: {GenerateContentResponse}`
//! events) -> `chat.completion.chunk` events as each arrives, and Google
//! error bodies -> OpenAI error bodies.
//!
//! Per candidate (one choice each; `n` > 1 asks for several): text parts
//! become `content`, `thought: true` parts `reasoning_content`,
//! `functionCall` parts `tool_calls` (arguments JSON-stringified, ids from
//! Gemini's own `id` or derived deterministically from the response id, the
//! call's position, name and arguments, followed by the call's
//! `thoughtSignature` if it has one: see [`SIGNATURE_SEPARATOR`]);
//! `logprobsResult` becomes the choice's `logprobs`. `finishReason` -> `finish_reason`
//! (`tool_calls` whenever the candidate called a function). A prompt
//! blocked before any candidate (`promptFeedback.blockReason`) becomes an
//! answer with no content, a `refusal` naming the reason and
//! `finish_reason: content_filter`. Usage: `prompt_tokens` =
//! `promptTokenCount` + `toolUsePromptTokenCount`, `completion_tokens` =
//! `candidatesTokenCount` + `thoughtsTokenCount`, `cached_tokens` =
//! `cachedContentTokenCount`, `reasoning_tokens` = `thoughtsTokenCount`.

use crate::chat::{openai_error_type, usage_json, ChunkWriter};
use crate::response::MAX_SSE_EVENT;
use crate::sse::SseSplitter;
use crate::usage::Usage;
use serde_json::{json, Map, Value};

/// A Gemini `usageMetadata` object, normalized.
pub fn usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let input = n("promptTokenCount").saturating_add(n("toolUsePromptTokenCount"));
    let thoughts = n("thoughtsTokenCount");
    let output = n("candidatesTokenCount").saturating_add(thoughts);
    let total = match u.get("totalTokenCount").and_then(Value::as_u64) {
        Some(t) => t,
        None => input.saturating_add(output),
    };
    Some(Usage {
        input,
        output,
        total,
        cached_input: n("cachedContentTokenCount"),
        cache_creation_input: 0,
        reasoning: thoughts,
    })
}

/// OpenAI's finish reason for a Gemini `finishReason`.
pub fn finish_reason(reason: &str, called_functions: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if called_functions => "tool_calls",
        _ => "stop",
    }
}

/// A 64-bit FNV-1a hash, for tool call ids that are stable across retries.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The id of a tool call: Gemini's own if it gave one, else derived.
pub fn call_id(call: &Value, response_id: &str, candidate: u64, position: usize) -> String {
    if let Some(id) = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
    {
        return id.to_string();
    }
    let name = call.get("name").and_then(Value::as_str).unwrap_or("");
    let args = call.get("args").map(Value::to_string).unwrap_or_default();
    let h = fnv(&[
        response_id.as_bytes(),
        &candidate.to_le_bytes(),
        &position.to_le_bytes(),
        name.as_bytes(),
        args.as_bytes(),
    ]);
    format!("call_{h:016x}")
}

/// Between a tool call's id and the `thoughtSignature` Gemini attached to
/// the call. Gemini wants the signature back with the call in later turns
/// (Gemini 3 refuses function calling without it), and an OpenAI client
/// sends back nothing of a tool call but its id, name and arguments.
pub const SIGNATURE_SEPARATOR: &str = "~ts~";

/// The OpenAI id of a `functionCall` part: [`call_id`], with the part's
/// `thoughtSignature` (base64) after [`SIGNATURE_SEPARATOR`] if it has one.
fn part_call_id(part: &Value, call: &Value, rid: &str, candidate: u64, n: usize) -> String {
    let mut id = call_id(call, rid, candidate, n);
    let signature = part
        .get("thoughtSignature")
        .and_then(Value::as_str)
        .filter(|s| is_base64(s));
    if let Some(signature) = signature {
        id.push_str(SIGNATURE_SEPARATOR);
        id.push_str(signature);
    }
    id
}

/// Whether `s` is non-empty base64 (standard or URL-safe alphabet).
pub fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// A candidate's `logprobsResult` as OpenAI's `logprobs` (`null` without
/// one): each chosen token with its log probability and the top
/// alternatives at that position.
fn logprobs(candidate: &Value) -> Value {
    let Some(result) = candidate.get("logprobsResult").filter(|r| r.is_object()) else {
        return Value::Null;
    };
    let list = |key: &str| {
        result
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
    };
    let entry = |c: &Value| {
        let token = c.get("token").and_then(Value::as_str).unwrap_or("");
        let logprob = c
            .get("logProbability")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()})
    };
    let top = list("topCandidates");
    let content: Vec<Value> = list("chosenCandidates")
        .iter()
        .enumerate()
        .map(|(i, chosen)| {
            let mut e = entry(chosen);
            let alternatives: Vec<Value> = top
                .get(i)
                .and_then(|t| t.get("candidates"))
                .and_then(Value::as_array)
                .map_or_else(Vec::new, |l| l.iter().map(entry).collect());
            e["top_logprobs"] = Value::Array(alternatives);
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A `functionCall` part as an OpenAI tool call (without `index`).
fn tool_call(call: &Value, id: String) -> Value {
    let name = call.get("name").and_then(Value::as_str).unwrap_or("");
    let arguments = match call.get("args") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(a) => a.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn parts(candidate: &Value) -> &[Value] {
    candidate
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

fn block_refusal(v: &Value) -> Option<String> {
    let reason = v
        .get("promptFeedback")
        .and_then(|f| f.get("blockReason"))
        .and_then(Value::as_str)?;
    let message = v
        .get("promptFeedback")
        .and_then(|f| f.get("blockReasonMessage"))
        .and_then(Value::as_str);
    Some(match message {
        Some(m) => format!("Gemini blocked the prompt ({reason}): {m}"),
        None => format!("Gemini blocked the prompt ({reason})"),
    })
}

/// The id of a response: `chatcmpl-` and Gemini's `responseId`, or `fallback`.
fn response_id(v: &Value, fallback: &str) -> String {
    v.get("responseId")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && r.len() <= 128)
        .map_or_else(|| fallback.to_string(), |r| format!("chatcmpl-{r}"))
}

/// A generateContent body as a `chat.completion` body, with its usage.
pub fn completion(
    body: &[u8],
    id: &str,
    model: &str,
    created: u64,
) -> Option<(Vec<u8>, Option<Usage>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if !v.is_object() {
        return None;
    }
    let rid = v.get("responseId").and_then(Value::as_str).unwrap_or("");
    let mut choices = Vec::new();
    let candidates = v.get("candidates").and_then(Value::as_array);
    for (position, c) in candidates.into_iter().flatten().enumerate() {
        let index = candidate_index(c, position);
        let mut text: Option<String> = None;
        let mut reasoning: Option<String> = None;
        let mut calls = Vec::new();
        for p in parts(c) {
            if let Some(call) = p.get("functionCall") {
                let id = part_call_id(p, call, rid, index, calls.len());
                calls.push(tool_call(call, id));
            } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                let into = if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    &mut reasoning
                } else {
                    &mut text
                };
                into.get_or_insert_with(String::new).push_str(t);
            }
        }
        let reason = c.get("finishReason").and_then(Value::as_str).unwrap_or("");
        let finish = finish_reason(reason, !calls.is_empty());
        let mut message = json!({"role": "assistant", "content": text});
        if let Some(r) = reasoning {
            message["reasoning_content"] = Value::String(r);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        choices.push(json!({
            "index": index,
            "message": message,
            "logprobs": logprobs(c),
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() && google_error(&v).is_some() {
        // An error body in a 200 answer: not an answer.
        return None;
    }
    if choices.is_empty() {
        let refusal = block_refusal(&v).unwrap_or_else(|| "Gemini returned no candidates".into());
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": refusal},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let usage = v.get("usageMetadata").and_then(usage);
    let mut out = json!({
        "id": response_id(&v, id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(u) = &usage {
        out["usage"] = usage_json(u);
    }
    Some((out.to_string().into_bytes(), usage))
}

/// The `error` object of a Google error body (alone or in a one-element
/// array, as streamGenerateContent without `alt=sse` sends it).
fn google_error(v: &Value) -> Option<&Map<String, Value>> {
    let v = match v {
        Value::Array(a) => a.first()?,
        v => v,
    };
    v.get("error")?.as_object()
}

/// OpenAI's error type for a Google RPC status, else for the HTTP status.
fn error_type(status: u16, rpc: Option<&str>) -> &'static str {
    match rpc {
        Some("INVALID_ARGUMENT")
        | Some("FAILED_PRECONDITION")
        | Some("OUT_OF_RANGE")
        | Some("NOT_FOUND") => "invalid_request_error",
        Some("UNAUTHENTICATED") => "authentication_error",
        Some("PERMISSION_DENIED") => "permission_error",
        Some("RESOURCE_EXHAUSTED") => "rate_limit_exceeded",
        _ => openai_error_type(status),
    }
}

/// A Google error body (or anything else) as an OpenAI error body.
pub fn error_body(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let error = parsed.as_ref().and_then(google_error);
    // The gateway's own upstream-role errors are in OpenAI's shape already.
    if error.is_some_and(|e| e.get("type").is_some_and(Value::is_string)) {
        return body.to_vec();
    }
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(
            || format!("Vertex AI answered HTTP {status}"),
            str::to_string,
        );
    let rpc = error.and_then(|e| e.get("status")).and_then(Value::as_str);
    json!({"error": {
        "message": message,
        "type": error_type(status, rpc),
        "param": null,
        "code": rpc,
    }})
    .to_string()
    .into_bytes()
}

/// Choices a stream may have (the gateway asks for at most 8).
const MAX_CHOICES: usize = 8;

/// What is known of one choice while its stream is translated.
#[derive(Debug, Default, Clone)]
struct ChoiceState {
    index: u64,
    started: bool,
    calls: usize,
    finished: bool,
}

/// streamGenerateContent's SSE -> OpenAI chunks, as it arrives.
#[derive(Debug)]
pub struct StreamToChunks {
    splitter: SseSplitter,
    w: ChunkWriter,
    named: bool,
    include_usage: bool,
    usage: Option<Usage>,
    choices: Vec<ChoiceState>,
    response_id: String,
    /// Log probabilities of the candidate being translated, for its first delta.
    logprobs: Value,
    done: bool,
}

impl StreamToChunks {
    /// `id` names the chunks until Gemini's first event gives its own.
    pub fn new(id: &str, model: &str, created: u64, include_usage: bool) -> Self {
        StreamToChunks {
            splitter: SseSplitter::default(),
            w: ChunkWriter {
                id: id.into(),
                model: model.into(),
                created,
            },
            named: false,
            include_usage,
            usage: None,
            choices: Vec::new(),
            response_id: String::new(),
            logprobs: Value::Null,
            done: false,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        for e in self.splitter.push(chunk) {
            let data = e.data.trim();
            if data.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(v) => self.event(&v, &mut out),
                Err(_) => self.fail(
                    "api_error",
                    "Vertex AI sent a stream event that is not JSON",
                    &mut out,
                ),
            }
            if self.done {
                return out;
            }
        }
        if self.splitter.pending_len() > MAX_SSE_EVENT {
            self.splitter.take_rest();
            self.fail(
                "api_error",
                "Vertex AI sent a stream event too large to translate",
                &mut out,
            );
            return out;
        }
        if end_of_stream {
            let rest = self.splitter.take_rest();
            if !String::from_utf8_lossy(&rest).trim().is_empty() {
                self.fail(
                    "api_error",
                    "Vertex AI's stream ended in the middle of an event",
                    &mut out,
                );
            } else if self.choices.is_empty() || self.choices.iter().any(|c| !c.finished) {
                self.fail(
                    "api_error",
                    "Vertex AI's stream ended before the answer was complete",
                    &mut out,
                );
            } else {
                if self.include_usage {
                    self.w.usage(&self.usage.unwrap_or_default(), &mut out);
                }
                ChunkWriter::done(&mut out);
                self.done = true;
            }
        }
        out
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if !self.done {
            ChunkWriter::error(kind, message, out);
            self.done = true;
        }
    }

    /// The slot of choice `index`, made on first sight; `None` past
    /// [`MAX_CHOICES`] (Vertex returns at most 8 candidates).
    fn choice(&mut self, index: u64) -> Option<usize> {
        match self.choices.iter().position(|c| c.index == index) {
            Some(i) => Some(i),
            None if self.choices.len() >= MAX_CHOICES => None,
            None => {
                self.choices.push(ChoiceState {
                    index,
                    ..Default::default()
                });
                Some(self.choices.len() - 1)
            }
        }
    }

    /// A delta for choice `index` (its first one carries the role).
    /// The candidate's log probabilities go with its first delta of the event.
    fn delta(&mut self, slot: usize, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let logprobs = std::mem::take(&mut self.logprobs);
        let c = &mut self.choices[slot];
        let mut delta = delta;
        if !c.started {
            c.started = true;
            if let Some(d) = delta.as_object_mut() {
                d.insert("role".into(), json!("assistant"));
                if !d.contains_key("content") && !d.contains_key("tool_calls") {
                    d.insert("content".into(), json!(""));
                }
            }
        }
        let v = json!({
            "id": self.w.id,
            "object": "chat.completion.chunk",
            "created": self.w.created,
            "model": self.w.model,
            "choices": [{"index": c.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        if let Some(e) = google_error(v) {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("Vertex AI reported an error in the stream");
            let code = e.get("code").and_then(Value::as_u64).unwrap_or(500);
            let rpc = e.get("status").and_then(Value::as_str);
            let kind = error_type(u16::try_from(code).unwrap_or(500), rpc);
            self.fail(kind, message, out);
            return;
        }
        if !v.is_object() {
            self.fail(
                "api_error",
                "Vertex AI sent a stream event that is not an object",
                out,
            );
            return;
        }
        if !self.named {
            self.named = true;
            self.w.id = response_id(v, &self.w.id);
            self.response_id = v
                .get("responseId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
        }
        if let Some(u) = v.get("usageMetadata").and_then(usage) {
            self.usage = Some(u);
        }
        self.logprobs = Value::Null;
        let candidates = v.get("candidates").and_then(Value::as_array);
        if candidates.is_none_or(Vec::is_empty) {
            if let Some(refusal) = block_refusal(v) {
                let Some(slot) = self.choice(0) else { return };
                if !self.choices[slot].finished {
                    self.choices[slot].finished = true;
                    self.delta(
                        slot,
                        json!({"refusal": refusal}),
                        Some("content_filter"),
                        out,
                    );
                }
            }
            return;
        }
        for (position, c) in candidates.into_iter().flatten().enumerate() {
            let index = candidate_index(c, position);
            let Some(slot) = self.choice(index) else {
                continue;
            };
            if self.choices[slot].finished {
                continue;
            }
            self.logprobs = logprobs(c);
            for p in parts(c) {
                if let Some(call) = p.get("functionCall") {
                    let n = self.choices[slot].calls;
                    self.choices[slot].calls += 1;
                    let id = part_call_id(p, call, &self.response_id, index, n);
                    let mut call = tool_call(call, id);
                    call["index"] = json!(n);
                    self.delta(slot, json!({"tool_calls": [call]}), None, out);
                } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if t.is_empty() {
                        continue;
                    }
                    let key = if p.get("thought").and_then(Value::as_bool) == Some(true) {
                        "reasoning_content"
                    } else {
                        "content"
                    };
                    self.delta(slot, json!({ key: t }), None, out);
                }
            }
            if let Some(reason) = c.get("finishReason").and_then(Value::as_str) {
                let called = self.choices[slot].calls > 0;
                self.choices[slot].finished = true;
                self.delta(slot, json!({}), Some(finish_reason(reason, called)), out);
            }
        }
    }
}

#[cfg(test)]
#[path = "gemini_response_tests.rs"]
mod tests;
