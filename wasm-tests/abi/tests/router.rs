//! The router role of the built filter, driven through the proxy-wasm ABI.

mod common;

use aigw_wasm_abi_tests::{Action, Flow, HeaderOp, MapType, VmError};
use common::*;

#[test]
fn models_endpoint_is_answered_locally() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let action = vm.request_headers(
        ctx,
        &[
            (":method", "GET"),
            (":path", "/v1/models"),
            (":authority", "gw"),
        ],
        true,
    )?;
    assert_eq!(action, Action::Pause);
    let s = vm.stream(ctx);
    let r = s.local_response().expect("a local response");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").as_deref(),
        Some("application/json")
    );
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    // Exact models only, in route order, without repeats.
    assert_eq!(ids, ["gpt-4o-mini", "llama-3"]);
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["created"], CREATED);
    }
    assert_eq!(data[1]["owned_by"], "meta");
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn chat_request_sets_routing_headers_and_clears_route_cache() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut headers = chat_headers(body.len());
    // A client may not pick the route or the endpoint itself.
    headers.push(("x-ai-eg-model", "llama-3".into()));
    headers.push(("x-aigw-endpoint", "embeddings".into()));
    let action = vm.request_headers(ctx, &refs(&headers), false)?;
    assert_eq!(
        action,
        Action::Pause,
        "the router must hold headers to read the body"
    );
    let action = vm.request_body(ctx, body, true)?;
    assert_eq!(action, Action::Continue);

    let s = vm.stream(ctx);
    assert!(s.local_response().is_none(), "{:?}", s.local_response());
    let h = s.request_headers();
    assert_eq!(h.get_all("x-ai-eg-model"), ["gpt-4o-mini"]);
    assert_eq!(h.get_all("x-aigw-endpoint"), ["chat"]);
    assert!(s.called_foreign("clear_route_cache"));
    // The route cache is cleared after the model header is set.
    let set_at = s
        .header_ops
        .iter()
        .rposition(|op| matches!(op, HeaderOp::Replace(MapType::RequestHeaders, k, _) if k == "x-ai-eg-model"))
        .expect("x-ai-eg-model was set");
    assert!(set_at < s.header_ops.len());
    assert_eq!(s.request_body_sent, body, "the body goes on unchanged");
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(())
}

#[test]
fn body_split_in_chunks_is_read_whole() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"claude-3-5-sonnet","stream":false,"messages":[]}"#;
    let flow = vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 7)?;
    assert_eq!(flow, Flow::Continued);
    let s = vm.stream(ctx);
    assert_eq!(
        s.request_headers().get("x-ai-eg-model").as_deref(),
        Some("claude-3-5-sonnet")
    );
    // Every chunk but the last was held.
    let body_actions: Vec<Action> = s
        .actions
        .iter()
        .filter(|a| a.callback == "proxy_on_request_body")
        .map(|a| a.action)
        .collect();
    assert_eq!(body_actions.last(), Some(&Action::Continue));
    assert!(body_actions[..body_actions.len() - 1]
        .iter()
        .all(|a| *a == Action::Pause));
    assert_eq!(s.request_body_sent, body);
    Ok(())
}

fn error_of(vm: &aigw_wasm_abi_tests::Vm, ctx: u32) -> (u32, serde_json::Value) {
    let s = vm.stream(ctx);
    let r = s
        .local_response()
        .unwrap_or_else(|| panic!("expected a local response; actions {:?}", s.actions));
    assert_eq!(
        r.headers.get("content-type").as_deref(),
        Some("application/json")
    );
    (r.status, r.json())
}

fn send_chat(body: &[u8]) -> Result<(u32, serde_json::Value), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let flow = vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 1 << 20)?;
    assert_eq!(flow, Flow::LocalResponse);
    assert_eq!(vm.stream(ctx).last_action(), Some(Action::Pause));
    assert!(vm.stream(ctx).request_body_sent.is_empty());
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(error_of(&vm, ctx))
}

fn assert_openai_error(v: &serde_json::Value, code: Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert_eq!(e["type"], "invalid_request_error", "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    if let Some(code) = code {
        assert_eq!(e["code"], code, "{v}");
    }
}

