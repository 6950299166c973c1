//! A fast fake OpenAI upstream for the benchmark (`scripts/bench.sh`).
//!
//! `POST /v1/chat/completions` answers a fixed chat completion with usage, or,
//! when the request body has `"stream": true`, a server-sent event stream of
//! `--chunks` content chunks, a finish chunk, a usage chunk (when
//! `stream_options.include_usage` is true) and `data: [DONE]`. Every chunk is
//! its own body frame and the body yields between frames, so each chunk is
//! flushed on its own, as a real model server's tokens would be. Responses are
//! built once at start-up; a request costs one body read and a few copies.
//!
//! Also for the benchmark's Bedrock scenario and the soak run
//! (`scripts/soak.sh`): `POST .../converse` answers a fixed AWS Bedrock
//! Converse JSON response (the signature is not checked), `POST
//! .../v1/messages` a fixed Anthropic Messages response, and a chat request
//! whose body names the model `bench-error` gets a 400 in OpenAI's shape.
//!
//! Usage: `aigw-fake-upstream [--port N] [--chunks N] [--threads N]`; it prints
//! `listening on 127.0.0.1:PORT` once ready (port 0 picks a free port).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CONTENT: &str = "Hello! This is a fixed answer from the benchmark's fake upstream.";

const CONVERSE: &str = concat!(
    r#"{"output":{"message":{"role":"assistant","content":[{"text":"#,
    r#""Hello! This is a fixed answer from the benchmark's fake upstream."}]}},"#,
    r#""stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":14,"totalTokens":26},"#,
    r#""metrics":{"latencyMs":1}}"#
);

const MESSAGES: &str = concat!(
    r#"{"id":"msg_bench","type":"message","role":"assistant","model":"bench-model","#,
    r#""content":[{"type":"text","text":"Hello! This is a fixed answer from the benchmark's fake upstream."}],"#,
    r#""stop_reason":"end_turn","stop_sequence":null,"#,
    r#""usage":{"input_tokens":12,"output_tokens":14}}"#
);

const BAD_REQUEST: &str = r#"{"error":{"message":"bench-error is refused","type":"invalid_request_error","param":null,"code":null}}"#;

struct Canned {
    json: Bytes,
    chunks: Vec<Bytes>,
    usage_chunk: Bytes,
    done: Bytes,
}

impl Canned {
    fn new(chunks: usize) -> Self {
        let json = format!(
            concat!(
                r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"#,
                r#""model":"bench-model","choices":[{{"index":0,"message":{{"role":"assistant","#,
                r#""content":"{}"}},"logprobs":null,"finish_reason":"stop"}}],"#,
                r#""usage":{{"prompt_tokens":12,"completion_tokens":14,"total_tokens":26}}}}"#
            ),
            CONTENT
        );
        let head = r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model","choices":[{"index":0,"delta":"#;
        let mut out = Vec::with_capacity(chunks + 1);
        for i in 0..chunks {
            // Every chunk differs: LiteLLM aborts a stream that repeats a chunk.
            let delta = if i == 0 {
                format!(r#"{{"role":"assistant","content":"tok{i} "}}"#)
            } else {
                format!(r#"{{"content":"tok{i} "}}"#)
            };
            out.push(Bytes::from(format!(
                "{head}{delta},\"finish_reason\":null}}]}}\n\n"
            )));
        }
        out.push(Bytes::from(format!(
            "{head}{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
        )));
        let usage_chunk = Bytes::from(format!(
            concat!(
                r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"#,
                r#""model":"bench-model","choices":[],"#,
                r#""usage":{{"prompt_tokens":12,"completion_tokens":{},"total_tokens":{}}}}}"#,
                "\n\n"
            ),
            chunks,
            chunks + 12
        ));
        Canned {
            json: Bytes::from(json),
            chunks: out,
            usage_chunk,
            done: Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }
}

/// The value after `"key"` in a JSON text is `true` (whitespace and the colon
/// skipped). Good enough for the benchmark's request bodies.
fn flag(body: &[u8], key: &[u8]) -> bool {
    let mut i = 0;
    while i + key.len() <= body.len() {
        if &body[i..i + key.len()] == key {
            let rest = body[i + key.len()..]
                .iter()
                .skip_while(|b| b.is_ascii_whitespace() || **b == b':');
            let word: Vec<u8> = rest.take(4).copied().collect();
            if word == b"true" {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn contains(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

/// An SSE body: one frame per chunk, returning `Pending` once between frames
/// (and waking itself at once) so that hyper flushes every chunk separately.
struct SseBody {
    canned: Arc<Canned>,
    next: usize,
    usage: bool,
    parked: bool,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let n = this.canned.chunks.len();
        if this.next > n + 1 {
            return Poll::Ready(None);
        }
        if this.next > 0 && !this.parked {
            this.parked = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.parked = false;
        let i = this.next;
        this.next += 1;
        let data = if i < n {
            this.canned.chunks[i].clone()
        } else if i == n && this.usage {
            this.canned.usage_chunk.clone()
        } else if i == n {
            // No usage chunk asked for: go straight to [DONE].
            this.next = n + 2;
            this.canned.done.clone()
        } else {
            this.canned.done.clone()
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.next > self.canned.chunks.len() + 1
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

fn status(code: StatusCode, text: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = code;
    r
}

async fn handle(req: Request<Incoming>, canned: Arc<Canned>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_string();
    let canned_json = if path.ends_with("/converse") {
        Some(CONVERSE)
    } else if path.ends_with("/v1/messages") {
        Some(MESSAGES)
    } else {
        None
    };
    if req.method() != Method::POST
        || (canned_json.is_none() && !path.ends_with("/chat/completions"))
    {
        return Ok(status(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}"));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST, "{\"error\":\"bad body\"}")),
    };
    if let Some(text) = canned_json {
        let mut r = status(StatusCode::OK, text);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    if contains(&body, b"bench-error") {
        let mut r = status(StatusCode::BAD_REQUEST, BAD_REQUEST);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    if flag(&body, b"\"stream\"") {
        let usage = flag(&body, b"\"include_usage\"");
        let mut r = Response::new(
            SseBody {
                canned,
                next: 0,
                usage,
                parked: false,
            }
            .boxed(),
        );
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return Ok(r);
    }
    let mut r = Response::new(Full::new(canned.json.clone()).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

struct Args {
    port: u16,
    chunks: usize,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        chunks: 200,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--port" => args.port = value("--port")?.parse().map_err(|e| format!("{e}"))?,
            "--chunks" => args.chunks = value("--chunks")?.parse().map_err(|e| format!("{e}"))?,
            "--threads" => {
                args.threads = value("--threads")?.parse().map_err(|e| format!("{e}"))?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: aigw-fake-upstream [--port N] [--chunks N] [--threads N]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let canned = Arc::new(Canned::new(args.chunks));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let canned = canned.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, canned.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert!(flag(br#"{"stream": true}"#, b"\"stream\""));
        assert!(flag(br#"{"stream":true}"#, b"\"stream\""));
        assert!(!flag(br#"{"stream": false}"#, b"\"stream\""));
        assert!(flag(
            br#"{"stream_options":{"include_usage": true}}"#,
            b"\"include_usage\""
        ));
    }
}
