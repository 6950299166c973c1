//! The router role's response side for an OpenAI chat client whose request
//! went to a non-OpenAI backend: picks the translator from the answering
//! backend's schema, the status and the content type, and reports usage.
//!
//! Whole bodies (JSON answers and errors) are translated once complete
//! ([`ChatResponse::buffers`]); streams are translated chunk by chunk.

use crate::chat;
use crate::config::SchemaName;
use crate::converse;
use crate::gemini_response;
use crate::openai_to_anthropic::{self, EventStreamToChunks, SseToChunks};
use crate::response::MAX_ACCOUNTED_BODY;
use crate::usage::Usage;

/// Which API the backend answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Native Anthropic Messages (JSON or SSE).
    Anthropic,
    /// Claude on Bedrock InvokeModel (JSON or event-stream of Anthropic events).
    BedrockInvoke,
    /// Bedrock Converse (JSON or ConverseStream event-stream).
    Converse,
    /// Gemini on Vertex AI (JSON or streamGenerateContent SSE).
    Vertex,
}

impl Source {
    /// The translator for an OpenAI chat client answered by `schema`, if one
    /// is needed.
    pub fn for_schema(schema: SchemaName) -> Option<Source> {
        match schema {
            SchemaName::Anthropic | SchemaName::GCPAnthropic => Some(Source::Anthropic),
            SchemaName::AWSAnthropic => Some(Source::BedrockInvoke),
            SchemaName::AWSBedrock => Some(Source::Converse),
            SchemaName::GCPVertexAI => Some(Source::Vertex),
            _ => None,
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Source::Anthropic => "Anthropic",
            Source::BedrockInvoke | Source::Converse => "Bedrock",
            Source::Vertex => "Vertex AI",
        }
    }
}

#[derive(Debug)]
enum State {
    Json { body: Vec<u8>, overflow: bool },
    Error { status: u16, body: Vec<u8> },
    AnthropicSse(SseToChunks),
    BedrockInvokeStream(EventStreamToChunks),
    ConverseStream(converse::StreamToChunks),
    VertexSse(gemini_response::StreamToChunks),
}

/// One response being translated into OpenAI's chat shapes.
#[derive(Debug)]
pub struct ChatResponse {
    source: Source,
    state: State,
    model: String,
    id: String,
    created: u64,
    usage: Option<Usage>,
}

