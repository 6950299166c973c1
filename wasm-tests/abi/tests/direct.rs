//! The router role serving a single-backend rule directly
//! (`PluginConfig::direct`): it writes the request for the backend itself
//! (no upstream role runs) and guards the answer as the upstream role would.

mod common;

use aigw_wasm_abi_tests::{Action, LogLevel, StreamType, Vm, VmError};
use common::*;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CREDENTIALS_OK: &[u8] =
    br#"{"config_version":3,"credentials":{"default/openai-key":{"api_key":"sk-x"}}}"#;
const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}"#;

/// The router role with the upstream role's backends; `gpt-4o-mini` is
/// served directly by `default/openai` (API key, prefix, model override),
/// `llama-3` by `default/local`, and `claude-x` goes through the upstream role.
fn direct_config() -> aigw_filter::config::PluginConfig {
    let upstream = upstream_config();
    let mut config = router_config();
    config.backends = upstream.backends;
    config.credentials = upstream.credentials;
    config.config_version = upstream.config_version;
    config.direct = [
        ("gpt-4o-mini", "default/openai"),
        ("llama-3", "default/local"),
    ]
    .into_iter()
    .map(|(m, b)| (m.to_string(), b.to_string()))
    .collect();
    config
}

fn client_headers(len: usize) -> Vec<(&'static str, String)> {
    let mut h = chat_headers(len);
    h.push(("authorization", "Bearer client-secret".into()));
    h.push(("x-api-key", "client-secret-2".into()));
    // A client may not pick the route or the endpoint itself.
    h.push(("x-aigw-endpoint", "embeddings".into()));
    h.push(("x-aigw-direct", "default/local".into()));
    h
}

/// A 200 answer's headers of `content_type`.
fn ok_headers(vm: &mut Vm, ctx: u32, content_type: &str) -> Result<Action, VmError> {
    vm.response_headers(
        ctx,
        &[(":status", "200"), ("content-type", content_type)],
        false,
    )
}

/// The `authorization` values the request `ctx` goes upstream with.
fn authorization(vm: &Vm, ctx: u32) -> Vec<String> {
    vm.stream(ctx).request_headers().get_all("authorization")
}

/// A request for `body`'s model up to the end of its body.
fn request(vm: &mut Vm, body: &[u8]) -> Result<(u32, Action), VmError> {
    let ctx = vm.create_stream()?;
    let action = vm.request_headers(ctx, &refs(&client_headers(body.len())), false)?;
    assert_eq!(action, Action::Pause);
    let action = vm.request_body(ctx, body, true)?;
    Ok((ctx, action))
}

/// The first request of a VM: fetches the credentials, then goes on.
fn first_request(vm: &mut Vm) -> Result<u32, VmError> {
    let (ctx, action) = request(vm, BODY)?;
    assert_eq!(action, Action::Pause, "waits for the credential service");
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, CREDENTIAL_CLUSTER);
    vm.respond_http_call(calls[0].token, &[(":status", "200")], CREDENTIALS_OK)?;
    let s = vm.stream(ctx);
    assert!(s.local_response().is_none(), "{:?}", s.local_response());
    assert_eq!(s.continued, [StreamType::HttpRequest]);
    Ok(ctx)
}

