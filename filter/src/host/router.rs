//! The router role: runs in the listener before routing; answers local
//! endpoints, translates responses back and counts usage.

use super::backend_request::{self, WriteError};
use super::response_guard::ResponseGuard;
use super::*;

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
pub(super) struct RouterFilter {
    config: Rc<PluginConfig>,
    endpoint: Option<Endpoint>,
    shape: ErrorShape,
    facts: Option<RequestFacts>,
    response: ResponseState,
    usage_published: bool,
    /// The usage published (kept: the log phase must not parse it again).
    usage: Option<Usage>,
    /// A token reservation was published (reserve-then-settle rate limits):
    /// the request must end with a usage, zero if none, to settle it.
    reserved: bool,
    observer: crate::metrics::Observer,
    /// The response status, once its headers were seen.
    status: Option<u64>,
    /// An embeddings client asked for `encoding_format: base64`.
    embeddings_base64: bool,
    /// Served directly (`PluginConfig::direct`): the request as it goes
    /// to its one backend, and what its answer needs.
    direct: Option<Direct>,
    /// The client's request headers as Envoy holds them, kept where some
    /// model is served directly.
    request_headers: Vec<(String, Vec<u8>)>,
    context_id: u32,
    /// Envoy's response buffer as the guard read it this callback.
    response_buffer: Option<Vec<u8>>,
}

/// A request the router role writes for its backend itself.
struct Direct {
    backend: String,
    body_size: usize,
    /// The rewritten request, kept while credentials are fetched.
    pending: Option<UpstreamRequest>,
    guard: ResponseGuard,
    /// The answer's headers while the guard holds them.
    held_headers: Option<Vec<(String, Vec<u8>)>>,
}

impl RouterFilter {
    pub(super) fn new(config: Rc<PluginConfig>, context_id: u32) -> Self {
        RouterFilter {
            config,
            endpoint: None,
            shape: ErrorShape::OpenAi,
            facts: None,
            response: ResponseState::Untouched,
            usage_published: false,
            usage: None,
            reserved: false,
            observer: crate::metrics::Observer::default(),
            status: None,
            embeddings_base64: false,
            direct: None,
            request_headers: Vec::new(),
            context_id,
            response_buffer: None,
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
        let direct = self.config.direct.get(&facts.model).cloned();
        self.set_http_request_header(MODEL_HEADER, Some(&facts.model));
        if direct.is_none() {
            self.set_http_request_header(ENDPOINT_HEADER, Some(&handoff(endpoint, &facts)));
        }
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
                self.publish(name, value.to_string().as_bytes());
            }
            self.reserved = true;
        }
        let model = facts.model.clone();
        self.facts = Some(facts);
        match direct {
            Some(backend) => self.route_directly(endpoint, backend, &model, body),
            None => Action::Continue,
        }
    }

    /// Writes the request for the rule's one backend (what the upstream
    /// role does on other rules' attempts).
    fn route_directly(
        &mut self,
        endpoint: Endpoint,
        name: String,
        model: &str,
        body: &[u8],
    ) -> Action {
        self.request_headers
            .push((MODEL_HEADER.to_string(), model.as_bytes().to_vec()));
        let Some(backend) = self.config.backends.get(&name) else {
            return self.fail(GatewayError::internal(format!(
                "the backend {name} of a directly served model has no configuration"
            )));
        };
        // A backend that asked to slow down gets nothing until its time is
        // up: the rule has no other backend to try.
        if let Some(left) = backend_request::cooldown_left(self, &name, &mut None) {
            self.endpoint = None;
            backend_request::send_cooldown_reply(self, self.shape, left);
            return Action::Pause;
        }
        let path = header_in(&self.request_headers, ":path").unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let request = match backend_request::prepare_for(
            endpoint,
            query,
            backend,
            &self.request_headers,
            body,
        ) {
            Ok(request) => request,
            Err(e) => return self.fail(e),
        };
        self.direct = Some(Direct {
            backend: name,
            body_size: body.len(),
            pending: None,
            guard: ResponseGuard::default(),
            held_headers: None,
        });
        self.write_direct(request, false)
    }

    fn write_direct(&mut self, mut request: UpstreamRequest, just_loaded: bool) -> Action {
        let Some(direct) = &self.direct else {
            return Action::Continue;
        };
        let Some(backend) = self.config.backends.get(&direct.backend) else {
            return self.fail(GatewayError::internal("backend configuration disappeared"));
        };
        let target = backend_request::Target {
            config: &self.config,
            backend_name: &direct.backend,
            backend,
            original: &self.request_headers,
            map_is_original: true,
            body_size: direct.body_size,
            direct: true,
            // Read when the request began (just before its body).
            now_secs: self.observer.start_ns.map(|ns| ns / 1_000_000_000),
        };
        let error = match backend_request::write(self, &target, &mut request, just_loaded) {
            Ok(()) => return Action::Continue,
            Err(WriteError::Fetch(source)) => {
                match backend_request::fetch_credentials(self, &source) {
                    Ok(()) => {
                        if let Some(direct) = &mut self.direct {
                            direct.pending = Some(request);
                        }
                        return Action::Pause;
                    }
                    Err(e) => e,
                }
            }
            Err(WriteError::Unavailable(e) | WriteError::Failed(e)) => e,
        };
        self.fail(error)
    }

    fn publish_usage(&mut self, usage: Option<Usage>) {
        if self.usage_published {
            return;
        }
        self.usage_published = true;
        self.usage = usage;
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
            self.publish(name, value.to_string().as_bytes());
        }
    }

    /// Sets the filter state `wasm.<name>` if anything reads it.
    fn publish(&self, name: &str, value: &[u8]) {
        if self.config.publishes(name) {
            self.set_property(vec![name], Some(value));
        }
    }
}