impl ChatResponse {
    /// `id` names the response when the backend gives it no id (Converse);
    /// `model` is the model the client asked for.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Source,
        status: u16,
        content_type: &str,
        stream: bool,
        include_usage: bool,
        model: &str,
        id: &str,
        created: u64,
    ) -> ChatResponse {
        let sse = content_type.starts_with("text/event-stream");
        let eventstream = content_type.starts_with("application/vnd.amazon.eventstream");
        let state = if status != 200 {
            State::Error {
                status,
                body: Vec::new(),
            }
        } else if stream && sse && source == Source::Anthropic {
            State::AnthropicSse(SseToChunks::new(model, created, include_usage))
        } else if stream && eventstream && source == Source::BedrockInvoke {
            State::BedrockInvokeStream(EventStreamToChunks::new(model, created, include_usage))
        } else if stream && eventstream && source == Source::Converse {
            State::ConverseStream(converse::StreamToChunks::new(
                id,
                model,
                created,
                include_usage,
            ))
        } else if stream && sse && source == Source::Vertex {
            State::VertexSse(gemini_response::StreamToChunks::new(
                id,
                model,
                created,
                include_usage,
            ))
        } else {
            State::Json {
                body: Vec::new(),
                overflow: false,
            }
        };
        ChatResponse {
            source,
            state,
            model: model.into(),
            id: id.into(),
            created,
            usage: None,
        }
    }

    /// Whether the whole body must be gathered before [`push`](Self::push)
    /// can translate it (the host buffers it and pushes it once, at the end).
    pub fn buffers(&self) -> bool {
        matches!(self.state, State::Json { .. } | State::Error { .. })
    }

    /// The content type the client gets.
    pub fn content_type(&self) -> &'static str {
        match self.state {
            State::Json { .. } | State::Error { .. } => "application/json",
            _ => "text/event-stream",
        }
    }

    /// For a binary (AWS event-stream) answer: the provider's last chunk in
    /// a readable form to search for the model it names (empty when it
    /// names none, as Converse). `None`: the raw chunk is readable.
    pub fn decoded_upstream(&self) -> Option<&[u8]> {
        match &self.state {
            State::BedrockInvokeStream(s) => Some(s.decoded()),
            State::ConverseStream(_) => Some(&[]),
            _ => None,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match &self.state {
            State::AnthropicSse(s) => s.usage(),
            State::BedrockInvokeStream(s) => s.usage(),
            State::ConverseStream(s) => s.usage(),
            State::VertexSse(s) => s.usage(),
            State::Json { .. } | State::Error { .. } => self.usage,
        }
    }

    /// The bytes to send for this chunk of the backend's body.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        match &mut self.state {
            State::AnthropicSse(s) => s.push(chunk, end_of_stream),
            State::BedrockInvokeStream(s) => s.push(chunk, end_of_stream),
            State::ConverseStream(s) => s.push(chunk, end_of_stream),
            State::VertexSse(s) => s.push(chunk, end_of_stream),
            State::Error { status, body } => {
                if body.len().saturating_add(chunk.len()) <= MAX_ACCOUNTED_BODY {
                    body.extend_from_slice(chunk);
                }
                if !end_of_stream {
                    return Vec::new();
                }
                if self.source == Source::Vertex {
                    return gemini_response::error_body(*status, body);
                }
                chat::error_body(*status, body, self.source.provider())
            }
            State::Json { body, overflow } => {
                if *overflow || body.len().saturating_add(chunk.len()) > MAX_ACCOUNTED_BODY {
                    *overflow = true;
                    *body = Vec::new();
                } else {
                    body.extend_from_slice(chunk);
                }
                if !end_of_stream {
                    return Vec::new();
                }
                let translated = if *overflow {
                    None
                } else {
                    match self.source {
                        Source::Anthropic | Source::BedrockInvoke => {
                            openai_to_anthropic::completion(body, &self.model, self.created)
                        }
                        Source::Converse => {
                            converse::completion(body, &self.id, &self.model, self.created)
                        }
                        Source::Vertex => {
                            gemini_response::completion(body, &self.id, &self.model, self.created)
                        }
                    }
                };
                match translated {
                    Some((out, usage)) => {
                        self.usage = usage;
                        out
                    }
                    None => chat::error_body(
                        502,
                        format!(
                            "{{\"message\":\"the gateway could not read {}'s answer\"}}",
                            self.source.provider()
                        )
                        .as_bytes(),
                        self.source.provider(),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_translator_by_status_and_content_type() {
        let r = |source, status, ct, stream| {
            ChatResponse::new(source, status, ct, stream, false, "m", "id", 1)
        };
        assert!(r(Source::Anthropic, 200, "application/json", false,).buffers());
        assert!(!r(Source::Anthropic, 200, "text/event-stream", true).buffers());
        assert!(r(Source::Anthropic, 400, "text/event-stream", true).buffers());
        assert!(!r(
            Source::Converse,
            200,
            "application/vnd.amazon.eventstream",
            true
        )
        .buffers());
        assert!(!r(
            Source::BedrockInvoke,
            200,
            "application/vnd.amazon.eventstream",
            true
        )
        .buffers());
        assert!(r(Source::BedrockInvoke, 200, "application/json", true).buffers());
        assert_eq!(
            r(
                Source::Converse,
                200,
                "application/vnd.amazon.eventstream",
                true
            )
            .content_type(),
            "text/event-stream"
        );
        assert!(!r(Source::Vertex, 200, "text/event-stream", true).buffers());
        assert!(r(Source::Vertex, 200, "application/json", false).buffers());
        assert_eq!(
            Source::for_schema(SchemaName::GCPVertexAI),
            Some(Source::Vertex)
        );
        assert_eq!(Source::for_schema(SchemaName::OpenAI), None);
        assert_eq!(
            Source::for_schema(SchemaName::AWSBedrock),
            Some(Source::Converse)
        );
    }

    #[test]
    fn json_and_errors_translate_at_the_end() {
        let mut c = ChatResponse::new(
            Source::Converse,
            200,
            "application/json",
            false,
            false,
            "nova",
            "req",
            5,
        );
        assert!(c
            .push(
                br#"{"output":{"message":{"content":[{"text":"hi"}]}},"#,
                false
            )
            .is_empty());
        let out = c.push(
            br#""stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":2}}"#,
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["id"], "req");
        assert_eq!(c.usage().unwrap().total, 5);
        let mut e = ChatResponse::new(
            Source::Anthropic,
            429,
            "application/json",
            true,
            false,
            "m",
            "i",
            1,
        );
        let out = e.push(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "slow");
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(e.usage(), None);
        let mut bad = ChatResponse::new(
            Source::Anthropic,
            200,
            "application/json",
            false,
            false,
            "m",
            "i",
            1,
        );
        let v: serde_json::Value = serde_json::from_slice(&bad.push(b"<html>", true)).unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not read"));
    }

    #[test]
    fn vertex_json_stream_and_errors() {
        let mut c = ChatResponse::new(
            Source::Vertex,
            200,
            "application/json",
            false,
            false,
            "gemini",
            "chatcmpl-aigw",
            5,
        );
        let out = c.push(
            br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}"#,
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(c.usage().unwrap().total, 5);
        let mut s = ChatResponse::new(
            Source::Vertex,
            200,
            "text/event-stream",
            true,
            true,
            "gemini",
            "chatcmpl-aigw",
            5,
        );
        assert_eq!(s.content_type(), "text/event-stream");
        let out = s.push(
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"totalTokenCount\":3}}\r\n\r\n",
            true,
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("data: [DONE]\n\n"));
        assert_eq!(s.usage().unwrap().input, 3);
        let mut e = ChatResponse::new(
            Source::Vertex,
            429,
            "application/json",
            true,
            false,
            "gemini",
            "i",
            1,
        );
        let out = e.push(
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_exceeded");
        assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
    }
}
