//! The thin layer between the pure filter logic and the proxy-wasm ABI.
//! Nothing here may panic: a panic kills the worker's VM.

use crate::anthropic::StreamUsage;
use crate::bedrock::EventStreamToSse;
use crate::chat_response::{ChatResponse, Source};
use crate::config::{PluginConfig, Role, SchemaName};
use crate::credentials::Credential;
use crate::credentials::CredentialCache;
use crate::error::{ErrorShape, GatewayError};
use crate::models::{list_body, lookup, ModelLookup};
use crate::request::{handoff, parse_handoff, parse_request, Endpoint, RequestFacts};
use crate::response::{ChunkOutput, JsonBody, OpenAiStream};
use crate::sse::SseSplitter;
use crate::upstream::{
    credential_header, prepare, prepare_headers_only, UpstreamRequest, CLIENT_HEADERS_REMOVED,
};
use crate::usage::Usage;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// The header routes match the model on. Set only by the gateway.
const MODEL_HEADER: &str = "x-ai-eg-model";
/// Internal: the router role tells the upstream role which API was called.
const ENDPOINT_HEADER: &str = "x-aigw-endpoint";
/// Filter state (`wasm.client_api`) read by the controller's local reply mappers.
const CLIENT_API_PROPERTY: &str = "client_api";
/// Endpoint metadata namespace and key that name the backend.
const BACKEND_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigw",
    "backend",
];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(PluginConfig::default()) })
    });
}}

thread_local! {
    // One VM per worker thread, so this cache is per worker.
    static CREDENTIALS: RefCell<CredentialCache> = RefCell::new(CredentialCache::default());
}

fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}

