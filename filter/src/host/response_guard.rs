//! What happens to a provider's answer before anything reads it: a
//! compressed answer is decoded, a 200 JSON answer is held until it parses
//! and a 200 stream until its first content event, so that a broken answer
//! becomes a 502 in the client's shape (retriable, in the upstream role)
//! instead of a 200 the client cannot read. Used by the upstream role on
//! every attempt and by the router role for the rules it serves directly.

use super::*;

#[derive(Default)]
pub(super) struct ResponseGuard {
    /// The response headers are held until the stream's first content event.
    holding_stream: bool,
    /// A JSON answer is held until it is known to parse.
    holding_json: bool,
    /// The provider compressed its answer: decoded here (`encoding.rs`).
    decoder: Option<crate::encoding::Decoder>,
    /// Bytes at the start of Envoy's held response buffer already decoded.
    decoded_len: usize,
    /// The answer could not be decoded: its bytes are replaced by an error.
    decode_error: Option<String>,
    /// The answer is an SSE stream (from its content type).
    response_sse: bool,
    /// The decoding error went out: later bytes are dropped.
    decode_reported: bool,
    /// The answer was replaced by the gateway's 502 while held.
    replaced: bool,
    /// Envoy's buffer as this callback read or wrote it (one host call
    /// fewer for the router role that reads it next).
    buffer: Option<Vec<u8>>,
}

impl ResponseGuard {
    /// The response headers (read by the caller as one map). Pause: they
    /// are held until the body says whether the answer is sound.
    pub(super) fn on_headers(
        &mut self,
        ctx: &dyn HttpContext,
        headers: &[(String, Vec<u8>)],
        end_of_stream: bool,
    ) -> Action {
        let status = header_in(headers, ":status").unwrap_or_default();
        let content_type = header_in(headers, "content-type").unwrap_or_default();
        self.response_sse = content_type.starts_with("text/event-stream");
        if let Some(encoding) = header_in(headers, "content-encoding") {
            match crate::encoding::decoder_for(&encoding) {
                Ok(None) => {}
                Ok(Some(decoder)) => {
                    ctx.set_http_response_header("content-encoding", None);
                    ctx.set_http_response_header("content-length", None);
                    self.decoder = (!end_of_stream).then_some(decoder);
                }
                Err(e) => {
                    // Nothing downstream could read it: a retriable 502.
                    ctx.set_http_response_header(":status", Some("502"));
                    ctx.set_http_response_header("content-type", Some("application/json"));
                    ctx.set_http_response_header("content-encoding", None);
                    ctx.set_http_response_header("content-length", None);
                    self.decode_error = Some(e.to_string());
                    self.replaced = true;
                    return Action::Continue;
                }
            }
        }
        if status == "200" && !end_of_stream && content_type.starts_with("text/event-stream") {
            // Nothing goes on until the first content event, so an attempt
            // that fails or stalls before it can still be retried.
            self.holding_stream = true;
            return Action::Pause;
        }
        if status == "200" && !end_of_stream && content_type.starts_with("application/json") {
            self.holding_json = true;
            return Action::Pause;
        }
        Action::Continue
    }

    /// Whether the answer's headers are still held.
    pub(super) fn holding(&self) -> bool {
        self.holding_json || self.holding_stream
    }

    /// Whether the gateway replaced the answer by its own 502 (status and
    /// content type set, the body an error in the client's shape).
    pub(super) fn replaced(&self) -> bool {
        self.replaced
    }

    /// Envoy's response buffer if this callback read it and left it as is.
    pub(super) fn take_buffer(&mut self) -> Option<Vec<u8>> {
        self.buffer.take()
    }

    /// A body chunk: decodes and checks it in Envoy's buffer. Returns what
    /// to do and the buffer's size now.
    pub(super) fn on_body(
        &mut self,
        ctx: &dyn HttpContext,
        shape: ErrorShape,
        body_size: usize,
        end_of_stream: bool,
    ) -> (Action, usize) {
        self.buffer = None;
        if self.decoder.is_none() && self.decode_error.is_none() {
            return (self.check(ctx, shape, body_size, end_of_stream), body_size);
        }
        let Some(decoded) = self.decode(ctx, shape, body_size, end_of_stream) else {
            return (Action::Continue, body_size);
        };
        let action = self.check(ctx, shape, decoded, end_of_stream);
        self.kept(action, decoded);
        (action, decoded)
    }

    /// The caller's answer to this chunk: while paused, Envoy keeps the
    /// (decoded) bytes and adds the next chunk after them.
    pub(super) fn kept(&mut self, action: Action, size: usize) {
        if self.decoder.is_some() {
            self.decoded_len = if action == Action::Pause { size } else { 0 };
        }
    }

