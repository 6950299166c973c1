//! The upstream role of the built filter, driven through the proxy-wasm ABI.

mod common;

use aigw_wasm_abi_tests::{Action, Flow, LogLevel, StreamType, Vm, VmError};
use common::*;
use std::time::Duration;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CREDENTIALS_OK: &[u8] =
    br#"{"config_version":3,"credentials":{"default/openai-key":{"api_key":"sk-x"}}}"#;

/// Headers as the upstream role sees them: after the router role ran.
fn upstream_headers(path: &str) -> Vec<(&'static str, String)> {
    upstream_headers_with(path, "chat")
}

/// Same, with the router's handoff value (`chat;stream-usage` when the body
/// must ask for stream usage).
fn upstream_headers_with(path: &str, handoff: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", path.into()),
        (":authority", "gateway.local".into()),
        ("content-type", "application/json".into()),
        ("content-length", BODY.len().to_string()),
        ("x-ai-eg-model", "gpt-4o-mini".into()),
        ("x-aigw-endpoint", handoff.into()),
        // The client's own credentials must never reach a provider.
        ("authorization", "Bearer client-secret".into()),
        ("x-api-key", "client-secret-2".into()),
        ("api-key", "client-secret-3".into()),
    ]
}

/// Starts a request on a stream whose picked endpoint names `backend`; the
/// upstream role must hold the headers (it needs the body or a credential).
fn start(vm: &mut Vm, backend: &str, path: &str) -> Result<u32, VmError> {
    let (ctx, action) = start_with(vm, backend, path, "chat")?;
    assert_eq!(action, Action::Pause, "the upstream role must hold headers");
    Ok(ctx)
}

fn start_with(
    vm: &mut Vm,
    backend: &str,
    path: &str,
    handoff: &str,
) -> Result<(u32, Action), VmError> {
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, backend.as_bytes());
    let action = vm.request_headers(ctx, &refs(&upstream_headers_with(path, handoff)), false)?;
    assert!(vm.stream(ctx).local_response().is_none());
    Ok((ctx, action))
}

fn assert_client_credentials_gone(vm: &Vm, ctx: u32) {
    let h = vm.stream(ctx).request_headers();
    for name in ["x-api-key", "api-key", "x-aigw-endpoint"] {
        assert!(!h.contains(name), "{name} must be removed: {h:?}");
    }
    assert!(
        h.get_all("authorization")
            .iter()
            .all(|v| !v.contains("client-secret")),
        "{h:?}"
    );
}

#[test]
fn backend_without_auth_keeps_body_and_rewrites_path() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let (ctx, action) = start_with(
        &mut vm,
        "default/local",
        "/v1/chat/completions?trace=1",
        "chat",
    )?;
    // Nothing in the body changes: headers are rewritten at once and the
    // body streams through unbuffered.
    assert_eq!(action, Action::Continue);
    let action = vm.request_body(ctx, BODY, true)?;
    assert_eq!(action, Action::Continue);
    let s = vm.stream(ctx);
    assert!(s.local_response().is_none(), "{:?}", s.local_response());
    let h = s.request_headers();
    assert_eq!(
        h.get(":path").as_deref(),
        Some("/v1/chat/completions?trace=1")
    );
    assert_eq!(h.get(":authority").as_deref(), Some("gateway.local"));
    assert!(!h.contains("authorization"), "{h:?}");
    assert_client_credentials_gone(&vm, ctx);
    assert_eq!(s.request_body_sent, BODY, "no override: body unchanged");
    assert!(vm.host().http_calls.is_empty());
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn model_override_rewrites_body_and_content_length() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let ctx = start(&mut vm, "default/override", "/v1/chat/completions")?;
    // The body arrives in pieces; the filter holds them until the end.
    let (a, b) = BODY.split_at(10);
    assert_eq!(vm.request_body(ctx, a, false)?, Action::Pause);
    assert_eq!(vm.request_body(ctx, b, true)?, Action::Continue);
    let s = vm.stream(ctx);
    let h = s.request_headers();
    assert_eq!(h.get(":path").as_deref(), Some("/api/v1/chat/completions"));
    assert_eq!(h.get(":authority").as_deref(), Some("llm.internal.example"));
    let sent = json(&s.request_body_sent);
    assert_eq!(sent["model"], "meta-llama/Llama-3-8B");
    assert_eq!(sent["messages"][0]["content"], "hi");
    assert_eq!(
        h.get_all("content-length"),
        [s.request_body_sent.len().to_string()]
    );
    assert_client_credentials_gone(&vm, ctx);
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn streaming_request_asks_the_backend_for_usage() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let (ctx, action) = start_with(
        &mut vm,
        "default/local",
        "/v1/chat/completions",
        "chat;stream-usage",
    )?;
    assert_eq!(action, Action::Pause, "the body must be rewritten");
    let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    vm.request_body(ctx, body, true)?;
    let s = vm.stream(ctx);
    let sent = json(&s.request_body_sent);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(
        s.request_headers().get("content-length"),
        Some(s.request_body_sent.len().to_string())
    );
    Ok(())
}

