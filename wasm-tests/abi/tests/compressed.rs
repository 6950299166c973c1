//! Compressed provider answers through the built filter's upstream role:
//! it asks for `accept-encoding: identity`, inflates gzip / deflate bodies
//! it gets anyway (held JSON, streamed SSE, errors) under Envoy's buffer
//! semantics, and turns codings it cannot read and corrupt bodies into 502s.

mod common;

use aigw_wasm_abi_tests::{Vm, VmError};
use common::*;
use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &[u8] = br#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend(compress_to_vec(data, 6));
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    out.extend(h.finalize().to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn headers() -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/v1/chat/completions".into()),
        (":authority", "gateway.local".into()),
        ("content-type", "application/json".into()),
        ("accept-encoding", "gzip, deflate, br".into()),
        ("x-ai-eg-model", "gpt-4o-mini".into()),
        ("x-aigw-endpoint", "chat".into()),
    ]
}

/// A request through the upstream role to an OpenAI backend, then the
/// answer: headers and the body in `size`-byte chunks.
fn exchange(
    vm: &mut Vm,
    response: &[(&str, &str)],
    body: &[u8],
    size: usize,
) -> Result<u32, VmError> {
    let ctx = vm.create_stream()?;
    vm.set_stream_property(ctx, &BACKEND_METADATA, b"default/local");
    vm.request_headers(ctx, &refs(&headers()), false)?;
    vm.request_body(ctx, BODY, true)?;
    let h = vm.stream(ctx).request_headers();
    assert_eq!(h.get("accept-encoding").as_deref(), Some("identity"));
    vm.response_headers(ctx, response, body.is_empty())?;
    let chunks: Vec<&[u8]> = body.chunks(size.max(1)).collect();
    for (i, c) in chunks.iter().enumerate() {
        vm.response_body(ctx, c, i + 1 == chunks.len())?;
    }
    Ok(ctx)
}

#[test]
fn held_json_is_inflated_in_any_chunking() -> Result<(), VmError> {
    for (encoding, body) in [
        ("gzip", gzip(ANSWER)),
        ("deflate", compress_to_vec_zlib(ANSWER, 6)),
    ] {
        for size in [1, 5, 64, body.len()] {
            let mut vm = vm_with(&upstream_config())?;
            let len = body.len().to_string();
            let response = [
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-encoding", encoding),
                ("content-length", len.as_str()),
            ];
            let ctx = exchange(&mut vm, &response, &body, size)?;
            let s = vm.stream(ctx);
            assert_eq!(s.response_body_sent, ANSWER, "{encoding} chunk size {size}");
            let h = s.response_headers();
            assert!(
                !h.contains("content-encoding") && !h.contains("content-length"),
                "{h:?}"
            );
            assert_eq!(h.get(":status").as_deref(), Some("200"));
            vm.finish_stream(ctx)?;
            vm.assert_no_violations();
        }
    }
    Ok(())
}

#[test]
fn streams_and_errors_are_inflated_as_they_pass() -> Result<(), VmError> {
    let sse: Vec<u8> = (0..50)
        .flat_map(|i| {
            format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"w{i}\"}}}}]}}\n\n")
                .into_bytes()
        })
        .chain(b"data: [DONE]\n\n".iter().copied())
        .collect();
    for (status, content_type, plain) in [
        ("200", "text/event-stream", sse.as_slice()),
        (
            "429",
            "application/json",
            br#"{"error":{"message":"slow down"}}"#.as_slice(),
        ),
    ] {
        let body = gzip(plain);
        for size in [3, 100] {
            let mut vm = vm_with(&upstream_config())?;
            let response = [
                (":status", status),
                ("content-type", content_type),
                ("content-encoding", "gzip"),
            ];
            let ctx = exchange(&mut vm, &response, &body, size)?;
            let s = vm.stream(ctx);
            assert_eq!(s.response_body_sent, plain, "{status} chunk size {size}");
            assert!(!s.response_headers().contains("content-encoding"));
            vm.finish_stream(ctx)?;
            vm.assert_no_violations();
        }
    }
    Ok(())
}

#[test]
fn unreadable_answers_become_502s() -> Result<(), VmError> {
    let good = gzip(ANSWER);
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("br", ANSWER.to_vec(), "cannot decode"),
        ("gzip", good[..good.len() - 4].to_vec(), "ended early"),
        ("gzip", b"{\"plain\":\"json\"}".to_vec(), "corrupt"),
    ];
    for (encoding, body, why) in cases {
        let mut vm = vm_with(&upstream_config())?;
        let response = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-encoding", encoding),
        ];
        let ctx = exchange(&mut vm, &response, &body, 7)?;
        let s = vm.stream(ctx);
        let h = s.response_headers();
        assert_eq!(h.get(":status").as_deref(), Some("502"), "{encoding} {why}");
        assert!(!h.contains("content-encoding"));
        let sent = json(&s.response_body_sent);
        let message = sent["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message}");
        assert_eq!(sent["error"]["code"], "upstream_response_error");
        vm.finish_stream(ctx)?;
        vm.assert_no_violations();
    }
    Ok(())
}

#[test]
fn identity_answers_are_untouched() -> Result<(), VmError> {
    let mut vm = vm_with(&upstream_config())?;
    let response = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "identity"),
    ];
    let ctx = exchange(&mut vm, &response, ANSWER, 10)?;
    assert_eq!(vm.stream(ctx).response_body_sent, ANSWER);
    vm.assert_no_violations();
    Ok(())
}
