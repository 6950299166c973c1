//! Times the filter's pure per-request work (no host calls) for the
//! benchmark's two requests, natively and, built for wasm32-wasip1, in V8
//! (`scripts/bench/run-wasi.mjs` under Node, optimizing compiler only, as
//! in Envoy): what of the filter's time in the VM is its own computation.
//! Prints one `HOT {"name":..,"us":..}` line per step.

use aigw_filter::chat_response::{ChatResponse, Source};
use aigw_filter::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};
use aigw_filter::credentials::AwsCredential;
use aigw_filter::request::{parse_request, Endpoint};
use aigw_filter::response::JsonBody;
use std::hint::black_box;
use std::time::Instant;

const CHAT: &[u8] =
    br#"{"model":"bench-bedrock","messages":[{"role":"user","content":"Say hello."}]}"#;
const OPENAI_ANSWER: &[u8] = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the benchmark's fake upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":14,"total_tokens":26}}"#;
const CONVERSE_ANSWER: &[u8] = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello! This is a fixed answer from the benchmark's fake upstream."}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":14,"totalTokens":26},"metrics":{"latencyMs":1}}"#;

fn time(name: &str, mut f: impl FnMut()) {
    for _ in 0..2_000 {
        f();
    }
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!("HOT {}", serde_json::json!({"name": name, "us": us}));
}

fn main() {
    let bedrock = BackendConfig {
        schema: SchemaName::AWSBedrock,
        host: Some("bedrock-runtime.us-east-1.amazonaws.com".into()),
        auth: Some(BackendAuth {
            kind: AuthKind::AwsSigV4,
            credential: "aws".into(),
            region: Some("us-east-1".into()),
            project: None,
        }),
        ..Default::default()
    };
    let openai = BackendConfig {
        prefix: Some("/v1".into()),
        ..Default::default()
    };
    let credential = AwsCredential {
        access_key_id: "AKIDBENCH".into(),
        secret_access_key: "bench/secret/key".into(),
        session_token: None,
    };
    let converse = aigw_filter::converse::prepare(&bedrock, CHAT).unwrap();
    time("parse_request", || {
        black_box(parse_request(Endpoint::ChatCompletions, black_box(CHAT)).unwrap());
    });
    time("prepare openai", || {
        black_box(
            aigw_filter::upstream::prepare(Endpoint::ChatCompletions, "", &openai, CHAT).unwrap(),
        );
    });
    time("prepare converse", || {
        black_box(aigw_filter::converse::prepare(&bedrock, black_box(CHAT)).unwrap());
    });
    time("sigv4 sign converse", || {
        black_box(
            aigw_filter::bedrock::sign(&converse, &bedrock, &credential, 1_700_000_000).unwrap(),
        );
    });
    let client_headers: Vec<(String, Vec<u8>)> = [
        (":authority", "127.0.0.1:10000"),
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-bench"),
        ("content-length", "75"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"),
        ("x-ai-eg-model", "bench-model"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    let openai_request =
        aigw_filter::upstream::prepare(Endpoint::ChatCompletions, "", &openai, CHAT).unwrap();
    time("openai headers to write", || {
        let added = [("authorization", "Bearer sk-provider".to_string())];
        let headers = aigw_filter::upstream::attempt_headers(
            &client_headers,
            &["x-aigw-endpoint"],
            &openai_request,
            &added,
        );
        black_box(aigw_filter::upstream::header_edits(
            &client_headers,
            &headers,
        ));
    });
    time("openai answer check", || {
        black_box(aigw_filter::failover::json_is_valid(black_box(
            OPENAI_ANSWER,
        )));
    });
    time("openai answer usage", || {
        let mut body = JsonBody::default();
        body.push(black_box(OPENAI_ANSWER));
        black_box(body.usage());
    });
    time("converse answer to chat", || {
        let mut chat = ChatResponse::new(
            Source::Converse,
            200,
            "application/json",
            false,
            false,
            "bench-bedrock",
            "chatcmpl-x",
            1_700_000_000,
        );
        black_box(chat.push(black_box(CONVERSE_ANSWER), true));
    });
}
