//! The upstream role: runs in each cluster's upstream filter chain, once
//! per attempt, and rewrites the request for the backend that was picked.

use super::*;

/// Upstream role: runs once per attempt, after Envoy picked the endpoint.
pub(super) struct UpstreamFilter {
    config: Rc<PluginConfig>,
    context_id: u32,
    backend: Option<String>,
    endpoint: Option<Endpoint>,
    /// The client's request headers as the router passed them on: every
    /// attempt's headers are written from these (see `attempt_headers`).
    headers: Vec<(String, Vec<u8>)>,
    /// Envoy's header map is still the client's as the router passed it on
    /// (the first attempt), so that only the changes need writing.
    map_is_original: bool,
    /// The request's `:authority` as this attempt received it.
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
    /// This attempt could not be made (see [`UpstreamFilter::fail_attempt`]):
    /// whatever the provider answers becomes this error.
    failed_attempt: Option<GatewayError>,
    /// This attempt's backend is cooling down while another of the rule is
    /// free: skipped once the body is in (see [`UpstreamFilter::cooling_down`]).
    skipped: Option<GatewayError>,
}

impl UpstreamFilter {
    pub(super) fn new(config: Rc<PluginConfig>, context_id: u32) -> Self {
        UpstreamFilter {
            config,
            context_id,
            backend: None,
            endpoint: None,
            headers: Vec::new(),
            map_is_original: false,
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
            failed_attempt: None,
            skipped: None,
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

    /// Ends an attempt that cannot be made (no credential for its backend)
    /// so that Envoy's retry policy can move on to the rule's next backend:
    /// an upstream filter's local reply is never retried, so the attempt
    /// goes upstream as a request that tells the provider nothing, and its
    /// answer is replaced by `error` with a retriable status
    /// ([`Self::replace_failed_answer`]). With no other backend in the rule
    /// the client gets `error` at once and nothing reaches the provider.
    /// Called with the whole request body buffered.
    fn fail_attempt(&mut self, error: GatewayError, provider_host: Option<&str>) -> Action {
        let peers = self.rule_backends();
        if !crate::failover::fail_over_through_upstream(peers.split(',').count()) {
            return self.fail(error);
        }
        let authority = provider_host.unwrap_or(&self.authority).to_string();
        let scheme = header_in(&self.headers, ":scheme").unwrap_or_else(|| "http".into());
        self.set_http_request_headers(crate::failover::empty_attempt_headers(&authority, &scheme));
        if self.body_size > 0 {
            self.set_http_request_body(0, self.body_size, &[]);
        }
        log(
            LogLevel::Warn,
            &format!("aigw: {error}; failing over to the next backend"),
        );
        self.failed_attempt = Some(error);
        Action::Continue
    }

    /// The provider's answer to a failed attempt's empty request becomes
    /// the attempt's error: a retriable 503 in the client's shape (headers
    /// now, body at its end). A bodiless answer keeps no body: there is
    /// nothing to replace, and Envoy retries on the status alone.
    fn replace_failed_answer(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // The provider's bytes are dropped as they come (not held: an
        // answer of any size must not fill Envoy's buffer).
        let replacement = match self.failed_attempt.take() {
            Some(error) if end_of_stream => error.body(self.shape()),
            error => {
                self.failed_attempt = error;
                Vec::new()
            }
        };
        self.set_http_response_body(0, body_size, &replacement);
        Action::Continue
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
                return self.fail_attempt(
                    GatewayError::upstream(
                        503,
                        format!(
                            "the upstream credential of backend {} is not available (the gateway's controller could not obtain it; see its log)",
                            self.backend.as_deref().unwrap_or("?")
                        ),
                    )
                    .with_code("upstream_credentials_unavailable"),
                    request.host.as_deref(),
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
        if let Some(body) = &request.body {
            self.set_http_request_body(0, self.body_size, body);
        }
        let mut added: Vec<(&str, String)> = credential_value.into_iter().collect();
        added.extend(signed.iter().map(|(n, v)| (n.as_str(), v.clone())));
        let headers = attempt_headers(&self.headers, &[ENDPOINT_HEADER], &request, &added);
        let edits = self
            .map_is_original
            .then(|| crate::upstream::header_edits(&self.headers, &headers))
            .flatten();
        match edits {
            Some(edits) => {
                for (name, value) in &edits {
                    self.set_http_request_header_bytes(name, value.as_deref());
                }
            }
            None => self.set_http_request_headers_bytes(
                headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect(),
            ),
        }
        Action::Continue
    }

    /// A backend whose provider asked to slow down (429 with retry-after)
    /// gets none of the rule's requests until its time is up: while another
    /// backend of the rule is free, the attempt is skipped through upstream
    /// ([`Self::fail_attempt`], once the body is in) and Envoy's retry
    /// policy moves on; when every backend is cooling down, the client gets
    /// a 429 with the shortest time left and no provider is called.
    fn cooling_down(&mut self) -> Option<Action> {
        let mut now = None;
        // The common case costs one lookup: the backend picked is not
        // cooling down. Only then are the rule's other backends looked at.
        let mut left = self.cooldown_left(self.backend.as_deref()?, &mut now)?;
        let mut another_free = false;
        for peer in self.rule_backends().split(',').filter(|p| !p.is_empty()) {
            match self.cooldown_left(peer, &mut now) {
                Some(l) => left = left.min(l),
                None => another_free = true,
            }
        }
        let error = GatewayError::upstream(
            429,
            format!("the provider asked the gateway to slow down; retry after {left} s"),
        )
        .with_code("rate_limit_exceeded");
        if another_free {
            self.skipped = Some(error);
            return Some(Action::Pause);
        }
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

    /// The AIServiceBackends of the rule whose cluster this attempt goes
    /// to, comma-separated (from the endpoint's metadata: the upstream
    /// role's configuration is the listener's, shared by every rule).
    fn rule_backends(&self) -> String {
        self.get_property(PEERS_METADATA.to_vec())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn cooldown_left(&self, backend: &str, now: &mut Option<u64>) -> Option<u64> {
        let (bytes, _) = self.get_shared_data(&crate::failover::Cooldown::key(backend));
        let cooldown = crate::failover::Cooldown::parse(&bytes?)?;
        // The clock (a host call) is read once, and only for a cool-down.
        let now = *now.get_or_insert_with(|| now_secs(self));
        cooldown.remaining(now)
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
            Err(_) => self.fail_attempt(
                GatewayError::upstream(503, "the gateway could not reach its credential service")
                    .with_code("upstream_credentials_unavailable"),
                request.host.as_deref(),
            ),
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
            // Not the client's fault: the upstream kind and code, like a
            // credential missing from the answer.
            let error = GatewayError::upstream(503, "upstream credentials are not available")
                .with_code("upstream_credentials_unavailable");
            if self.fail_attempt(error, request.host.as_deref()) == Action::Continue {
                self.resume_http_request();
            }
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
        if self.failed_attempt.is_some() {
            // None of the provider's headers apply to the gateway's error.
            self.set_http_response_headers(vec![
                (":status", crate::failover::FAILED_ATTEMPT_STATUS),
                ("content-type", "application/json"),
            ]);
            if end_of_stream {
                self.failed_attempt = None;
            }
            return Action::Continue;
        }
        // One read of the whole map: each host call costs about a microsecond.
        let headers = self.get_http_response_headers_bytes();
        let status = header_in(&headers, ":status").unwrap_or_default();
        let content_type = header_in(&headers, "content-type").unwrap_or_default();
        self.response_sse = content_type.starts_with("text/event-stream");
        if let Some(encoding) = header_in(&headers, "content-encoding") {
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
        if status == "429" && header_in(&headers, crate::failover::COOLDOWN_HEADER).is_none() {
            let wait = header_in(&headers, "retry-after")
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
        if self.failed_attempt.is_some() {
            return self.replace_failed_answer(body_size, end_of_stream);
        }
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
        // Envoy hands every attempt the same header map, which the attempt
        // before rewrote: a retry starts again from the original request
        // (saved by the first attempt, the one that sees the router's
        // handoff header). Each attempt's map is written once, in `finish`.
        let mut headers = self.get_http_request_headers_bytes();
        self.map_is_original = header_in(&headers, ENDPOINT_HEADER).is_some();
        if self.map_is_original {
            self.set_property(
                vec![crate::failover::ORIGINAL_HEADERS_PROPERTY],
                Some(&crate::failover::encode_headers(&headers)),
            );
        } else if let Some(saved) =
            self.get_property(vec![crate::failover::ORIGINAL_HEADERS_PROPERTY])
        {
            headers = crate::failover::decode_headers(&saved).unwrap_or_default();
        }
        let path = header_in(&headers, ":path").unwrap_or_default();
        self.authority = header_in(&headers, ":authority").unwrap_or_default();
        self.query = path
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        let handoff = header_in(&headers, ENDPOINT_HEADER).and_then(|v| parse_handoff(&v));
        self.endpoint = handoff.map(|(endpoint, _)| endpoint);
        self.needs_stream_usage = handoff.is_some_and(|(_, needs)| needs);
        self.model = header_in(&headers, MODEL_HEADER).unwrap_or_default();
        self.headers = headers;
        self.backend = picked_backend(self, &self.config);
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
        if end_of_stream {
            return self.fail(GatewayError::bad_request("request body is required"));
        }
        if let Some(action) = self.cooling_down() {
            return action;
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
        if let Some(error) = self.skipped.take() {
            let host = self.backend_config().and_then(|b| b.host.clone());
            return self.fail_attempt(error, host.as_deref());
        }
        let (Some(endpoint), Some(backend)) = (self.endpoint, self.backend_config()) else {
            // (Refused in the headers phase already.)
            return self.fail(GatewayError::internal("request without a backend"));
        };
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        let bedrock =
            backend.schema == SchemaName::AWSAnthropic && endpoint == Endpoint::AnthropicMessages;
        match prepare(endpoint, &self.query, backend, &body) {
            Ok(mut request) => {
                // Bedrock takes Anthropic's beta flags in the body.
                if let Some(beta) = header_in(&self.headers, "anthropic-beta").filter(|_| bedrock) {
                    crate::bedrock::add_beta(&mut request, &beta);
                }
                self.finish(request, false)
            }
            Err(e) => self.fail(e),
        }
    }
}
