//! GenAI metrics through the proxy-wasm metric hostcalls: defined once per
//! label set, counters incremented by what the response reported.

mod common;

use aigw_filter::config::{BackendConfig, SchemaName};
use aigw_wasm_abi_tests::{Flow, Vm, VmError};
use common::*;
use std::time::Duration;

const COUNTER: i32 = 0;
const HISTOGRAM: i32 = 2;
const LABELS: &str =
    ";op=chat;provider=openai;req_model=gpt-4o-mini;resp_model=gpt-4o-mini-2024;backend=default/openai";

fn metric(vm: &Vm, name: &str) -> Option<(i32, i64)> {
    vm.host()
        .metrics
        .iter()
        .find(|m| m.0 == name)
        .map(|m| (m.1, m.2))
}

fn chat(vm: &mut Vm, stream: bool) -> Result<(), VmError> {
    let ctx = vm.create_stream()?;
    let request = format!(r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[]}}"#);
    let flow = vm.send_request(
        ctx,
        &refs(&chat_headers(request.len())),
        request.as_bytes(),
        64,
    )?;
    assert_eq!(flow, Flow::Continued);
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/openai");
    vm.set_stream_property(ctx, &["response", "code"], &200u64.to_le_bytes());
    vm.advance_clock(Duration::from_millis(250));
    let usage = r#""usage":{"prompt_tokens":11,"completion_tokens":5,"total_tokens":16}"#;
    if stream {
        let body = format!(
            "data: {{\"model\":\"gpt-4o-mini-2024\",\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}]}}\n\ndata: {{\"choices\":[],{usage}}}\n\ndata: [DONE]\n\n"
        );
        vm.response_headers(
            ctx,
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        )?;
        let (first, rest) = body.as_bytes().split_at(40);
        vm.response_body(ctx, first, false)?;
        vm.advance_clock(Duration::from_millis(400));
        vm.response_body(ctx, rest, true)?;
    } else {
        let body = format!(r#"{{"id":"c","model":"gpt-4o-mini-2024","choices":[],{usage}}}"#);
        vm.send_response(
            ctx,
            &[(":status", "200"), ("content-type", "application/json")],
            body.as_bytes(),
            16,
        )?;
    }
    vm.finish_stream(ctx)?;
    vm.assert_no_violations();
    Ok(())
}

fn config() -> aigw_filter::config::PluginConfig {
    let mut c = router_config();
    c.backends.insert(
        "default/openai".into(),
        BackendConfig {
            schema: SchemaName::OpenAI,
            ..Default::default()
        },
    );
    c
}

#[test]
fn metrics_are_defined_once_and_incremented() -> Result<(), VmError> {
    let mut vm = vm_with(&config())?;
    assert_eq!(
        vm.host().tick_period_ms,
        Some(1000),
        "counters are flushed every second"
    );
    chat(&mut vm, false)?;
    chat(&mut vm, false)?;
    let requests = format!("aigw_requests_total{LABELS}");
    // Counters are summed in the VM and handed to Envoy on the tick, and
    // histogram samples wait for it too (off the request's path).
    assert_eq!(metric(&vm, &requests), Some((COUNTER, 0)));
    assert_eq!(vm.host().recorded_samples, 0);
    vm.tick()?;
    assert_eq!(metric(&vm, &requests), Some((COUNTER, 2)));
    // Per request: its duration, its input and its output tokens.
    assert_eq!(vm.host().recorded_samples, 6);
    chat(&mut vm, false)?;
    vm.tick()?;
    vm.tick()?;
    assert_eq!(
        metric(&vm, &requests),
        Some((COUNTER, 3)),
        "each increment counted once"
    );
    assert_eq!(vm.host().recorded_samples, 9, "each sample recorded once");
    for (token, value) in [
        ("input", 33),
        ("output", 15),
        ("total", 48),
        ("reasoning", 0),
    ] {
        let name = format!("aigw_token_usage_total{LABELS};token={token}");
        assert_eq!(metric(&vm, &name), Some((COUNTER, value)), "{name}");
    }
    let duration = format!("gen_ai_server_request_duration_milliseconds{LABELS}");
    assert_eq!(metric(&vm, &duration), Some((HISTOGRAM, 250)));
    let tokens = format!("gen_ai_client_token_usage{LABELS};token=output");
    assert_eq!(metric(&vm, &tokens), Some((HISTOGRAM, 5)));
    // Defined once per name: no duplicates in the host's table.
    let names: std::collections::BTreeSet<_> = vm.host().metrics.iter().map(|m| &m.0).collect();
    assert_eq!(names.len(), vm.host().metrics.len());
    // Non-streaming requests have no time to first token.
    assert!(vm
        .host()
        .metrics
        .iter()
        .all(|m| !m.0.contains("first_token")));
    Ok(())
}

#[test]
fn streams_record_time_to_first_token() -> Result<(), VmError> {
    let mut vm = vm_with(&config())?;
    chat(&mut vm, true)?;
    let ttft = format!("gen_ai_server_time_to_first_token_milliseconds{LABELS}");
    assert_eq!(
        metric(&vm, &ttft),
        Some((HISTOGRAM, 0)),
        "not before the tick"
    );
    vm.tick()?;
    assert_eq!(metric(&vm, &ttft), Some((HISTOGRAM, 250)));
    // 400 ms after the first byte for 5 output tokens: 100 ms per token after the first.
    let tpot = format!("gen_ai_server_time_per_output_token_milliseconds{LABELS}");
    assert_eq!(metric(&vm, &tpot), Some((HISTOGRAM, 100)));
    let ctx_props = &vm.host().streams;
    let s = ctx_props.values().last().unwrap();
    assert_eq!(s.property("ttft_ms").as_deref(), Some("250"));
    assert_eq!(
        s.property("response_model").as_deref(),
        Some("gpt-4o-mini-2024")
    );
    assert_eq!(s.property("backend").as_deref(), Some("default/openai"));
    assert_eq!(s.property("provider").as_deref(), Some("openai"));
    Ok(())
}

#[test]
fn an_unknown_model_is_counted_as_other() -> Result<(), VmError> {
    let mut vm = vm_with(&config())?;
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"secret-model-name","messages":[]}"#;
    vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 64)?;
    vm.set_stream_property(ctx, &["response", "code"], &404u64.to_le_bytes());
    vm.finish_stream(ctx)?;
    vm.tick()?;
    let name = "aigw_requests_total;op=chat;req_model=other;error=404";
    assert_eq!(metric(&vm, name), Some((COUNTER, 1)));
    assert!(vm.host().metrics.iter().all(|m| !m.0.contains("secret")));
    Ok(())
}

#[test]
fn histogram_samples_are_handed_over_before_they_pile_up() -> Result<(), VmError> {
    let mut vm = vm_with(&config())?;
    // Three samples per request: the 4096th is the first of request
    // 1366, and the VM hands over all it holds then, without its tick.
    for _ in 0..1365 {
        chat(&mut vm, false)?;
    }
    assert_eq!(vm.host().recorded_samples, 0);
    chat(&mut vm, false)?;
    assert_eq!(vm.host().recorded_samples, 4096);
    vm.tick()?;
    assert_eq!(vm.host().recorded_samples, 4098);
    Ok(())
}