#[test]
fn the_request_is_written_for_its_backend_with_its_credential() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    let ctx = first_request(&mut vm)?;
    let s = vm.stream(ctx);
    let h = s.request_headers();
    assert_eq!(h.get_all("authorization"), ["Bearer sk-x"]);
    assert!(
        !h.contains("x-api-key") && !h.contains("x-aigw-endpoint"),
        "{h:?}"
    );
    assert_eq!(
        h.get(":path").as_deref(),
        Some("/openai/v1/chat/completions")
    );
    // The route rewrites the host: the client's picks the virtual host.
    assert_eq!(h.get(":authority").as_deref(), Some("gateway.local"));
    assert_eq!(h.get_all("x-ai-eg-model"), ["gpt-4o-mini"]);
    // Names the backend it was written for: only that rule's route takes it.
    assert_eq!(h.get_all("x-aigw-direct"), ["default/openai"]);
    assert_eq!(h.get("accept-encoding").as_deref(), Some("identity"));
    assert!(s.called_foreign("clear_route_cache"));
    let sent = json(&s.request_body_sent);
    assert_eq!(sent["model"], "gpt-4o-2024-08-06");
    assert_eq!(
        h.get_all("content-length"),
        [s.request_body_sent.len().to_string()]
    );

    // A JSON answer is held until it parses, then counted.
    let action = ok_headers(&mut vm, ctx, "application/json")?;
    assert_eq!(action, Action::Pause);
    assert_eq!(vm.response_body(ctx, &ANSWER[..20], false)?, Action::Pause);
    assert_eq!(
        vm.response_body(ctx, &ANSWER[20..], true)?,
        Action::Continue
    );
    let s = vm.stream(ctx);
    assert_eq!(s.response_body_sent, ANSWER);
    assert_eq!(s.response_headers().get(":status").as_deref(), Some("200"));
    vm.finish_stream(ctx)?;
    assert_eq!(
        vm.stream(ctx).property("llm_total_token").as_deref(),
        Some("11")
    );

    // The next request uses the credentials fetched.
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-x"]);
    assert_eq!(vm.host().http_calls.len(), 1, "no second fetch");
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn a_backend_without_auth_needs_no_credential_and_other_models_are_handed_on() -> Result<(), VmError>
{
    let mut vm = vm_with(&direct_config())?;
    let body = br#"{"model":"llama-3","messages":[]}"#;
    let (ctx, action) = request(&mut vm, body)?;
    assert_eq!(action, Action::Continue);
    let h = vm.stream(ctx).request_headers();
    assert!(
        !h.contains("authorization") && !h.contains("x-aigw-endpoint"),
        "{h:?}"
    );
    assert_eq!(
        vm.stream(ctx).request_body_sent,
        body,
        "nothing in the body changes"
    );
    assert!(vm.host().http_calls.is_empty());

    // A model of a rule with several backends: the upstream role's job.
    let body = br#"{"model":"claude-x","messages":[]}"#;
    let (ctx, action) = request(&mut vm, body)?;
    assert_eq!(action, Action::Continue);
    let h = vm.stream(ctx).request_headers();
    assert_eq!(h.get_all("x-aigw-endpoint"), ["chat"]);
    assert!(
        !h.contains("x-aigw-direct"),
        "the client's own is removed: {h:?}"
    );
    assert_eq!(
        h.get("authorization").as_deref(),
        Some("Bearer client-secret"),
        "left to the upstream role"
    );
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn a_malformed_answer_is_a_502_in_the_clients_shape() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    let ctx = first_request(&mut vm)?;
    let action = ok_headers(&mut vm, ctx, "application/json")?;
    assert_eq!(action, Action::Pause);
    assert_eq!(
        vm.response_body(ctx, br#"{"choices": [{"#, true)?,
        Action::Continue
    );
    let s = vm.stream(ctx);
    assert_eq!(s.response_headers().get(":status").as_deref(), Some("502"));
    let error = json(&s.response_body_sent);
    assert_eq!(error["error"]["code"], "upstream_response_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn a_stream_that_fails_before_its_first_token_is_a_502() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    let body = br#"{"model":"llama-3","stream":true,"messages":[]}"#;
    let (ctx, _) = request(&mut vm, body)?;
    let action = ok_headers(&mut vm, ctx, "text/event-stream")?;
    assert_eq!(action, Action::Pause);
    let error_event =
        b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
    assert_eq!(vm.response_body(ctx, error_event, true)?, Action::Continue);
    let s = vm.stream(ctx);
    assert_eq!(s.response_headers().get(":status").as_deref(), Some("502"));
    assert_eq!(
        json(&s.response_body_sent)["error"]["code"],
        "upstream_response_error"
    );

    // A sound stream is held only until its first content event.
    let (ctx, _) = request(&mut vm, body)?;
    ok_headers(&mut vm, ctx, "text/event-stream")?;
    let first = b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    assert_eq!(vm.response_body(ctx, &first[..10], false)?, Action::Pause);
    assert_eq!(
        vm.response_body(ctx, &first[10..], false)?,
        Action::Continue
    );
    let done = b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
    assert_eq!(vm.response_body(ctx, done, true)?, Action::Continue);
    let s = vm.stream(ctx);
    assert_eq!(s.response_headers().get(":status").as_deref(), Some("200"));
    let sent = String::from_utf8_lossy(&s.response_body_sent).into_owned();
    assert!(
        sent.starts_with("data: {\"id\":\"x\"") && sent.contains("\"hi\""),
        "{sent}"
    );
    assert!(
        !sent.contains("usage"),
        "the client did not ask for usage: {sent}"
    );
    vm.finish_stream(ctx)?;
    assert_eq!(
        vm.stream(ctx).property("llm_total_token").as_deref(),
        Some("4")
    );
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn a_backend_cooling_down_after_a_429_is_not_called() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    let body = br#"{"model":"llama-3","messages":[]}"#;
    let (ctx, _) = request(&mut vm, body)?;
    let action = vm.response_headers(
        ctx,
        &[
            (":status", "429"),
            ("content-type", "application/json"),
            ("retry-after", "30"),
        ],
        false,
    )?;
    assert_eq!(
        action,
        Action::Continue,
        "a 429 goes to the client as it is"
    );
    vm.response_body(ctx, br#"{"error":{"message":"slow down"}}"#, true)?;
    vm.finish_stream(ctx)?;

    let (ctx, action) = request(&mut vm, body)?;
    assert_eq!(action, Action::Pause);
    let r = vm
        .stream(ctx)
        .local_response()
        .expect("the gateway answers");
    assert_eq!(r.status, 429);
    let left: u64 = r.headers.get("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&left), "{left}");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn no_credential_service_answer_is_a_503_naming_no_secret() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Pause);
    let token = vm.pending_http_calls()[0].token;
    vm.respond_http_call(token, &[(":status", "503")], b"down")?;
    let r = vm.stream(ctx).local_response().expect("a local reply");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["code"],
        "upstream_credentials_unavailable"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("client-secret"));
    vm.assert_no_violations();
    Ok(())
}

/// Credentials older than their TTL are used at once; the root context
/// refreshes them on its tick, one call at a time, and a refresh that fails
/// (a controller that hangs: Envoy ends the call with no answer) keeps the
/// ones fetched before and waits a few seconds before the next.
#[test]
fn stale_credentials_serve_at_once_and_are_refreshed_in_the_background() -> Result<(), VmError> {
    let mut vm = vm_with(&direct_config())?;
    first_request(&mut vm)?;
    vm.tick()?;
    assert!(
        vm.pending_http_calls().is_empty(),
        "fresh: nothing to refresh"
    );

    vm.advance_clock(std::time::Duration::from_secs(31));
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(
        action,
        Action::Continue,
        "a stale credential does not hold the request"
    );
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-x"]);
    assert!(
        vm.pending_http_calls().is_empty(),
        "the request fetched nothing"
    );
    vm.tick()?;
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "the tick sends a refresh");
    assert_eq!(calls[0].cluster, CREDENTIAL_CLUSTER);
    vm.tick()?;
    assert_eq!(vm.pending_http_calls().len(), 1, "one refresh at a time");

    // The controller hangs: the call ends with no answer.
    vm.respond_http_call(calls[0].token, &[], b"")?;
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-x"]);
    vm.tick()?;
    assert!(
        vm.pending_http_calls().is_empty(),
        "waits before the next refresh"
    );

    vm.advance_clock(std::time::Duration::from_secs(6));
    vm.tick()?;
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "refreshes again after the wait");
    let rotated =
        br#"{"config_version":3,"credentials":{"default/openai-key":{"api_key":"sk-rotated"}}}"#;
    vm.respond_http_call(calls[0].token, &[(":status", "200")], rotated)?;
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-rotated"]);
    vm.tick()?;
    assert!(vm.pending_http_calls().is_empty(), "fresh again");
    let logs = vm.logs_at_least(LogLevel::Warn).join("\n");
    assert!(
        !logs.contains("sk-x") && !logs.contains("sk-rotated"),
        "{logs}"
    );
    vm.assert_no_violations();
    Ok(())
}

/// The root context fetches the credentials on its first tick, so the
/// worker's first request does not wait for them, and again as soon as the
/// configuration is newer than they are (a controller that has not caught
/// up yet is asked again a few seconds later, not on every tick).
#[test]
fn credentials_are_fetched_ahead_of_requests_and_after_a_configuration_change(
) -> Result<(), VmError> {
    let mut config = direct_config();
    let mut vm = vm_with(&config)?;
    vm.tick()?;
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "fetched before any request");
    vm.respond_http_call(calls[0].token, &[(":status", "200")], CREDENTIALS_OK)?;
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Continue, "the first request does not wait");
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-x"]);

    config.config_version += 1;
    assert!(vm.configure(&serde_json::to_vec(&config).unwrap())?);
    vm.tick()?;
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "refetched after the configuration changed");
    // The controller still answers with the older version.
    vm.respond_http_call(calls[0].token, &[(":status", "200")], CREDENTIALS_OK)?;
    vm.tick()?;
    assert!(vm.pending_http_calls().is_empty(), "not on every tick");
    vm.advance_clock(std::time::Duration::from_secs(5));
    vm.tick()?;
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "asked again after the wait");
    let current =
        br#"{"config_version":4,"credentials":{"default/openai-key":{"api_key":"sk-new"}}}"#;
    vm.respond_http_call(calls[0].token, &[(":status", "200")], current)?;
    let (ctx, action) = request(&mut vm, BODY)?;
    assert_eq!(action, Action::Continue);
    assert_eq!(authorization(&vm, ctx), ["Bearer sk-new"]);
    vm.tick()?;
    assert!(vm.pending_http_calls().is_empty());
    vm.assert_no_violations();
    Ok(())
}