fn now_secs(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ns(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Root {
    config: Rc<PluginConfig>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log(LogLevel::Error, "aigw: missing plugin configuration");
            return false;
        };
        match PluginConfig::parse(&bytes) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("aigw: {e}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone();
        Some(match config.role {
            Role::Router => Box::new(RouterFilter::new(config)),
            Role::Upstream => Box::new(UpstreamFilter::new(config, context_id)),
        })
    }
}

// The SDK's string getters unwrap UTF-8 and so panic on a header value with
// obs-text bytes, which HTTP allows. These read bytes and decode lossily.
fn request_header(ctx: &dyn HttpContext, name: &str) -> Option<String> {
    ctx.get_http_request_header_bytes(name)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A header's value in a map read with one host call.
fn header_in(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn response_header(ctx: &dyn HttpContext, name: &str) -> Option<String> {
    ctx.get_http_response_header_bytes(name)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Sends an error in the client's API shape. The caller returns Pause.
fn send_error(ctx: &dyn HttpContext, shape: ErrorShape, error: &GatewayError) {
    if error.status >= 500 {
        log(LogLevel::Warn, &format!("aigw: {error}"));
    }
    ctx.send_http_response(
        u32::from(error.status),
        vec![("content-type", "application/json")],
        Some(&error.body(shape)),
    );
}

enum ResponseState {
    Untouched,
    Json(JsonBody),
    Stream(OpenAiStream),
    /// An Anthropic Messages JSON body (native or on Bedrock).
    AnthropicJson(JsonBody),
    /// Native Anthropic SSE, passed through and counted.
    AnthropicSse(SseSplitter, StreamUsage),
    /// Bedrock's event-stream, re-emitted as Anthropic SSE.
    BedrockStream(EventStreamToSse),
    /// A Bedrock error, buffered and re-shaped as an Anthropic error.
    BedrockError(u16),
    /// An OpenAI chat client answered by Anthropic or Bedrock: translated.
    Chat(Box<ChatResponse>),
    /// A whole Bedrock InvokeModel answer translated at its end
    /// (embeddings, count-tokens).
    Invoke(Box<crate::bedrock_invoke::Buffered>),
}

/// Router role: runs in the listener before routing.
struct RouterFilter {
    config: Rc<PluginConfig>,
    endpoint: Option<Endpoint>,
    shape: ErrorShape,
    facts: Option<RequestFacts>,
    response: ResponseState,
    usage_published: bool,
    /// A token reservation was published (reserve-then-settle rate limits):
    /// the request must end with a usage, zero if none, to settle it.
    reserved: bool,
    observer: crate::metrics::Observer,
    /// The response status, once its headers were seen.
    status: Option<u64>,
    /// An embeddings client asked for `encoding_format: base64`.
    embeddings_base64: bool,
}

impl RouterFilter {
    fn new(config: Rc<PluginConfig>) -> Self {
        RouterFilter {
            config,
            endpoint: None,
            shape: ErrorShape::OpenAi,
            facts: None,
            response: ResponseState::Untouched,
            usage_published: false,
            reserved: false,
            observer: crate::metrics::Observer::default(),
            status: None,
            embeddings_base64: false,
        }
    }

    fn fail(&mut self, error: GatewayError) -> Action {
        self.endpoint = None;
        send_error(self, self.shape, &error);
        Action::Pause
    }

    fn too_large(&self) -> GatewayError {
        GatewayError::client(
            413,
            format!(
                "request body is larger than the gateway's limit of {} bytes",
                self.config.max_request_bytes
            ),
        )
        .with_code("request_too_large")
    }

    fn route(&mut self, endpoint: Endpoint, body: &[u8]) -> Action {
        let facts = match parse_request(endpoint, body) {
            Ok(facts) => facts,
            Err(e) => return self.fail(e),
        };
        if lookup(&self.config.models, &facts.model) == ModelLookup::Unknown {
            let error = GatewayError::client(
                404,
                format!(
                    "The model `{}` does not exist or is not served by this gateway.",
                    facts.model
                ),
            )
            .with_param("model")
            .with_code("model_not_found");
            return self.fail(error);
        }
        if endpoint == Endpoint::Embeddings {
            self.embeddings_base64 = crate::bedrock_invoke::wants_base64(body);
        }
        self.set_http_request_header(MODEL_HEADER, Some(&facts.model));
        self.set_http_request_header(ENDPOINT_HEADER, Some(&handoff(endpoint, &facts)));
        if self
            .call_foreign_function("clear_route_cache", None)
            .is_err()
        {
            log(LogLevel::Warn, "aigw: clear_route_cache is not available");
        }
        if let Some(default_output) = self.config.reserve_output_tokens {
            let r =
                crate::reservation::estimate(body.len(), facts.requested_output, default_output);
            for (name, value) in crate::reservation::properties(r) {
                self.set_property(vec![name], Some(value.to_string().as_bytes()));
            }
            self.reserved = true;
        }
        self.facts = Some(facts);
        Action::Continue
    }

    fn publish_usage(&mut self, usage: Option<Usage>) {
        if self.usage_published {
            return;
        }
        self.usage_published = true;
        let u = match usage {
            Some(u) => u,
            // A failed or refused request releases its reservation.
            None if self.reserved => Usage::default(),
            None => return,
        };
        for (name, value) in [
            ("llm_input_token", u.input),
            ("llm_output_token", u.output),
            ("llm_total_token", u.total),
            ("llm_cached_input_token", u.cached_input),
            ("llm_cache_creation_input_token", u.cache_creation_input),
            ("llm_reasoning_token", u.reasoning),
        ] {
            self.set_property(vec![name], Some(value.to_string().as_bytes()));
        }
    }
}

impl Context for RouterFilter {}

impl HttpContext for RouterFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.observer.start_ns = Some(now_ns(self));
        // One read of the whole map: each host call costs about a microsecond.
        let headers = self.get_http_request_headers_bytes();
        let method = header_in(&headers, ":method").unwrap_or_default();
        let path = header_in(&headers, ":path").unwrap_or_default();
        self.shape = Endpoint::error_shape_for_path(&path);
        // Routing headers come from the gateway only, never from the client.
        for name in [MODEL_HEADER, ENDPOINT_HEADER] {
            if header_in(&headers, name).is_some() {
                self.set_http_request_header(name, None);
            }
        }
        let endpoint = match Endpoint::classify(&method, &path) {
            Some(Endpoint::Models) => {
                let body = list_body(&self.config.models, self.config.created);
                self.send_http_response(
                    200,
                    vec![("content-type", "application/json")],
                    Some(&body),
                );
                return Action::Pause;
            }
            Some(endpoint) => endpoint,
            None => {
                return self.fail(GatewayError::client(
                    404,
                    format!(
                        "{method} {} is not an endpoint of this gateway",
                        path.split('?').next().unwrap_or("")
                    ),
                ))
            }
        };
        self.endpoint = Some(endpoint);
        self.shape = endpoint.error_shape();
        if self.shape == ErrorShape::Anthropic {
            // The upstream role rewrites :path in the header map Envoy's own
            // error replies see; this tells them the client's API instead.
            self.set_property(vec![CLIENT_API_PROPERTY], Some(b"anthropic"));
        }
        let limit = self.config.max_request_bytes;
        let declared =
            header_in(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if limit > 0 && declared.is_some_and(|n| n > limit) {
            let error = self.too_large();
            return self.fail(error);
        }
        if end_of_stream {
            return self.fail(GatewayError::bad_request("request body is required"));
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(endpoint) = self.endpoint else {
            return Action::Continue;
        };
        if self.config.max_request_bytes > 0 && body_size as u64 > self.config.max_request_bytes {
            let error = self.too_large();
            return self.fail(error);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.route(endpoint, &body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.observe_response_headers();
        let Some(facts) = &self.facts else {
            return Action::Continue;
        };
        let stream = facts.stream;
        let client_wants_usage = facts.client_wants_usage;
        let schema = self
            .observer
            .backend
            .as_ref()
            .and_then(|b| self.config.backends.get(b).map(|c| c.schema))
            .unwrap_or_default();
        let status = response_header(self, ":status").unwrap_or_default();
        self.status = status.parse().ok();
        let content_type = response_header(self, "content-type").unwrap_or_default();
        if let Some(kind) = self.invoke_kind(schema, &status) {
            if end_of_stream {
                self.publish_usage(None);
                return Action::Continue;
            }
            let code = status.parse().unwrap_or(502);
            self.set_http_response_header("content-length", None);
            self.set_http_response_header("content-type", Some("application/json"));
            self.response =
                ResponseState::Invoke(Box::new(crate::bedrock_invoke::Buffered::new(kind, code)));
            return Action::Continue;
        }
        let chat_source =
            Source::for_schema(schema).filter(|_| self.endpoint == Some(Endpoint::ChatCompletions));
        if let Some(source) = chat_source {
            // An OpenAI chat client: the answer is translated to OpenAI's shapes.
            if end_of_stream {
                self.publish_usage(None);
                return Action::Continue;
            }
            let model = self
                .facts
                .as_ref()
                .map(|f| f.model.clone())
                .unwrap_or_default();
            let id = response_header(self, "x-amzn-requestid")
                .filter(|r| r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .map_or_else(|| "chatcmpl-aigw".to_string(), |r| format!("chatcmpl-{r}"));
            let chat = ChatResponse::new(
                source,
                status.parse().unwrap_or(502),
                &content_type,
                stream,
                client_wants_usage,
                &model,
                &id,
                now_secs(self),
            );
            self.set_http_response_header("content-length", None);
            self.set_http_response_header("content-type", Some(chat.content_type()));
            self.response = ResponseState::Chat(Box::new(chat));
            return Action::Continue;
        }
        if status != "200" {
            // Anthropic clients only: others already get their own shape.
            if schema == SchemaName::AWSAnthropic
                && self.shape == ErrorShape::Anthropic
                && !end_of_stream
            {
                if let Ok(code) = status.parse::<u16>() {
                    self.set_http_response_header("content-length", None);
                    self.set_http_response_header("content-type", Some("application/json"));
                    self.response = ResponseState::BedrockError(code);
                }
            }
            return Action::Continue;
        }
        self.response = match schema {
            SchemaName::AWSAnthropic
                if stream && content_type.starts_with("application/vnd.amazon.eventstream") =>
            {
                self.set_http_response_header("content-length", None);
                self.set_http_response_header("content-type", Some("text/event-stream"));
                ResponseState::BedrockStream(EventStreamToSse::default())
            }
            SchemaName::AWSAnthropic | SchemaName::Anthropic | SchemaName::GCPAnthropic
                if stream && content_type.starts_with("text/event-stream") =>
            {
                ResponseState::AnthropicSse(SseSplitter::default(), StreamUsage::default())
            }
            SchemaName::AWSAnthropic | SchemaName::Anthropic | SchemaName::GCPAnthropic => {
                ResponseState::AnthropicJson(JsonBody::default())
            }
            _ if stream && content_type.starts_with("text/event-stream") => {
                if !client_wants_usage {
                    // The gateway may drop the usage chunk, so the length changes.
                    self.set_http_response_header("content-length", None);
                }
                ResponseState::Stream(OpenAiStream::new(client_wants_usage))
            }
            _ => ResponseState::Json(JsonBody::default()),
        };
        if end_of_stream {
            self.publish_usage(None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let ResponseState::Chat(chat) = &self.response {
            // Whole bodies are gathered (Envoy buffers while paused) and
            // translated at the end; streams chunk by chunk.
            if chat.buffers() && !end_of_stream {
                self.observe_body(body_size, None);
                return Action::Pause;
            }
            let chunk = if body_size > 0 {
                self.get_http_response_body(0, body_size)
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            self.observe_body(body_size, Some(&chunk));
            let ResponseState::Chat(chat) = &mut self.response else {
                return Action::Continue;
            };
            let out = chat.push(&chunk, end_of_stream);
            let usage = chat.usage();
            if let Some(decoded) = chat.decoded_upstream() {
                let decoded = decoded.to_vec();
                self.scan_model(&decoded);
            }
            self.set_http_response_body(0, body_size, &out);
            if end_of_stream {
                self.publish_usage(usage);
            }
            return Action::Continue;
        }
        if let ResponseState::Invoke(_) = &self.response {
            if !end_of_stream {
                self.observe_body(body_size, None);
                return Action::Pause;
            }
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            self.observe_body(body_size, Some(&body));
            let ResponseState::Invoke(t) = &mut self.response else {
                return Action::Continue;
            };
            let out = t.push(&body, true);
            let usage = t.usage();
            self.set_http_response_body(0, body_size, &out);
            self.publish_usage(usage);
            return Action::Continue;
        }
        if let ResponseState::BedrockError(status) = self.response {
            self.observe_body(body_size, None);
            if !end_of_stream {
                return Action::Pause;
            }
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            let shaped = crate::bedrock::error_body(status, &body);
            self.set_http_response_body(0, body_size, &shaped);
            return Action::Continue;
        }
        let chunk = if body_size > 0 {
            self.get_http_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.observe_body(body_size, Some(&chunk));
        let (replacement, usage) = match &mut self.response {
            ResponseState::Untouched
            | ResponseState::BedrockError(_)
            | ResponseState::Chat(_)
            | ResponseState::Invoke(_) => return Action::Continue,
            ResponseState::Json(body) => {
                body.push(&chunk);
                (None, end_of_stream.then(|| body.usage()).flatten())
            }
            ResponseState::AnthropicJson(body) => {
                body.push(&chunk);
                let usage = end_of_stream
                    .then(|| body.bytes().and_then(crate::anthropic::usage_from_body))
                    .flatten();
                (None, usage)
            }
            ResponseState::AnthropicSse(splitter, usage) => {
                for event in splitter.push(&chunk) {
                    if let Ok(v) = serde_json::from_str(&event.data) {
                        usage.observe(&v);
                    }
                }
                if splitter.pending_len() > crate::response::MAX_SSE_EVENT {
                    splitter.take_rest();
                }
                // A stream that just stops would look like a complete answer.
                let tail = (end_of_stream && !usage.is_complete()).then(|| {
                    let mut all = chunk.clone();
                    all.extend(
                        GatewayError::stream_incomplete().stream_event(ErrorShape::Anthropic),
                    );
                    all
                });
                (tail, usage.usage())
            }
            ResponseState::BedrockStream(stream) => {
                let out = stream.push(&chunk, end_of_stream);
                let usage = stream.usage();
                // The decoded Anthropic SSE names the model; the frames hide it.
                self.scan_model(&out);
                (Some(out), usage)
            }
            ResponseState::Stream(stream) => {
                let replacement = match stream.push(&chunk, end_of_stream) {
                    ChunkOutput::Unchanged => None,
                    ChunkOutput::Replace(bytes) => Some(bytes),
                };
                (replacement, stream.usage())
            }
        };
        if let Some(bytes) = replacement {
            self.set_http_response_body(0, body_size, &bytes);
        }
        if end_of_stream {
            self.publish_usage(usage);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let usage = match &self.response {
            ResponseState::Stream(stream) => stream.usage(),
            ResponseState::Json(body) => body.usage(),
            ResponseState::AnthropicJson(body) => {
                body.bytes().and_then(crate::anthropic::usage_from_body)
            }
            ResponseState::AnthropicSse(_, usage) => usage.usage(),
            ResponseState::BedrockStream(stream) => stream.usage(),
            ResponseState::Chat(chat) => chat.usage(),
            ResponseState::Invoke(t) => t.usage(),
            ResponseState::Untouched | ResponseState::BedrockError(_) => None,
        };
        self.publish_usage(usage);
        self.record_metrics(usage);
    }
}

impl RouterFilter {
    /// The whole-body Bedrock InvokeModel translation this answer needs:
    /// embeddings on `AWSBedrock` (answers and errors), count-tokens on
    /// `AWSAnthropic` (answers; its errors take the Bedrock error path).
    fn invoke_kind(&self, schema: SchemaName, status: &str) -> Option<crate::bedrock_invoke::Kind> {
        use crate::bedrock_invoke::{family, model_for, Kind, INPUT_TOKENS_HEADER};
        match (self.endpoint?, schema) {
            (Endpoint::Embeddings, SchemaName::AWSBedrock) => {
                let client_model = self.facts.as_ref()?.model.clone();
                let backend = self
                    .observer
                    .backend
                    .as_ref()
                    .and_then(|b| self.config.backends.get(b))?;
                let header_tokens =
                    response_header(self, INPUT_TOKENS_HEADER).and_then(|v| v.trim().parse().ok());
                Some(Kind::Embeddings {
                    family: family(model_for(backend, &client_model)),
                    model: client_model,
                    base64: self.embeddings_base64,
                    header_tokens,
                })
            }
            (Endpoint::AnthropicCountTokens, SchemaName::AWSAnthropic) if status == "200" => {
                Some(Kind::CountTokens)
            }
            _ => None,
        }
    }
}

/// Metrics and access-log properties (see `metrics.rs`).
impl RouterFilter {
    fn observe_response_headers(&mut self) {
        let backend = self
            .get_property(BACKEND_METADATA.to_vec())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if let Some(name) = &backend {
            self.set_property(vec!["backend"], Some(name.as_bytes()));
            if let Some(b) = self.config.backends.get(name) {
                let provider = crate::metrics::provider_name(b.schema);
                self.set_property(vec!["provider"], Some(provider.as_bytes()));
            }
        }
        self.observer.backend = backend;
    }

    /// `chunk`: the body chunk when the caller read it already (one host
    /// call fewer).
    fn observe_body(&mut self, body_size: usize, chunk: Option<&[u8]>) {
        let stream = self.facts.as_ref().is_some_and(|f| f.stream);
        if self.observer.body(now_ns(self), body_size) && stream {
            let first = self.observer.first_byte_ns.unwrap_or(0);
            if let Some(ms) = self.observer.ms_since_start(first) {
                self.set_property(vec!["ttft_ms"], Some(ms.to_string().as_bytes()));
            }
        }
        // AWS event-stream frames carry the provider's JSON base64-encoded:
        // those answers are searched once decoded (`scan_model`).
        let binary = match &self.response {
            ResponseState::BedrockStream(_) => true,
            ResponseState::Chat(chat) => chat.decoded_upstream().is_some(),
            _ => false,
        };
        if body_size > 0 && !binary && self.facts.is_some() && self.observer.wants_model() {
            let size = body_size.min(crate::metrics::MODEL_SCAN_LIMIT);
            match chunk {
                Some(chunk) => self.scan_model(&chunk[..size.min(chunk.len())]),
                None => {
                    let body = self.get_http_response_body(0, size).unwrap_or_default();
                    self.scan_model(&body);
                }
            }
        }
    }

    /// Searches response bytes for the model the provider names.
    fn scan_model(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.facts.is_none() || !self.observer.wants_model() {
            return;
        }
        self.observer.scan(bytes);
        if let Some(model) = self.observer.response_model.clone() {
            self.set_property(vec!["response_model"], Some(model.as_bytes()));
        }
    }

    fn record_metrics(&mut self, usage: Option<Usage>) {
        if self.observer.recorded {
            return;
        }
        self.observer.recorded = true;
        let status = self.status.unwrap_or_else(|| {
            self.get_property(vec!["response", "code"])
                .map_or(0, |b| property_u64(&b))
        });
        // A refused request (unknown model, bad body) has no endpoint left.
        let endpoint = self.endpoint.or_else(|| {
            let method = request_header(self, ":method").unwrap_or_default();
            let path = request_header(self, ":path").unwrap_or_default();
            Endpoint::classify(&method, &path).filter(|e| *e != Endpoint::Models)
        });
        let outcome = crate::metrics::Outcome {
            endpoint,
            request_model: self.facts.as_ref().map(|f| f.model.clone()),
            stream: self.facts.as_ref().is_some_and(|f| f.stream),
            status: u16::try_from(status).unwrap_or(0),
            usage,
            end_ns: now_ns(self),
        };
        let records = crate::metrics::records(&self.config, &self.observer, &outcome);
        crate::metrics::sink::apply(&records);
    }
}

/// An integer property: Envoy hands them over as 8 little-endian bytes.
fn property_u64(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(raw) => u64::from_le_bytes(raw),
        Err(_) => String::from_utf8_lossy(bytes).trim().parse().unwrap_or(0),
    }
}

/// Upstream role: runs once per attempt, after Envoy picked the endpoint.
struct UpstreamFilter {
    config: Rc<PluginConfig>,
    context_id: u32,
    backend: Option<String>,
    endpoint: Option<Endpoint>,
    /// The request's `:path` and `:authority` as this attempt received them.
    path: String,
    authority: String,
    query: String,
    /// The model the router picked the route by.
    model: String,
    /// The router asked for stream usage, so the body must be rewritten.
    needs_stream_usage: bool,
    /// The request was rewritten in the headers phase; the body passes as is.
    done: bool,
    /// The rewritten request, kept while credentials are fetched.
    pending: Option<UpstreamRequest>,
    body_size: usize,
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
}

impl UpstreamFilter {
    fn new(config: Rc<PluginConfig>, context_id: u32) -> Self {
        UpstreamFilter {
            config,
            context_id,
            backend: None,
            endpoint: None,
            path: String::new(),
            authority: String::new(),
            query: String::new(),
            model: String::new(),
            needs_stream_usage: false,
            done: false,
            pending: None,
            body_size: 0,
            holding_stream: false,
            holding_json: false,
            decoder: None,
            decoded_len: 0,
            decode_error: None,
            response_sse: false,
            decode_reported: false,
        }
    }

    fn shape(&self) -> ErrorShape {
        self.endpoint
            .map_or(ErrorShape::OpenAi, Endpoint::error_shape)
    }

    fn fail(&mut self, error: GatewayError) -> Action {
        send_error(self, self.shape(), &error);
        Action::Pause
    }

    fn backend_config(&self) -> Option<&crate::config::BackendConfig> {
        self.backend
            .as_ref()
            .and_then(|b| self.config.backends.get(b))
    }

    /// The fast path: when the body needs no change and any credential is at
    /// hand, rewrite the headers now and let the body stream through.
    fn headers_only(&mut self) -> Option<Action> {
        let endpoint = self.endpoint?;
        let backend = self.backend_config()?;
        let request = prepare_headers_only(
            endpoint,
            &self.query,
            backend,
            &self.model,
            self.needs_stream_usage,
        )?;
        if let Some(auth) = &backend.auth {
            let source = self.config.credentials.as_ref()?;
            let now = now_secs(self);
            let fresh = CREDENTIALS.with(|c| {
                let c = c.borrow();
                c.is_fresh(now, source.ttl_seconds, self.config.config_version)
                    && c.get(&auth.credential).is_some()
            });
            if !fresh {
                // Fetching needs a pause; the buffered path handles it.
                return None;
            }
        }
        self.done = true;
        Some(self.finish(request, false))
    }

    /// Writes the rewritten request and its credential. Returns Pause while
    /// credentials are being fetched.
    fn finish(&mut self, request: UpstreamRequest, just_loaded: bool) -> Action {
        let Some(backend) = self.backend_config().cloned() else {
            return self.fail(GatewayError::internal("backend configuration disappeared"));
        };
        let mut credential_value = None;
        let mut signed = Vec::new();
        if let Some(auth) = &backend.auth {
            let Some(source) = self.config.credentials.clone() else {
                return self.fail(GatewayError::internal(
                    "no credential service is configured",
                ));
            };
            let now = now_secs(self);
            let fresh = CREDENTIALS.with(|c| {
                c.borrow()
                    .is_fresh(now, source.ttl_seconds, self.config.config_version)
            });
            let found = CREDENTIALS.with(|c| c.borrow().get(&auth.credential).cloned());
            // Right after a load, use what was loaded even if it looks stale
            // (an older controller version): fetching again would loop. A
            // missing credential may have been minted since: ask again.
            if (!fresh || found.is_none()) && !just_loaded {
                return self.fetch_credentials(request, &source);
            }
            let Some(credential) = found else {
                return self.fail(
                    GatewayError::upstream(
                        503,
                        format!(
                            "the upstream credential of backend {} is not available (the gateway's controller could not obtain it; see its log)",
                            self.backend.as_deref().unwrap_or("?")
                        ),
                    )
                    .with_code("upstream_credentials_unavailable"),
                );
            };
            match credential_header(auth, &credential) {
                Ok(header) => credential_value = header,
                Err(e) => return self.fail(e),
            }
            if let Credential::Aws(aws) = &credential {
                match crate::bedrock::sign(&request, &backend, aws, now) {
                    Ok(headers) => signed = headers,
                    Err(e) => return self.fail(e),
                }
            }
        }
        for name in &request.remove_headers {
            self.set_http_request_header(name, None);
        }
        // The gateway reads every answer: ask for it uncompressed (see
        // encoding.rs; a compressed one is decoded anyway).
        self.set_http_request_header("accept-encoding", Some("identity"));
        for (name, value) in &request.set_headers {
            self.set_http_request_header(name, Some(value));
        }
        for (name, value) in &request.default_headers {
            if self.get_http_request_header_bytes(name).is_none() {
                self.set_http_request_header(name, Some(value));
            }
        }
        // Unchanged pseudo-headers are left alone: a host call each.
        if request.path != self.path {
            self.set_http_request_header(":path", Some(&request.path));
        }
        if let Some(host) = request.host.as_ref().filter(|h| **h != self.authority) {
            self.set_http_request_header(":authority", Some(host));
        }
        if let Some(body) = &request.body {
            self.set_http_request_body(0, self.body_size, body);
            self.set_http_request_header("content-length", Some(&body.len().to_string()));
        }
        if let Some((name, value)) = credential_value {
            self.set_http_request_header(name, Some(&value));
        }
        for (name, value) in &signed {
            self.set_http_request_header(name, Some(value));
        }
        Action::Continue
    }

    /// When the provider of every backend of this cluster asked to slow
    /// down (429 with retry-after), none is called until the first one's
    /// time is up: the client gets a 429 with the time left. (Envoy does
    /// not retry a local answer of an upstream filter, so while any backend
    /// is available the request goes on and the retry policy fails over.)
    fn cooling_down(&mut self) -> Option<Action> {
        let now = now_secs(self);
        let mut left = u64::MAX;
        for backend in self.config.backends.keys() {
            let (bytes, _) = self.get_shared_data(&crate::failover::Cooldown::key(backend));
            let remaining = crate::failover::Cooldown::parse(&bytes?)?.remaining(now)?;
            left = left.min(remaining);
        }
        if left == u64::MAX {
            return None;
        }
        let error = GatewayError::upstream(
            429,
            format!("the provider asked the gateway to slow down; retry after {left} s"),
        )
        .with_code("rate_limit_exceeded");
        let left = left.to_string();
        self.send_http_response(
            429,
            vec![
                ("content-type", "application/json"),
                ("retry-after", left.as_str()),
                (crate::failover::COOLDOWN_HEADER, "1"),
            ],
            Some(&error.body(self.shape())),
        );
        Some(Action::Pause)
    }

    /// Turns a held 200 answer into a retriable 502; if no retry is left,
    /// the client gets it as an error in its own shape.
    fn fail_response(&mut self, body_size: usize, message: &str) {
        let error = GatewayError::upstream(502, message).with_code("upstream_response_error");
        self.set_http_response_header(":status", Some("502"));
        self.set_http_response_header("content-type", Some("application/json"));
        self.set_http_response_header("content-length", None);
        self.set_http_response_body(0, body_size, &error.body(self.shape()));
    }

    fn fetch_credentials(
        &mut self,
        request: UpstreamRequest,
        source: &crate::config::CredentialSource,
    ) -> Action {
        let token = std::env::var(&source.token_env).unwrap_or_default();
        let authorization = format!("Bearer {token}");
        let headers = vec![
            (":method", "GET"),
            (":path", source.path.as_str()),
            (":authority", source.authority.as_str()),
            ("authorization", authorization.as_str()),
        ];
        match self.dispatch_http_call(
            &source.cluster,
            headers,
            None,
            vec![],
            Duration::from_secs(5),
        ) {
            Ok(_) => {
                self.pending = Some(request);
                Action::Pause
            }
            Err(_) => self.fail(GatewayError::client(
                503,
                "the gateway could not reach its credential service",
            )),
        }
    }
}

impl Context for UpstreamFilter {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let _ = proxy_wasm::hostcalls::set_effective_context(self.context_id);
        let Some(request) = self.pending.take() else {
            return;
        };
        let status = self
            .get_http_call_response_header_bytes(":status")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let now = now_secs(self);
        let loaded = if status == "200" {
            CREDENTIALS.with(|c| c.borrow_mut().load(&body, now))
        } else {
            Err(format!("credential service answered {status}"))
        };
        if let Err(e) = loaded {
            // The controller is down or failing: keep serving with the
            // credentials fetched before (Envoy keeps serving its last
            // configuration too) rather than refusing every request.
            if CREDENTIALS.with(|c| c.borrow().is_loaded()) {
                log(
                    LogLevel::Warn,
                    &format!("aigw: {e}; using the credentials fetched before"),
                );
                if self.finish(request, true) == Action::Continue {
                    self.resume_http_request();
                }
                return;
            }
            log(LogLevel::Error, &format!("aigw: {e}"));
            send_error(
                self,
                self.shape(),
                &GatewayError::client(503, "upstream credentials are not available"),
            );
            return;
        }
        if self.finish(request, true) == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl UpstreamFilter {
    /// Decodes the compressed part of the held response buffer in place.
    /// Returns the buffer's new size, or `None` when the body was replaced
    /// by an error (the caller lets it go).
    fn decode_body(&mut self, body_size: usize, end_of_stream: bool) -> Option<usize> {
        let all = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
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
                        self.set_http_response_body(0, body_size, &decoded);
                        return Some(decoded.len());
                    }
                    Err(e) => {
                        self.decoder = None;
                        self.decode_error = Some(e.to_string());
                        if self.holding_json || self.holding_stream {
                            // The headers are still here: a retriable 502.
                            self.holding_json = false;
                            self.holding_stream = false;
                            let message = e.to_string();
                            self.fail_response(body_size, &message);
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
                out.extend(error.stream_event(self.shape()));
            } else if done == 0 {
                out.extend(error.body(self.shape()));
            }
        }
        self.set_http_response_body(0, body_size, &out);
        self.decoded_len = 0;
        None
    }

    fn check_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.holding_json {
            if body_size > crate::failover::MAX_CHECKED_JSON_BYTES {
                self.holding_json = false;
                return Action::Continue;
            }
            if !end_of_stream {
                return Action::Pause;
            }
            self.holding_json = false;
            let body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            if !crate::failover::json_is_valid(&body) {
                self.fail_response(body_size, "the model provider's answer was not valid JSON");
            }
            return Action::Continue;
        }
        if !self.holding_stream {
            return Action::Continue;
        }
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
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
                body_size,
                "the model provider's stream failed before its first token",
            );
        }
        Action::Continue
    }
}

impl HttpContext for UpstreamFilter {
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let status = response_header(self, ":status").unwrap_or_default();
        let content_type = response_header(self, "content-type").unwrap_or_default();
        self.response_sse = content_type.starts_with("text/event-stream");
        if let Some(encoding) = response_header(self, "content-encoding") {
            match crate::encoding::decoder_for(&encoding) {
                Ok(None) => {}
                Ok(Some(decoder)) => {
                    self.set_http_response_header("content-encoding", None);
                    self.set_http_response_header("content-length", None);
                    self.decoder = (!end_of_stream).then_some(decoder);
                }
                Err(e) => {
                    // Nothing downstream could read it: a retriable 502.
                    self.set_http_response_header(":status", Some("502"));
                    self.set_http_response_header("content-type", Some("application/json"));
                    self.set_http_response_header("content-encoding", None);
                    self.set_http_response_header("content-length", None);
                    self.decode_error = Some(e.to_string());
                    return Action::Continue;
                }
            }
        }
        if status == "200" && !end_of_stream && content_type.starts_with("text/event-stream") {
            // Nothing reaches the router until the first content event, so an
            // attempt that fails or stalls before it can still be retried.
            self.holding_stream = true;
            return Action::Pause;
        }
        if status == "200" && !end_of_stream && content_type.starts_with("application/json") {
            self.holding_json = true;
            return Action::Pause;
        }
        if status == "429" && response_header(self, crate::failover::COOLDOWN_HEADER).is_none() {
            let wait = response_header(self, "retry-after")
                .and_then(|v| crate::failover::retry_after_seconds(&v));
            if let (Some(wait), Some(backend)) = (wait, self.backend.as_deref()) {
                let until = crate::failover::Cooldown {
                    until: now_secs(self).saturating_add(wait),
                };
                let key = crate::failover::Cooldown::key(backend);
                let _ = self.set_shared_data(&key, Some(&until.encode()), None);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.decoder.is_some() || self.decode_error.is_some() {
            let Some(decoded) = self.decode_body(body_size, end_of_stream) else {
                return Action::Continue;
            };
            let action = self.check_response_body(decoded, end_of_stream);
            // While paused, Envoy keeps the (decoded) bytes and adds the next
            // chunk after them.
            self.decoded_len = if action == Action::Pause { decoded } else { 0 };
            return action;
        }
        self.check_response_body(body_size, end_of_stream)
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Envoy hands every attempt the same header map: restore the
        // original request before rewriting it for this attempt's backend.
        let headers = match self.get_property(vec![crate::failover::ORIGINAL_HEADERS_PROPERTY]) {
            Some(saved) => {
                let headers = crate::failover::decode_headers(&saved).unwrap_or_default();
                let pairs = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                self.set_http_request_headers_bytes(pairs);
                headers
            }
            None => {
                let headers = self.get_http_request_headers_bytes();
                self.set_property(
                    vec![crate::failover::ORIGINAL_HEADERS_PROPERTY],
                    Some(&crate::failover::encode_headers(&headers)),
                );
                headers
            }
        };
        self.path = header_in(&headers, ":path").unwrap_or_default();
        self.authority = header_in(&headers, ":authority").unwrap_or_default();
        self.query = self
            .path
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        let handoff = header_in(&headers, ENDPOINT_HEADER).and_then(|v| parse_handoff(&v));
        self.endpoint = handoff.map(|(endpoint, _)| endpoint);
        self.needs_stream_usage = handoff.is_some_and(|(_, needs)| needs);
        self.model = header_in(&headers, MODEL_HEADER).unwrap_or_default();
        for name in std::iter::once(&ENDPOINT_HEADER).chain(CLIENT_HEADERS_REMOVED) {
            if header_in(&headers, name).is_some() {
                self.set_http_request_header(name, None);
            }
        }
        self.backend = self
            .get_property(BACKEND_METADATA.to_vec())
            .and_then(|b| String::from_utf8(b).ok());
        if self.backend_config().is_none() {
            let error = GatewayError::internal(format!(
                "the endpoint picked has no backend configuration ({})",
                self.backend.as_deref().unwrap_or("no metadata")
            ));
            return self.fail(error);
        }
        if self.endpoint.is_none() {
            return self.fail(GatewayError::internal(
                "request did not pass the gateway's router",
            ));
        }
        if let Some(action) = self.cooling_down() {
            return action;
        }
        if end_of_stream {
            return self.fail(GatewayError::bad_request("request body is required"));
        }
        if let Some(action) = self.headers_only() {
            return action;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.done {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.body_size = body_size;
        let (Some(endpoint), Some(backend)) = (self.endpoint, self.backend_config()) else {
            return Action::Continue;
        };
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let bedrock =
            backend.schema == SchemaName::AWSAnthropic && endpoint == Endpoint::AnthropicMessages;
        match prepare(endpoint, &self.query, backend, &body) {
            Ok(mut request) => {
                // Bedrock takes Anthropic's beta flags in the body.
                if let Some(beta) = request_header(self, "anthropic-beta").filter(|_| bedrock) {
                    crate::bedrock::add_beta(&mut request, &beta);
                }
                self.finish(request, false)
            }
            Err(e) => self.fail(e),
        }
    }
}
