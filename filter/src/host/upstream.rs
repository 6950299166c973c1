//! The upstream role: runs in each cluster's upstream filter chain, once
//! per attempt, and rewrites the request for the backend that was picked.

use super::backend_request::{self, WriteError};
use super::response_guard::ResponseGuard;
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
    /// Holds, checks and decodes the provider's answer.
    guard: ResponseGuard,
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
            guard: ResponseGuard::default(),
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
            let usable = CREDENTIALS.with(|c| {
                let c = c.borrow();
                c.freshness(now, source.ttl_seconds, self.config.config_version)
                    != Freshness::Missing
                    && c.get(&auth.credential).is_some()
            });
            if !usable {
                // Fetching needs a pause; the buffered path handles it.
                return None;
            }
        }
        self.done = true;
        Some(self.finish(request, false))
    }

    /// Writes the rewritten request and its credential. Returns Pause while
    /// credentials are being fetched.
    fn finish(&mut self, mut request: UpstreamRequest, just_loaded: bool) -> Action {
        let (Some(name), Some(backend)) = (self.backend.as_deref(), self.backend_config()) else {
            return self.fail(GatewayError::internal("backend configuration disappeared"));
        };
        let target = backend_request::Target {
            config: &self.config,
            backend_name: name,
            backend,
            original: &self.headers,
            map_is_original: self.map_is_original,
            body_size: self.body_size,
            direct: false,
            now_secs: None,
        };
        match backend_request::write(self, &target, &mut request, just_loaded) {
            Ok(()) => Action::Continue,
            Err(WriteError::Fetch(source)) => {
                match backend_request::fetch_credentials(self, &source) {
                    Ok(()) => {
                        self.pending = Some(request);
                        Action::Pause
                    }
                    Err(e) => self.fail_attempt(e, request.host.as_deref()),
                }
            }
            Err(WriteError::Unavailable(e)) => self.fail_attempt(e, request.host.as_deref()),
            Err(WriteError::Failed(e)) => self.fail(e),
        }
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
        if another_free {
            self.skipped = Some(backend_request::cooldown_error(left));
            return Some(Action::Pause);
        }
        backend_request::send_cooldown_reply(self, self.shape(), left);
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
        backend_request::cooldown_left(self, backend, now)
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
        let action = match backend_request::load_fetched(self, body_size) {
            Ok(()) => self.finish(request, true),
            Err(error) => self.fail_attempt(error, request.host.as_deref()),
        };
        if action == Action::Continue {
            self.resume_http_request();
        }
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
        let mut guard = std::mem::take(&mut self.guard);
        let action = guard.on_headers(self, &headers, end_of_stream);
        self.guard = guard;
        if action == Action::Pause {
            return Action::Pause;
        }
        let status = header_in(&headers, ":status").unwrap_or_default();
        if let (true, Some(backend)) = (status == "429", self.backend.as_deref()) {
            backend_request::record_cooldown(self, backend, &headers);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.failed_attempt.is_some() {
            return self.replace_failed_answer(body_size, end_of_stream);
        }
        let mut guard = std::mem::take(&mut self.guard);
        let (action, _) = guard.on_body(self, self.shape(), body_size, end_of_stream);
        self.guard = guard;
        action
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
            if header_in(&self.headers, DIRECT_HEADER).is_some() {
                // Written by a router role that served its rule directly,
                // routed by a newer configuration that does not: it happens
                // only while Envoy applies a change, and a retry succeeds.
                return self.fail(
                    GatewayError::upstream(
                        503,
                        "the gateway's configuration changed while this request was routed; retry it",
                    )
                    .with_code("configuration_changed"),
                );
            }
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
        match backend_request::prepare_for(endpoint, &self.query, backend, &self.headers, &body) {
            Ok(request) => self.finish(request, false),
            Err(e) => self.fail(e),
        }
    }
}
