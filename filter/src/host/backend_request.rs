//! Writing a request for the backend it goes to (credential, signature,
//! headers, body) and fetching credentials: shared by the upstream role
//! (every attempt) and the router role (rules it serves directly, see
//! `PluginConfig::direct`).

use super::*;

/// Why a request could not be written yet.
pub(super) enum WriteError {
    /// The credentials must be fetched first (nothing was written).
    Fetch(crate::config::CredentialSource),
    /// The backend's credential is not available: another backend may do.
    Unavailable(GatewayError),
    /// The request cannot be made.
    Failed(GatewayError),
}

/// What one request is written from.
pub(super) struct Target<'a> {
    pub(super) config: &'a PluginConfig,
    pub(super) backend_name: &'a str,
    pub(super) backend: &'a crate::config::BackendConfig,
    /// The client's headers as Envoy holds them (or held them first).
    pub(super) original: &'a [(String, Vec<u8>)],
    /// Envoy's map is still `original`: only the changes are written.
    pub(super) map_is_original: bool,
    pub(super) body_size: usize,
    /// Written by the router role for a rule it serves directly: the
    /// request carries `DIRECT_HEADER` naming its backend (the rule's route
    /// takes only those), and `:authority` stays the client's (it picks the
    /// virtual host; the route sets the backend's, `host_rewrite_literal`).
    pub(super) direct: bool,
    /// The clock (Unix seconds) as the caller already read it this request,
    /// if it did: one host call fewer. Seconds suffice for credential
    /// freshness and a SigV4 date.
    pub(super) now_secs: Option<u64>,
}

/// The client's request (`headers`, `body`) as `backend` must receive it.
pub(super) fn prepare_for(
    endpoint: Endpoint,
    query: &str,
    backend: &crate::config::BackendConfig,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let mut request = prepare(endpoint, query, backend, body)?;
    // Bedrock takes Anthropic's beta flags in the body.
    if backend.schema == SchemaName::AWSAnthropic && endpoint == Endpoint::AnthropicMessages {
        if let Some(beta) = header_in(headers, "anthropic-beta") {
            crate::bedrock::add_beta(&mut request, &beta);
        }
    }
    Ok(request)
}

/// Writes `request` and the backend's credential or signature over the
/// request Envoy holds. `just_loaded`: the credentials were fetched for
/// this request, so stale ones are used rather than fetched again.
pub(super) fn write(
    ctx: &dyn HttpContext,
    target: &Target,
    request: &mut UpstreamRequest,
    just_loaded: bool,
) -> Result<(), WriteError> {
    let mut added: Vec<(&str, String)> = Vec::new();
    let mut signed = Vec::new();
    if let Some(auth) = &target.backend.auth {
        let Some(source) = target.config.credentials.clone() else {
            return Err(WriteError::Failed(GatewayError::internal(
                "no credential service is configured",
            )));
        };
        let now = target.now_secs.unwrap_or_else(|| now_secs(ctx));
        let (usable, found) = CREDENTIALS.with(|c| {
            let c = c.borrow();
            let freshness = c.freshness(now, source.ttl_seconds, target.config.config_version);
            (
                freshness != Freshness::Missing,
                c.get(&auth.credential).cloned(),
            )
        });
        // Right after a load, use what was loaded even if it looks stale
        // (an older controller version): fetching again would loop. A
        // missing credential may have been minted since: ask again. Stale
        // ones are used: the root context refreshes them in the background.
        if (!usable || found.is_none()) && !just_loaded {
            return Err(WriteError::Fetch(source));
        }
        let Some(credential) = found else {
            return Err(WriteError::Unavailable(
                GatewayError::upstream(
                    503,
                    format!(
                        "the upstream credential of backend {} is not available (the gateway's controller could not obtain it; see its log)",
                        target.backend_name
                    ),
                )
                .with_code("upstream_credentials_unavailable"),
            ));
        };
        if let Some(header) = credential_header(auth, &credential).map_err(WriteError::Failed)? {
            added.push(header);
        }
        if let Credential::Aws(aws) = &credential {
            signed = crate::bedrock::sign(request, target.backend, aws, now)
                .map_err(WriteError::Failed)?;
        }
    }
    if let Some(body) = &request.body {
        ctx.set_http_request_body(0, target.body_size, body);
    }
    added.extend(signed.iter().map(|(n, v)| (n.as_str(), v.clone())));
    if target.direct {
        added.push((DIRECT_HEADER, target.backend_name.to_string()));
        // (Signed with the host already: the route sends the same.)
        request.host = None;
    }
    let headers = attempt_headers(target.original, &[ENDPOINT_HEADER], request, &added);
    let edits = target
        .map_is_original
        .then(|| crate::upstream::header_edits(target.original, &headers))
        .flatten();
    match edits {
        Some(edits) => {
            for (name, value) in &edits {
                ctx.set_http_request_header_bytes(name, value.as_deref());
            }
        }
        None => ctx.set_http_request_headers_bytes(
            headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
        ),
    }
    Ok(())
}