#[test]
fn malformed_json_is_a_400_in_openai_shape() -> Result<(), VmError> {
    let (status, v) = send_chat(br#"{"model":"gpt-4o-mini","messages":["#)?;
    assert_eq!(status, 400);
    assert_openai_error(&v, Some("invalid_json"));
    Ok(())
}

#[test]
fn missing_model_is_a_400() -> Result<(), VmError> {
    let (status, v) = send_chat(br#"{"messages":[]}"#)?;
    assert_eq!(status, 400);
    assert_openai_error(&v, Some("missing_model"));
    assert_eq!(v["error"]["param"], "model");
    Ok(())
}

#[test]
fn unknown_model_is_a_404_model_not_found() -> Result<(), VmError> {
    let (status, v) = send_chat(br#"{"model":"gpt-5-turbo-nope","messages":[]}"#)?;
    assert_eq!(status, 404);
    assert_openai_error(&v, Some("model_not_found"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gpt-5-turbo-nope"));
    Ok(())
}

#[test]
fn declared_content_length_over_the_limit_is_a_413() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let headers = chat_headers(MAX_BYTES as usize + 1);
    let action = vm.request_headers(ctx, &refs(&headers), false)?;
    assert_eq!(action, Action::Pause);
    let (status, v) = error_of(&vm, ctx);
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    assert!(!vm.stream(ctx).called_foreign("clear_route_cache"));
    Ok(())
}

#[test]
fn chunked_body_over_the_limit_is_a_413() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let mut body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 3 * MAX_BYTES as usize));
    body.extend_from_slice(br#""}]}"#);
    let headers = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gw"),
        ("transfer-encoding", "chunked"),
    ];
    let flow = vm.send_request(ctx, &headers, &body, 256)?;
    assert_eq!(flow, Flow::LocalResponse);
    let (status, v) = error_of(&vm, ctx);
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    // It stopped as soon as the held body passed the limit.
    let body_calls = vm
        .stream(ctx)
        .actions
        .iter()
        .filter(|a| a.callback == "proxy_on_request_body")
        .count();
    assert_eq!(body_calls, (MAX_BYTES as usize / 256) + 1);
    Ok(())
}

#[test]
fn anthropic_paths_get_the_anthropic_error_shape() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    // Malformed body on the Messages endpoint.
    let ctx = vm.create_stream()?;
    let body = b"{not json";
    let headers = [
        (":method", "POST"),
        (":path", "/anthropic/v1/messages"),
        (":authority", "gw"),
        ("content-length", "9"),
    ];
    assert_eq!(
        vm.send_request(ctx, &headers, body, 100)?,
        Flow::LocalResponse
    );
    let (status, v) = error_of(&vm, ctx);
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].is_string());
    // A path under /anthropic the gateway does not serve.
    let ctx = vm.create_stream()?;
    vm.request_headers(
        ctx,
        &[
            (":method", "POST"),
            (":path", "/anthropic/v1/nope"),
            (":authority", "gw"),
        ],
        false,
    )?;
    let (status, v) = error_of(&vm, ctx);
    assert_eq!(status, 404);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    // Unknown model on the Messages endpoint.
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"mistral-x","max_tokens":5,"messages":[]}"#;
    vm.send_request(ctx, &headers, body, 100)?;
    let (status, v) = error_of(&vm, ctx);
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    vm.assert_no_violations();
    Ok(())
}

/// Routes a chat request, then sends `response` back through the filter.
fn round_trip(
    request: &[u8],
    response_headers: &[(&str, &str)],
    response: &[u8],
    chunk: usize,
) -> Result<(aigw_wasm_abi_tests::Vm, u32), VmError> {
    let mut vm = vm_with(&router_config())?;
    let ctx = vm.create_stream()?;
    let flow = vm.send_request(ctx, &refs(&chat_headers(request.len())), request, 1 << 20)?;
    assert_eq!(flow, Flow::Continued);
    let flow = vm.send_response(ctx, response_headers, response, chunk)?;
    assert_eq!(flow, Flow::Continued);
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok((vm, ctx))
}