/// Sends the body of a request to the `default/openai` backend (API key
/// auth) and returns the stream.
fn openai_request(vm: &mut Vm) -> Result<(u32, Action), VmError> {
    let ctx = start(vm, "default/openai", "/v1/chat/completions")?;
    let action = vm.request_body(ctx, BODY, true)?;
    Ok((ctx, action))
}

#[test]
fn credentials_are_fetched_then_injected_and_the_request_resumed() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let (ctx, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Pause, "waits for the credential service");
    assert_eq!(vm.request_flow(ctx), Flow::Paused);
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, CREDENTIAL_CLUSTER);
    assert_eq!(call.headers.get(":method").as_deref(), Some("GET"));
    assert_eq!(
        call.headers.get(":path").as_deref(),
        Some("/v1/credentials")
    );
    assert_eq!(
        call.headers.get(":authority").as_deref(),
        Some("aigw-controller")
    );
    assert_eq!(
        call.headers.get("authorization"),
        Some(format!("Bearer {TOKEN}"))
    );
    assert_eq!(call.context, ctx);
    assert!(vm.stream(ctx).request_body_sent.is_empty());

    vm.respond_http_call(call.token, &[(":status", "200")], CREDENTIALS_OK)?;
    let s = vm.stream(ctx);
    assert!(s.local_response().is_none(), "{:?}", s.local_response());
    assert_eq!(s.continued, [StreamType::HttpRequest]);
    let h = s.request_headers();
    assert_eq!(h.get_all("authorization"), ["Bearer sk-x"]);
    assert_eq!(
        h.get(":path").as_deref(),
        Some("/openai/v1/chat/completions")
    );
    assert_eq!(h.get(":authority").as_deref(), Some("api.openai.example"));
    assert_client_credentials_gone(&vm, ctx);
    let sent = json(&s.request_body_sent);
    assert_eq!(sent["model"], "gpt-4o-2024-08-06");
    assert_eq!(
        h.get_all("content-length"),
        [s.request_body_sent.len().to_string()]
    );
    vm.finish_stream(ctx)?;

    // Within the TTL: no second fetch, the key is injected at once.
    vm.advance_clock(Duration::from_secs(10));
    let (ctx2, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(vm.host().http_calls.len(), 1, "no second credential fetch");
    let s = vm.stream(ctx2);
    assert_eq!(
        s.request_headers().get_all("authorization"),
        ["Bearer sk-x"]
    );
    assert!(s.continued.is_empty());
    vm.finish_stream(ctx2)?;

    // After the TTL the request still goes at once with the key at hand;
    // the root context's tick refreshes the credentials in the background.
    vm.advance_clock(Duration::from_secs(25));
    let (ctx3, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(
        vm.stream(ctx3).request_headers().get_all("authorization"),
        ["Bearer sk-x"]
    );
    assert_eq!(vm.host().http_calls.len(), 1, "the request fetched nothing");
    vm.tick()?;
    assert_eq!(vm.host().http_calls.len(), 2, "the tick refreshes");
    let token = vm.pending_http_calls()[0].token;
    let rotated =
        br#"{"config_version":3,"credentials":{"default/openai-key":{"api_key":"sk-rotated"}}}"#;
    vm.respond_http_call(token, &[(":status", "200")], rotated)?;
    let (ctx4, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(
        vm.stream(ctx4).request_headers().get_all("authorization"),
        ["Bearer sk-rotated"]
    );
    vm.assert_no_violations();
    Ok(())
}

fn assert_503_without_secrets(vm: &Vm, ctx: u32) {
    let s = vm.stream(ctx);
    let r = s.local_response().expect("a local 503");
    assert_eq!(r.status, 503);
    let body = r.body_text();
    assert!(!body.contains(TOKEN), "the token leaked: {body}");
    assert!(r.json()["error"]["message"].is_string(), "{body}");
    for line in &vm.host().logs {
        assert!(
            !line.message.contains(TOKEN),
            "the token leaked to a log: {line:?}"
        );
    }
    assert!(s.request_body_sent.is_empty());
    assert!(!s.continued.contains(&StreamType::HttpRequest));
}

/// The upstream configuration of a rule whose only backend is
/// `default/openai`: a failed attempt has nowhere to fail over to.
fn single_backend_config() -> aigw_filter::config::PluginConfig {
    let mut config = upstream_config();
    config.backends.retain(|name, _| name == "default/openai");
    config
}

#[test]
fn credential_service_error_is_a_503_without_the_token() -> Result<(), VmError> {
    let mut vm = vm_with(&single_backend_config())?;
    let (ctx, _) = openai_request(&mut vm)?;
    let token = vm.pending_http_calls()[0].token;
    let echo = format!(r#"{{"error":"bad token Bearer {TOKEN}"}}"#);
    vm.respond_http_call(token, &[(":status", "401")], echo.as_bytes())?;
    assert_503_without_secrets(&vm, ctx);
    assert!(!vm.logs_at_least(LogLevel::Error).is_empty());

    // A 200 that is not a credential document fails the same way.
    let (ctx, _) = openai_request(&mut vm)?;
    let token = vm.pending_http_calls()[0].token;
    vm.respond_http_call(token, &[(":status", "200")], b"<html>oops</html>")?;
    assert_503_without_secrets(&vm, ctx);
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn unreachable_credential_service_is_a_503() -> Result<(), VmError> {
    let mut vm = vm_with(&single_backend_config())?;
    vm.host_mut().http_call_failure = Some(aigw_wasm_abi_tests::Status::BadArgument);
    let (ctx, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Pause);
    assert_503_without_secrets(&vm, ctx);
    Ok(())
}

/// With another backend in the rule, an attempt without its credential
/// must end in something Envoy retries: it goes upstream as an empty
/// `GET /` (Envoy never retries an upstream filter's local reply), and
/// whatever the provider answers becomes a 503 in the client's shape.
#[test]
fn credential_failure_with_another_backend_goes_upstream_empty_and_comes_back_a_503(
) -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let (ctx, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Pause);
    let token = vm.pending_http_calls()[0].token;
    let echo = format!(r#"{{"error":"bad token Bearer {TOKEN}"}}"#);
    vm.respond_http_call(token, &[(":status", "401")], echo.as_bytes())?;
    let s = vm.stream(ctx);
    assert!(
        s.local_response().is_none(),
        "a local reply is never retried"
    );
    assert!(s.continued.contains(&StreamType::HttpRequest));
    let h = s.request_headers();
    assert_eq!(h.get(":method").as_deref(), Some("GET"));
    assert_eq!(h.get(":path").as_deref(), Some("/"));
    assert_eq!(h.get(":authority").as_deref(), Some("api.openai.example"));
    assert_eq!(h.get("content-length").as_deref(), Some("0"));
    for name in [
        "authorization",
        "x-api-key",
        "api-key",
        "x-ai-eg-model",
        "x-aigw-endpoint",
    ] {
        assert!(
            !h.contains(name),
            "{name} must not reach the provider: {h:?}"
        );
    }
    assert!(s.request_buffer.is_empty() && s.request_body_sent.is_empty());

    // The provider's 401 (to a request without a credential) is replaced.
    let action = vm.response_headers(
        ctx,
        &[
            (":status", "401"),
            ("content-type", "text/html"),
            ("www-authenticate", "Bearer"),
            ("content-length", "9"),
        ],
        false,
    )?;
    assert_eq!(action, Action::Continue);
    let h = vm.stream(ctx).response_headers();
    assert_eq!(h.get(":status").as_deref(), Some("503"));
    assert_eq!(h.get("content-type").as_deref(), Some("application/json"));
    assert!(
        !h.contains("www-authenticate") && !h.contains("content-length"),
        "{h:?}"
    );
    assert_eq!(vm.response_body(ctx, b"<html>", false)?, Action::Continue);
    assert!(
        vm.stream(ctx).response_body_sent.is_empty(),
        "dropped, not held"
    );
    assert_eq!(vm.response_body(ctx, b"</html>", true)?, Action::Continue);
    let body: serde_json::Value =
        serde_json::from_slice(&vm.stream(ctx).response_body_sent).unwrap();
    assert_eq!(body["error"]["type"], "upstream_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials"),
        "{body}"
    );
    for line in &vm.host().logs {
        assert!(
            !line.message.contains(TOKEN),
            "the token leaked to a log: {line:?}"
        );
    }

    // A bodiless answer keeps no body but still gets the status.
    vm.host_mut().http_call_failure = Some(aigw_wasm_abi_tests::Status::BadArgument);
    let (ctx, _) = openai_request(&mut vm)?;
    assert!(vm.stream(ctx).local_response().is_none());
    assert_eq!(
        vm.stream(ctx).request_headers().get(":method").as_deref(),
        Some("GET")
    );
    vm.response_headers(ctx, &[(":status", "404")], true)?;
    assert_eq!(
        vm.stream(ctx).response_headers().get(":status").as_deref(),
        Some("503")
    );
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn missing_or_unknown_backend_metadata_is_a_local_error() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    for backend in [None, Some("default/nope")] {
        let ctx = vm.create_stream()?;
        if let Some(b) = backend {
            vm.set_stream_property(ctx, &BACKEND_METADATA, b.as_bytes());
        }
        let action =
            vm.request_headers(ctx, &refs(&upstream_headers("/v1/chat/completions")), false)?;
        assert_eq!(action, Action::Pause);
        let r = vm.stream(ctx).local_response().expect("local error");
        assert_eq!(r.status, 500, "{}", r.body_text());
        vm.finish_stream(ctx)?;
    }
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn request_that_skipped_the_router_is_refused() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/local");
    let headers: Vec<_> = upstream_headers("/v1/chat/completions")
        .into_iter()
        .filter(|(k, _)| *k != "x-aigw-endpoint")
        .collect();
    vm.request_headers(ctx, &refs(&headers), false)?;
    let r = vm.stream(ctx).local_response().expect("local error");
    assert_eq!(r.status, 500);
    Ok(())
}

#[test]
fn credential_answer_after_the_client_left_is_harmless() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let (ctx, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Pause);
    let token = vm.pending_http_calls()[0].token;
    // The client disconnects before the credential service answers.
    vm.finish_stream(ctx)?;
    vm.respond_http_call(token, &[(":status", "200")], CREDENTIALS_OK)?;
    assert!(vm.stream(ctx).continued.is_empty());
    // The VM is fine. The SDK drops an answer for a gone context, so the
    // next request fetches again and works.
    let (ctx, action) = openai_request(&mut vm)?;
    assert_eq!(action, Action::Pause);
    let token = vm.pending_http_calls()[0].token;
    vm.respond_http_call(token, &[(":status", "200")], CREDENTIALS_OK)?;
    assert_eq!(
        vm.stream(ctx).request_headers().get_all("authorization"),
        ["Bearer sk-x"]
    );
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn concurrent_requests_waiting_for_credentials_all_resume() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let (ctx, action) = openai_request(&mut vm)?;
        assert_eq!(action, Action::Pause);
        streams.push(ctx);
    }
    // Each waiting request fetched on its own (no coalescing today).
    let calls = vm.pending_http_calls();
    assert!(!calls.is_empty() && calls.len() <= 3);
    for call in calls {
        vm.respond_http_call(call.token, &[(":status", "200")], CREDENTIALS_OK)?;
    }
    for ctx in streams {
        let s = vm.stream(ctx);
        assert!(s.local_response().is_none(), "{:?}", s.local_response());
        assert_eq!(s.continued, [StreamType::HttpRequest], "context {ctx}");
        assert_eq!(
            s.request_headers().get_all("authorization"),
            ["Bearer sk-x"]
        );
    }
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn a_request_without_the_routers_handoff_is_refused() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let without = |extra: Option<(&'static str, String)>| {
        let mut h: Vec<(&'static str, String)> = upstream_headers("/v1/chat/completions")
            .into_iter()
            .filter(|(n, _)| *n != "x-aigw-endpoint")
            .collect();
        h.extend(extra);
        h
    };
    // Written by a router role that served its rule directly, routed by a
    // newer configuration (only while Envoy applies a change): retriable.
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/local");
    let headers = without(Some(("x-aigw-direct", "default/local".into())));
    assert_eq!(
        vm.request_headers(ctx, &refs(&headers), false)?,
        Action::Pause
    );
    let r = vm.stream(ctx).local_response().expect("refused");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "configuration_changed");
    // Anything else that skipped the router role is the gateway's fault.
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/local");
    assert_eq!(
        vm.request_headers(ctx, &refs(&without(None)), false)?,
        Action::Pause
    );
    assert_eq!(vm.stream(ctx).local_response().map(|r| r.status), Some(500));
    assert!(vm.host().http_calls.is_empty(), "nothing was sent anywhere");
    vm.assert_no_violations();
    Ok(())
}