/// Asks the controller's credential service for the credentials; the
/// answer comes to the context's `on_http_call_response`.
pub(super) fn fetch_credentials(
    ctx: &dyn Context,
    source: &crate::config::CredentialSource,
) -> Result<(), GatewayError> {
    let token = std::env::var(&source.token_env).unwrap_or_default();
    let authorization = format!("Bearer {token}");
    let headers = vec![
        (":method", "GET"),
        (":path", source.path.as_str()),
        (":authority", source.authority.as_str()),
        ("authorization", authorization.as_str()),
    ];
    ctx.dispatch_http_call(
        &source.cluster,
        headers,
        None,
        vec![],
        Duration::from_secs(5),
    )
    .map(|_| ())
    .map_err(|_| {
        GatewayError::upstream(503, "the gateway could not reach its credential service")
            .with_code("upstream_credentials_unavailable")
    })
}

/// Loads the credential service's answer. When it failed but credentials
/// were fetched before, those are kept (the controller is down or failing:
/// Envoy keeps serving its last configuration too).
pub(super) fn load_fetched(ctx: &dyn Context, body_size: usize) -> Result<(), GatewayError> {
    let status = ctx
        .get_http_call_response_header_bytes(":status")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let body = ctx
        .get_http_call_response_body(0, body_size)
        .unwrap_or_default();
    let now = now_secs(ctx);
    let loaded = if status == "200" {
        CREDENTIALS.with(|c| c.borrow_mut().load(&body, now))
    } else {
        Err(format!("credential service answered {status}"))
    };
    let Err(e) = loaded else {
        return Ok(());
    };
    CREDENTIALS.with(|c| c.borrow_mut().refresh_failed(now));
    if CREDENTIALS.with(|c| c.borrow().is_loaded()) {
        log(
            LogLevel::Warn,
            &format!("aigw: {e}; using the credentials fetched before"),
        );
        return Ok(());
    }
    log(LogLevel::Error, &format!("aigw: {e}"));
    // Not the client's fault: the upstream kind and code.
    Err(
        GatewayError::upstream(503, "upstream credentials are not available")
            .with_code("upstream_credentials_unavailable"),
    )
}

/// The root context's background refresh (on its tick): whenever the
/// credentials are not fresh, one call per VM at a time, so that requests
/// rarely wait for a fetch and never for a refresh, nor for a controller
/// that hangs.
pub(super) fn refresh_in_background(ctx: &dyn Context, config: &PluginConfig) {
    let Some(source) = &config.credentials else {
        return;
    };
    let now = now_secs(ctx);
    let due = CREDENTIALS.with(|c| {
        c.borrow()
            .refresh_due(now, source.ttl_seconds, config.config_version)
    });
    if !due {
        return;
    }
    let sent = fetch_credentials(ctx, source).is_ok();
    CREDENTIALS.with(|c| {
        let mut c = c.borrow_mut();
        if sent {
            c.refresh_sent(now);
        } else {
            c.refresh_failed(now);
        }
    });
}

/// The answer to a background refresh. One that leaves the cache older
/// than the configuration (the controller has not caught up) counts as a
/// failure, so the next try waits.
pub(super) fn load_refreshed(ctx: &dyn Context, config: &PluginConfig, body_size: usize) {
    // A failure keeps the credentials fetched before (and is logged).
    let _ = load_fetched(ctx, body_size);
    let now = now_secs(ctx);
    let ttl = config.credentials.as_ref().map_or(0, |s| s.ttl_seconds);
    CREDENTIALS.with(|c| {
        let mut c = c.borrow_mut();
        if c.freshness(now, ttl, config.config_version) == Freshness::Missing {
            c.refresh_failed(now);
        }
    });
}

/// Seconds the backend `name` is still cooling down after a 429 with
/// retry-after, if it is.
pub(super) fn cooldown_left(ctx: &dyn Context, name: &str, now: &mut Option<u64>) -> Option<u64> {
    let (bytes, _) = ctx.get_shared_data(&crate::failover::Cooldown::key(name));
    let cooldown = crate::failover::Cooldown::parse(&bytes?)?;
    // The clock (a host call) is read once, and only for a cool-down.
    let now = *now.get_or_insert_with(|| now_secs(ctx));
    cooldown.remaining(now)
}

/// A 429 with retry-after from backend `name`: it cools down that long.
/// The gateway's own 429 (all backends cooling) is not the provider's.
pub(super) fn record_cooldown(ctx: &dyn Context, name: &str, headers: &[(String, Vec<u8>)]) {
    if header_in(headers, crate::failover::COOLDOWN_HEADER).is_some() {
        return;
    }
    let Some(wait) =
        header_in(headers, "retry-after").and_then(|v| crate::failover::retry_after_seconds(&v))
    else {
        return;
    };
    let until = crate::failover::Cooldown {
        until: now_secs(ctx).saturating_add(wait),
    };
    let key = crate::failover::Cooldown::key(name);
    let _ = ctx.set_shared_data(&key, Some(&until.encode()), None);
}

/// The gateway's 429 when every backend is cooling down.
pub(super) fn send_cooldown_reply(ctx: &dyn HttpContext, shape: ErrorShape, left: u64) {
    let error = cooldown_error(left);
    let left = left.to_string();
    ctx.send_http_response(
        429,
        vec![
            ("content-type", "application/json"),
            ("retry-after", left.as_str()),
            (crate::failover::COOLDOWN_HEADER, "1"),
        ],
        Some(&error.body(shape)),
    );
}

pub(super) fn cooldown_error(left: u64) -> GatewayError {
    GatewayError::upstream(
        429,
        format!("the provider asked the gateway to slow down; retry after {left} s"),
    )
    .with_code("rate_limit_exceeded")
}