#[test]
fn json_response_usage_becomes_properties() -> Result<(), VmError> {
    let response = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":5}}}"#;
    let (vm, ctx) = round_trip(
        br#"{"model":"gpt-4o-mini","messages":[]}"#,
        &[(":status", "200"), ("content-type", "application/json")],
        response,
        16,
    )?;
    let s = vm.stream(ctx);
    assert_eq!(s.property("llm_input_token").as_deref(), Some("11"));
    assert_eq!(s.property("llm_output_token").as_deref(), Some("22"));
    assert_eq!(s.property("llm_total_token").as_deref(), Some("33"));
    assert_eq!(s.property("llm_cached_input_token").as_deref(), Some("4"));
    assert_eq!(s.property("llm_reasoning_token").as_deref(), Some("5"));
    // Published once, not again in on_log.
    let totals = s
        .properties_set
        .iter()
        .filter(|(p, _)| p == &["llm_total_token"])
        .count();
    assert_eq!(totals, 1);
    assert_eq!(s.response_body_sent, response, "JSON bodies pass unchanged");
    Ok(())
}

const STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn streaming_usage_chunk_is_dropped_when_the_client_did_not_ask() -> Result<(), VmError> {
    for chunk in [1, 5, 13, 64, 4096] {
        let (vm, ctx) = round_trip(
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
            &[
                (":status", "200"),
                ("content-type", "text/event-stream"),
                ("content-length", &STREAM.len().to_string()),
            ],
            STREAM.as_bytes(),
            chunk,
        )?;
        let s = vm.stream(ctx);
        let sent = String::from_utf8(s.response_body_sent.clone()).unwrap();
        assert!(!sent.contains("prompt_tokens"), "chunk {chunk}: {sent}");
        let want: String = STREAM
            .split_inclusive("\n\n")
            .filter(|e| !e.contains("prompt_tokens"))
            .collect();
        assert_eq!(sent, want, "chunk {chunk}");
        assert!(
            !s.response_headers().contains("content-length"),
            "chunk {chunk}: the length changes, so content-length must go"
        );
        assert_eq!(s.property("llm_input_token").as_deref(), Some("9"));
        assert_eq!(s.property("llm_output_token").as_deref(), Some("2"));
        assert_eq!(s.property("llm_total_token").as_deref(), Some("11"));
    }
    Ok(())
}

#[test]
fn streaming_is_unchanged_when_the_client_asked_for_usage() -> Result<(), VmError> {
    let (vm, ctx) = round_trip(
        br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        STREAM.as_bytes(),
        3,
    )?;
    let s = vm.stream(ctx);
    assert_eq!(s.response_body_sent, STREAM.as_bytes());
    assert_eq!(s.property("llm_total_token").as_deref(), Some("11"));
    Ok(())
}

#[test]
fn error_responses_are_not_counted() -> Result<(), VmError> {
    let body = br#"{"error":{"message":"rate limited"},"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    let (vm, ctx) = round_trip(
        br#"{"model":"gpt-4o-mini","messages":[]}"#,
        &[(":status", "429"), ("content-type", "application/json")],
        body,
        1000,
    )?;
    let s = vm.stream(ctx);
    assert_eq!(s.property("llm_total_token"), None);
    assert_eq!(s.response_body_sent, body);
    Ok(())
}

#[test]
fn many_requests_share_one_vm() -> Result<(), VmError> {
    let mut vm = vm_with(&router_config())?;
    let mut open = Vec::new();
    // Interleaved streams, as on one Envoy worker.
    for i in 0..20 {
        let ctx = vm.create_stream()?;
        let model = if i % 2 == 0 { "gpt-4o-mini" } else { "llama-3" };
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        vm.request_headers(ctx, &refs(&chat_headers(body.len())), false)?;
        open.push((ctx, model, body));
    }
    for (ctx, model, body) in &open {
        vm.request_body(*ctx, body.as_bytes(), true)?;
        assert_eq!(
            vm.stream(*ctx)
                .request_headers()
                .get("x-ai-eg-model")
                .as_deref(),
            Some(*model)
        );
    }
    for (ctx, _, _) in open {
        vm.finish_stream(ctx)?;
    }
    vm.assert_no_violations();
    Ok(())
}
