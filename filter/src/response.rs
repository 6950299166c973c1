//! Response handling for OpenAI-schema backends: the body reaches the client
//! as the provider sent it, the usage is read on the way, and the usage-only
//! stream chunk the gateway asked for is dropped if the client did not.

use crate::sse::SseSplitter;
use crate::usage::Usage;
use serde_json::Value;

/// Largest JSON body the gateway reads usage from; larger ones pass through
/// uncounted rather than being held in memory.
pub const MAX_ACCOUNTED_BODY: usize = 32 << 20;
/// Largest single SSE event the gateway will hold while it waits for its end.
pub const MAX_SSE_EVENT: usize = 8 << 20;

/// What to do with a chunk of response body.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutput {
    /// Send the chunk as it came.
    Unchanged,
    /// Send these bytes instead.
    Replace(Vec<u8>),
}

/// Reads usage from a non-streaming JSON body without changing it.
#[derive(Debug, Default)]
pub struct JsonBody {
    body: Vec<u8>,
    overflow: bool,
}

impl JsonBody {
    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflow || self.body.len() + chunk.len() > MAX_ACCOUNTED_BODY {
            self.overflow = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    pub fn usage(&self) -> Option<Usage> {
        if self.overflow {
            return None;
        }
        Usage::from_openai_body(&self.body)
    }

    /// The body read so far, unless it was too large to keep.
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.overflow).then_some(self.body.as_slice())
    }
}

/// Follows an OpenAI SSE stream.
#[derive(Debug)]
pub struct OpenAiStream {
    splitter: SseSplitter,
    drop_usage_chunk: bool,
    usage: Option<Usage>,
    broken: bool,
    /// `[DONE]`, a finish reason or the provider's own error was seen: the
    /// stream did not just stop.
    complete: bool,
}

impl OpenAiStream {
    pub fn new(client_wants_usage: bool) -> Self {
        OpenAiStream {
            splitter: SseSplitter::default(),
            drop_usage_chunk: !client_wants_usage,
            usage: None,
            broken: false,
            complete: false,
        }
    }

    fn note_completion(&mut self, data: &str, parsed: Option<&Value>) {
        let finished = || {
            let v = parsed?;
            if v.get("error").is_some() {
                return Some(true);
            }
            let choices = v.get("choices")?.as_array()?;
            Some(
                choices
                    .iter()
                    .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null())),
            )
        };
        if data.trim() == "[DONE]" || finished() == Some(true) {
            self.complete = true;
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> ChunkOutput {
        if self.broken {
            return ChunkOutput::Unchanged;
        }
        let events = self.splitter.push(chunk);
        let mut out = Vec::new();
        let mut dropped = false;
        for event in events {
            let parsed: Option<Value> = serde_json::from_str(&event.data).ok();
            self.note_completion(&event.data, parsed.as_ref());
            if let Some(usage) = parsed
                .as_ref()
                .and_then(|v| v.get("usage"))
                .and_then(Usage::from_openai)
            {
                self.usage = Some(usage);
                let no_choices = parsed
                    .as_ref()
                    .and_then(|v| v.get("choices"))
                    .and_then(Value::as_array)
                    .is_none_or(|c| c.is_empty());
                if self.drop_usage_chunk && no_choices {
                    dropped = true;
                    continue;
                }
            }
            out.extend_from_slice(&event.raw);
        }
        if end_of_stream || self.splitter.pending_len() > MAX_SSE_EVENT {
            // An event this large is not one we can follow: release what was
            // held and pass the rest through untouched.
            self.broken = !end_of_stream;
            out.extend(self.splitter.take_rest());
        }
        if end_of_stream && !self.complete {
            // A stream that just stops would look like a complete answer.
            let error = crate::error::GatewayError::stream_incomplete();
            let tail = error.stream_event(crate::error::ErrorShape::OpenAi);
            if self.drop_usage_chunk {
                out.extend(tail);
            } else {
                let mut all = chunk.to_vec();
                all.extend(tail);
                return ChunkOutput::Replace(all);
            }
            return ChunkOutput::Replace(out);
        }
        if !self.drop_usage_chunk {
            return ChunkOutput::Unchanged;
        }
        // Complete events go out now; a partial one waits for its end.
        if !dropped && out.len() == chunk.len() && out == chunk {
            ChunkOutput::Unchanged
        } else {
            ChunkOutput::Replace(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(stream: &str, chunk_size: usize, wants: bool) -> (Vec<u8>, Option<Usage>) {
        let mut s = OpenAiStream::new(wants);
        let bytes = stream.as_bytes();
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = bytes.chunks(chunk_size).collect();
        for (i, c) in chunks.iter().enumerate() {
            match s.push(c, i + 1 == chunks.len()) {
                ChunkOutput::Unchanged => out.extend_from_slice(c),
                ChunkOutput::Replace(b) => out.extend(b),
            }
        }
        (out, s.usage())
    }

    #[test]
    fn usage_chunk_dropped_when_client_did_not_ask() {
        for size in [1, 3, 17, 1000] {
            let (out, usage) = run(STREAM, size, false);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("prompt_tokens"), "size {size}");
            assert!(out.contains("Hi") && out.ends_with("data: [DONE]\n\n"));
            assert_eq!(usage.unwrap().total, 7);
        }
    }

    #[test]
    fn stream_unchanged_when_client_asked() {
        for size in [1, 5, 1000] {
            let (out, usage) = run(STREAM, size, true);
            assert_eq!(out, STREAM.as_bytes());
            assert_eq!(usage.unwrap().input, 5);
        }
    }

    #[test]
    fn unterminated_tail_is_released_at_end_then_an_error_event() {
        let (out, _) = run("data: {\"x\":1}\n\ndata: tail", 4, false);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("data: {\"x\":1}\n\ndata: tail"), "{out}");
        assert!(out.contains("upstream_stream_incomplete"), "{out}");
    }

    #[test]
    fn a_stream_that_just_stops_ends_with_an_error_event() {
        let cut =
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        let finished = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let provider_error = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        let cases = [
            (cut, true),
            (finished, false),
            (provider_error, false),
            (STREAM, false),
            ("data: [DONE]\n\n", false),
        ];
        for (stream, wants_error) in cases {
            for wants_usage in [false, true] {
                for size in [1, 7, 1000] {
                    let (out, _) = run(stream, size, wants_usage);
                    let out = String::from_utf8(out).unwrap();
                    let error = "data: {\"error\":{\"message\":\"the model provider's stream ended before the answer was complete\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"upstream_stream_incomplete\"}}\n\n";
                    assert_eq!(
                        out.ends_with(error),
                        wants_error,
                        "{stream:?} {size}: {out}"
                    );
                    assert!(out.starts_with(&stream[..stream.len().min(10)]));
                }
            }
        }
    }

    #[test]
    fn json_body_usage_and_overflow() {
        let mut b = JsonBody::default();
        b.push(br#"{"usage":{"prompt_tokens":1,"#);
        b.push(br#""completion_tokens":2,"total_tokens":3}}"#);
        assert_eq!(b.usage().unwrap().total, 3);
        let mut big = JsonBody::default();
        big.push(&vec![b' '; MAX_ACCOUNTED_BODY]);
        big.push(b"x");
        assert_eq!(big.usage(), None);
    }
}