impl Context for RouterFilter {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let _ = proxy_wasm::hostcalls::set_effective_context(self.context_id);
        let Some(request) = self.direct.as_mut().and_then(|d| d.pending.take()) else {
            return;
        };
        let action = match backend_request::load_fetched(self, body_size) {
            Ok(()) => self.write_direct(request, true),
            Err(error) => self.fail(error),
        };
        if action == Action::Continue {
            self.resume_http_request();
        }
    }
}

impl HttpContext for RouterFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.observer.start_ns = Some(now_ns(self));
        // One read of the whole map: each host call costs about a microsecond.
        let headers = self.get_http_request_headers_bytes();
        let method = header_in(&headers, ":method").unwrap_or_default();
        let path = header_in(&headers, ":path").unwrap_or_default();
        self.shape = Endpoint::error_shape_for_path(&path);
        // Routing headers come from the gateway only, never from the client.
        let routing = [MODEL_HEADER, ENDPOINT_HEADER, DIRECT_HEADER];
        for name in routing {
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
        if !self.config.direct.is_empty() {
            // Kept as Envoy now holds them, to write a direct request from.
            self.request_headers = headers;
            self.request_headers
                .retain(|(n, _)| !routing.contains(&n.as_str()));
        }
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
        if self.facts.is_none() {
            return Action::Continue;
        }
        // One read of the whole map: each host call costs about a microsecond.
        let headers = self.get_http_response_headers_bytes();
        if let Some(mut direct) = self.direct.take() {
            // What the upstream role does for other rules' answers.
            if header_in(&headers, ":status").as_deref() == Some("429") {
                backend_request::record_cooldown(self, &direct.backend, &headers);
            }
            let action = direct.guard.on_headers(self, &headers, end_of_stream);
            let replaced = direct.guard.replaced();
            if action == Action::Pause {
                direct.held_headers = Some(headers);
                self.direct = Some(direct);
                return Action::Pause;
            }
            self.direct = Some(direct);
            if replaced {
                return self.begin_response(&replaced_headers(), end_of_stream);
            }
        }
        self.begin_response(&headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut direct) = self.direct.take() else {
            return self.response_body(body_size, end_of_stream);
        };
        let was_holding = direct.guard.holding();
        let (action, size) = direct
            .guard
            .on_body(self, self.shape, body_size, end_of_stream);
        if action == Action::Pause {
            self.direct = Some(direct);
            return Action::Pause;
        }
        let held = direct.held_headers.take();
        let replaced = direct.guard.replaced();
        self.response_buffer = direct.guard.take_buffer();
        self.direct = Some(direct);
        if was_holding {
            // The answer was held: its headers are dealt with now.
            let headers = match held {
                Some(_) if replaced => replaced_headers(),
                Some(headers) => headers,
                None => Vec::new(),
            };
            if self.begin_response(&headers, false) == Action::Pause {
                return Action::Pause;
            }
        }
        let action = self.response_body(size, end_of_stream);
        self.response_buffer = None;
        if let Some(direct) = &mut self.direct {
            direct.guard.kept(action, size);
        }
        action
    }

    fn on_log(&mut self) {
        let usage = match &self.response {
            _ if self.usage_published => self.usage,
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
    /// The answer's headers (`headers`, read as one map): how its body
    /// will be translated or counted.
    fn begin_response(&mut self, headers: &[(String, Vec<u8>)], end_of_stream: bool) -> Action {
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
        let status = header_in(headers, ":status").unwrap_or_default();
        self.status = status.parse().ok();
        let content_type = header_in(headers, "content-type").unwrap_or_default();
        if let Some(kind) = self.invoke_kind(schema, &status, headers) {
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
            let id = header_in(headers, "x-amzn-requestid")
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
                // `created`: when the request came (a clock read fewer).
                self.observer
                    .start_ns
                    .map_or_else(|| now_secs(self), |ns| ns / 1_000_000_000),
            );
            self.set_http_response_header("content-length", None);
            if content_type != chat.content_type() {
                self.set_http_response_header("content-type", Some(chat.content_type()));
            }
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

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let ResponseState::Chat(chat) = &self.response {
            // Whole bodies are gathered (Envoy buffers while paused) and
            // translated at the end; streams chunk by chunk.
            if chat.buffers() && !end_of_stream {
                self.observe_body(body_size, None);
                return Action::Pause;
            }
            let chunk = self.response_chunk(body_size);
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
            let body = self.response_chunk(body_size);
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
            let body = self.response_chunk(body_size);
            let shaped = crate::bedrock::error_body(status, &body);
            self.set_http_response_body(0, body_size, &shaped);
            return Action::Continue;
        }
        let chunk = self.response_chunk(body_size);
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
}

impl RouterFilter {
    /// The whole-body Bedrock InvokeModel translation this answer needs:
    /// embeddings on `AWSBedrock` (answers and errors), count-tokens on
    /// `AWSAnthropic` (answers; its errors take the Bedrock error path).
    fn invoke_kind(
        &self,
        schema: SchemaName,
        status: &str,
        headers: &[(String, Vec<u8>)],
    ) -> Option<crate::bedrock_invoke::Kind> {
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
                    header_in(headers, INPUT_TOKENS_HEADER).and_then(|v| v.trim().parse().ok());
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

impl RouterFilter {
    /// The response bytes of this callback (no host call for none, or
    /// when the guard read them already).
    fn response_chunk(&mut self, body_size: usize) -> Vec<u8> {
        if body_size == 0 {
            return Vec::new();
        }
        match self.response_buffer.take() {
            Some(bytes) if bytes.len() == body_size => bytes,
            _ => self
                .get_http_response_body(0, body_size)
                .unwrap_or_default(),
        }
    }
}

/// Metrics and access-log properties (see `metrics.rs`).
impl RouterFilter {
    fn observe_response_headers(&mut self) {
        let backend = match &self.direct {
            Some(direct) => Some(direct.backend.clone()),
            None => picked_backend(self, &self.config),
        };
        if let Some(name) = &backend {
            let service = crate::failover::service_of(name);
            self.publish("backend", service.as_bytes());
            if let Some(b) = self.config.backends.get(name) {
                let provider = crate::metrics::provider_name(b.schema);
                self.publish("provider", provider.as_bytes());
            }
        }
        self.observer.backend = backend;
    }

    /// `chunk`: the body chunk when the caller read it already (one host
    /// call fewer).
    fn observe_body(&mut self, body_size: usize, chunk: Option<&[u8]>) {
        // Time to first token is a streaming figure: the clock is read
        // (a host call) once per stream, for its first bytes.
        let stream = self.facts.as_ref().is_some_and(|f| f.stream);
        if stream && body_size > 0 && self.observer.first_byte_ns.is_none() {
            let first = now_ns(self);
            self.observer.first_byte_ns = Some(first);
            if let Some(ms) = self.observer.ms_since_start(first) {
                self.publish("ttft_ms", ms.to_string().as_bytes());
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
            self.publish("response_model", model.as_bytes());
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

/// The headers of an answer the gateway replaced by its own 502.
fn replaced_headers() -> Vec<(String, Vec<u8>)> {
    vec![
        (":status".into(), b"502".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ]
}

/// An integer property: Envoy hands them over as 8 little-endian bytes.
fn property_u64(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(raw) => u64::from_le_bytes(raw),
        Err(_) => String::from_utf8_lossy(bytes).trim().parse().unwrap_or(0),
    }
}
