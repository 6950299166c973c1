//! Regression tests for filter bugs this harness found (UTF-8 header panic,
//! header injection through the model name, credential refetch loop, secrets
//! quoted in load errors).
//!

mod common;

use aigw_wasm_abi_tests::{Action, Headers, StreamType, Vm, VmError};
use common::*;

/// Routes a chat request on the router role and returns the stream.
fn routed_chat(vm: &mut Vm) -> Result<u32, VmError> {
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"gpt-4o-mini","messages":[]}"#;
    vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 100)?;
    assert_eq!(vm.stream(ctx).last_action(), Some(Action::Continue));
    Ok(ctx)
}

/// BUG 1 (filter/src/host.rs, router role, `on_http_response_headers`):
/// a response header value that is not UTF-8 panics the filter, which kills
/// the worker's VM. HTTP allows obs-text bytes (0x80-0xFF) in header values
/// and Envoy's codecs pass them on, so any backend can send
/// `content-type: text/event-stream; charset=\xff`. The filter reads headers
/// with the SDK's `get_http_response_header`, which does
/// `String::from_utf8(..).unwrap()` (proxy-wasm 0.2.5 hostcalls.rs:260).
/// Fix: read peer-controlled headers with `get_http_*_header_bytes` and
/// decode lossily.
#[test]
fn non_utf8_response_content_type_does_not_kill_the_vm() {
    let mut vm = vm_with(&router_config()).unwrap();
    let ctx = routed_chat(&mut vm).unwrap();
    let mut headers = Headers::from_pairs(&[(":status", "200")]);
    headers.add("content-type", b"application/json; charset=\xff");
    let result = vm.response_headers_map(ctx, headers, false);
    assert!(
        result.is_ok(),
        "a backend's header value killed the VM:\n{}",
        result.unwrap_err()
    );
    // And the VM still serves the next request.
    routed_chat(&mut vm).unwrap();
}

/// BUG 2 (filter/src/request.rs `parse_request` + filter/src/host.rs
/// `RouterFilter::route`): the model name from the client's JSON body is
/// written into the `x-ai-eg-model` request header as it is. JSON strings
/// can hold CR, LF and NUL (`"\r\n"`), and a prefix (or regex) model rule
/// lets any suffix through, so a client can put a line break into a header
/// Envoy forwards upstream. Envoy does not validate values set through
/// proxy-wasm (`setCopy` only ASSERTs in debug builds). Fix: answer 400 for
/// a model name with control characters before it becomes a header.
#[test]
fn model_name_with_line_break_never_becomes_a_header() {
    let mut vm = vm_with(&router_config()).unwrap();
    let ctx = vm.create_stream().unwrap();
    // "claude-" is a prefix rule in router_config().
    let body = br#"{"model":"claude-3\r\nx-injected: yes","messages":[]}"#;
    vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 100)
        .unwrap();
    let s = vm.stream(ctx);
    let model = s.request_headers().get("x-ai-eg-model");
    assert!(
        !model.as_deref().unwrap_or("").contains(['\r', '\n']),
        "x-ai-eg-model carries a line break: {model:?}; violations: {:?}",
        vm.host().violations
    );
    assert_eq!(s.local_response().map(|r| r.status), Some(400));
    vm.assert_no_violations();
}

fn credential_request(vm: &mut Vm) -> Result<u32, VmError> {
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/openai");
    vm.request_headers(
        ctx,
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("x-aigw-endpoint", "chat"),
        ],
        false,
    )?;
    assert_eq!(
        vm.request_body(ctx, br#"{"model":"gpt-4o-mini"}"#, true)?,
        Action::Pause
    );
    Ok(ctx)
}

/// BUG 3 (filter/src/host.rs, `UpstreamFilter::on_http_call_response` and
/// `finish`): when the credential service answers 200 with a
/// `config_version` older than the plugin configuration's (a controller
/// that restarted or lags the xDS push), the cache loads but is never
/// "fresh", so `finish` dispatches another fetch from inside the response
/// handler, and again on that answer, forever. The request hangs until
/// Envoy's timeout and the credential service gets a request per answer.
/// (The comment "Loaded now, so `finish` will not fetch again" is wrong.)
/// Fix: after a load, use what was loaded or fail with 503; never refetch
/// for the same request.
#[test]
fn stale_credential_answer_does_not_refetch_forever() {
    let mut vm = vm_with(&upstream_config()).unwrap(); // config_version 3
    let ctx = credential_request(&mut vm).unwrap();
    let stale = br#"{"config_version":2,"credentials":{"default/openai-key":{"api_key":"sk-x"}}}"#;
    let token = vm.pending_http_calls()[0].token;
    vm.respond_http_call(token, &[(":status", "200")], stale)
        .unwrap();
    let s = vm.stream(ctx);
    let settled = s.local_response().is_some() || s.continued.contains(&StreamType::HttpRequest);
    assert!(
        settled,
        "after the credential answer the request is neither resumed nor failed; \
         the filter dispatched {} calls so far and {} are pending",
        vm.host().http_calls.len(),
        vm.pending_http_calls().len()
    );
    assert!(vm.pending_http_calls().is_empty());
}

/// BUG 4 (filter/src/credentials.rs `CredentialCache::load`, logged by
/// filter/src/host.rs): when the credential document does not have the
/// expected shape, the serde error is logged, and serde errors quote the
/// offending value: `unknown variant `sk-...`` or
/// `invalid type: string "sk-..."`. A credential then lands in Envoy's log,
/// which the design forbids ("Secrets must never reach a log line"). A
/// controller that serializes a key as a bare string (version skew) is
/// enough. Fix: log the error's position/category only (`e.classify()`,
/// line, column), never its Display.
#[test]
fn malformed_credential_document_never_logs_the_secret() {
    // One backend in the rule, so the failure is a local 503 (with another
    // one the attempt would go on to fail over; see tests/upstream.rs).
    let mut config = upstream_config();
    config.backends.retain(|name, _| name == "default/openai");
    let mut vm = vm_with(&config).unwrap();
    let answers: [&[u8]; 3] = [
        br#"{"config_version":3,"credentials":{"default/openai-key":"sk-leaky-secret"}}"#,
        br#"{"config_version":"sk-leaky-secret","credentials":{}}"#,
        br#"{"config_version":3,"credentials":{"default/openai-key":{"aws":"sk-leaky-secret"}}}"#,
    ];
    for answer in answers {
        let ctx = credential_request(&mut vm).unwrap();
        let token = vm.pending_http_calls()[0].token;
        vm.respond_http_call(token, &[(":status", "200")], answer)
            .unwrap();
        assert_eq!(vm.stream(ctx).local_response().map(|r| r.status), Some(503));
    }
    let leaked: Vec<&String> = vm
        .host()
        .logs
        .iter()
        .map(|l| &l.message)
        .filter(|m| m.contains("sk-leaky-secret"))
        .collect();
    assert!(leaked.is_empty(), "secret in log lines: {leaked:#?}");
}