    /// Turns a held 200 answer into a 502 in the client's shape.
    fn fail_response(
        &mut self,
        ctx: &dyn HttpContext,
        shape: ErrorShape,
        body_size: usize,
        message: &str,
    ) {
        let error = GatewayError::upstream(502, message).with_code("upstream_response_error");
        ctx.set_http_response_header(":status", Some("502"));
        ctx.set_http_response_header("content-type", Some("application/json"));
        ctx.set_http_response_header("content-length", None);
        ctx.set_http_response_body(0, body_size, &error.body(shape));
        self.replaced = true;
    }

    /// Decodes the compressed part of the held response buffer in place.
    /// Returns the buffer's new size, or `None` when the body was replaced
    /// by an error (the caller lets it go).
    fn decode(
        &mut self,
        ctx: &dyn HttpContext,
        shape: ErrorShape,
        body_size: usize,
        end_of_stream: bool,
    ) -> Option<usize> {
        let all = ctx.get_http_response_body(0, body_size).unwrap_or_default();
        let done = self.decoded_len.min(all.len());
        if self.decode_error.is_none() {
            if let Some(decoder) = self.decoder.as_mut() {
                match decoder.push(&all[done..], end_of_stream) {
                    Ok(out) => {
                        if done == all.len() && out.is_empty() {
                            return Some(body_size);
                        }
                        let mut decoded = all[..done].to_vec();
                        decoded.extend(out);
                        ctx.set_http_response_body(0, body_size, &decoded);
                        let size = decoded.len();
                        self.buffer = Some(decoded);
                        return Some(size);
                    }
                    Err(e) => {
                        self.decoder = None;
                        self.decode_error = Some(e.to_string());
                        if self.holding() {
                            // The headers are still here: a 502.
                            self.holding_json = false;
                            self.holding_stream = false;
                            let message = e.to_string();
                            self.fail_response(ctx, shape, body_size, &message);
                            self.decode_reported = true;
                            return None;
                        }
                    }
                }
            }
        }
        // The headers went out: what was decoded stays, the rest becomes an
        // error in the client's shape at the end.
        let mut out = all[..done].to_vec();
        if end_of_stream && !self.decode_reported {
            self.decode_reported = true;
            let message = self.decode_error.clone().unwrap_or_default();
            let error = GatewayError::upstream(502, message).with_code("upstream_response_error");
            // (Response headers cannot be read in the body phase.)
            if self.response_sse {
                out.extend(error.stream_event(shape));
            } else if done == 0 {
                out.extend(error.body(shape));
            }
        }
        ctx.set_http_response_body(0, body_size, &out);
        self.decoded_len = 0;
        None
    }

    fn check(
        &mut self,
        ctx: &dyn HttpContext,
        shape: ErrorShape,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.holding_json {
            if body_size > crate::failover::MAX_CHECKED_JSON_BYTES {
                self.holding_json = false;
                return Action::Continue;
            }
            if !end_of_stream {
                return Action::Pause;
            }
            self.holding_json = false;
            let body = self.read(ctx, body_size);
            if !crate::failover::json_is_valid(&body) {
                self.fail_response(
                    ctx,
                    shape,
                    body_size,
                    "the model provider's answer was not valid JSON",
                );
            } else {
                self.buffer = Some(body);
            }
            return Action::Continue;
        }
        if !self.holding_stream {
            return Action::Continue;
        }
        let body = self.read(ctx, body_size);
        let start = crate::failover::sse_stream_start(&body);
        let failed = match start {
            crate::failover::StreamStart::Content => false,
            crate::failover::StreamStart::Error => true,
            crate::failover::StreamStart::NeedMore
                if !end_of_stream && body_size < crate::failover::MAX_HELD_STREAM_BYTES =>
            {
                return Action::Pause;
            }
            crate::failover::StreamStart::NeedMore => end_of_stream,
        };
        self.holding_stream = false;
        if failed {
            self.fail_response(
                ctx,
                shape,
                body_size,
                "the model provider's stream failed before its first token",
            );
        } else {
            self.buffer = Some(body);
        }
        Action::Continue
    }

    /// The buffer: as decoded this callback, or read from Envoy.
    fn read(&mut self, ctx: &dyn HttpContext, body_size: usize) -> Vec<u8> {
        match self.buffer.take() {
            Some(bytes) if bytes.len() == body_size => bytes,
            _ => ctx.get_http_response_body(0, body_size).unwrap_or_default(),
        }
    }
}
