use super::*;

#[test]
fn golden_completion() {
    let body = br#"{"candidates":[{"content":{"role":"model","parts":[
        {"text":"Thinking about it","thought":true},
        {"text":"Checking "},{"text":"the weather."},
        {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
        {"functionCall":{"id":"fc-own","name":"noop"}}]},
        "finishReason":"STOP","avgLogprobs":-0.1}],
        "usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":12,"thoughtsTokenCount":5,
        "totalTokenCount":47,"cachedContentTokenCount":8,"trafficType":"ON_DEMAND"},
        "modelVersion":"gemini-2.5-flash","createTime":"2025-01-01T00:00:00Z","responseId":"abc123"}"#;
    let (out, usage) = completion(body, "fallback", "gemini", 9).unwrap();
    let want_id = call_id(
        &json!({"name":"get_weather","args":{"city":"Paris"}}),
        "abc123",
        0,
        0,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            concat!(
                r#"{{"id":"chatcmpl-abc123","object":"chat.completion","created":9,"model":"gemini","choices":[{{"index":0,"#,
                r#""message":{{"role":"assistant","content":"Checking the weather.","reasoning_content":"Thinking about it","#,
                r#""tool_calls":[{{"id":"{}","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}},"#,
                r#"{{"id":"fc-own","type":"function","function":{{"name":"noop","arguments":"{{}}"}}}}]}},"#,
                r#""logprobs":null,"finish_reason":"tool_calls"}}],"#,
                r#""usage":{{"prompt_tokens":30,"completion_tokens":17,"total_tokens":47,"prompt_tokens_details":{{"cached_tokens":8}},"completion_tokens_details":{{"reasoning_tokens":5}}}}}}"#
            ),
            format!("{want_id}~ts~c2ln")
        )
    );
    assert!(want_id.starts_with("call_") && want_id.len() == 21);
    assert_eq!(
        usage,
        Some(Usage {
            input: 30,
            output: 17,
            total: 47,
            cached_input: 8,
            cache_creation_input: 0,
            reasoning: 5
        })
    );
}

#[test]
fn several_candidates_and_no_usage() {
    let body =
        br#"{"candidates":[{"index":0,"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"},
        {"index":1,"content":{"parts":[{"text":"b"}]},"finishReason":"MAX_TOKENS"}]}"#;
    let (out, usage) = completion(body, "fallback", "g", 1).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["id"], "fallback");
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "b");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
    assert!(v.get("usage").is_none() && usage.is_none());
}

#[test]
fn blocked_prompt_is_a_content_filter_refusal() {
    let body =
        br#"{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"no"},
        "usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#;
    let (out, usage) = completion(body, "i", "g", 1).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        v["choices"][0]["message"]["refusal"],
        "Gemini blocked the prompt (PROHIBITED_CONTENT): no"
    );
    assert_eq!(usage.unwrap().total, 7);
    // A candidate cut by safety: content_filter, no text.
    let body = br#"{"candidates":[{"finishReason":"SAFETY","safetyRatings":[]}]}"#;
    let v: Value = serde_json::from_slice(&completion(body, "i", "g", 1).unwrap().0).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn finish_reasons() {
    for (reason, calls, want) in [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("MAX_TOKENS", true, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("BLOCKLIST", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("SPII", false, "content_filter"),
        ("OTHER", false, "stop"),
        ("MALFORMED_FUNCTION_CALL", false, "stop"),
        ("FINISH_REASON_UNSPECIFIED", false, "stop"),
    ] {
        assert_eq!(finish_reason(reason, calls), want, "{reason} {calls}");
    }
}

#[test]
fn malformed_bodies_are_none_not_panics() {
    for body in [&b"["[..], b"[]", b"7", b"\"x\"", b"", b"{\"candidates\":7}"] {
        if let Some((out, _)) = completion(body, "i", "g", 1) {
            assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }
    }
    assert!(completion(b"[", "i", "g", 1).is_none());
    assert!(completion(br#"{"error":{"code":500,"message":"x"}}"#, "i", "g", 1).is_none());
    let odd = br#"{"candidates":[{"content":{"parts":[{"text":7},{"functionCall":"x"},{"functionCall":{"args":[1]}}]},"finishReason":7}],"usageMetadata":{"promptTokenCount":-1}}"#;
    let (out, _) = completion(odd, "i", "g", 1).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[test]
fn google_errors_become_openai_errors() {
    for (status, body, kind, code) in [
        (
            400,
            &br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#[..],
            "invalid_request_error",
            json!("INVALID_ARGUMENT"),
        ),
        (
            429,
            br#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}]"#,
            "rate_limit_exceeded",
            json!("RESOURCE_EXHAUSTED"),
        ),
        (
            401,
            br#"{"error":{"code":401,"message":"bad token","status":"UNAUTHENTICATED"}}"#,
            "authentication_error",
            json!("UNAUTHENTICATED"),
        ),
        (
            403,
            br#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#,
            "permission_error",
            json!("PERMISSION_DENIED"),
        ),
        (
            404,
            br#"{"error":{"code":404,"message":"no model","status":"NOT_FOUND"}}"#,
            "invalid_request_error",
            json!("NOT_FOUND"),
        ),
        (503, b"<html>unavailable</html>", "api_error", Value::Null),
    ] {
        let v: Value = serde_json::from_slice(&error_body(status, body)).unwrap();
        assert_eq!(v["error"]["type"], kind, "{status}");
        assert_eq!(v["error"]["code"], code, "{status}");
        assert!(v["error"]["message"].is_string());
        assert_eq!(v["error"]["param"], Value::Null);
    }
    let v: Value = serde_json::from_slice(&error_body(
        400,
        br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#,
    ))
    .unwrap();
    assert_eq!(v["error"]["message"], "Invalid JSON payload");
    let v: Value = serde_json::from_slice(&error_body(502, b"")).unwrap();
    assert_eq!(v["error"]["message"], "Vertex AI answered HTTP 502");
    let own = br#"{"error":{"message":"x","type":"upstream_error","param":null,"code":"upstream_response_error"}}"#;
    assert_eq!(error_body(502, own), own.to_vec());
}

/// A stream as Vertex AI sends it (CRLF framing), thought, text, a function
/// call, and cumulative usage on every event.
pub(crate) fn recorded_stream() -> Vec<u8> {
    let events = [
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hmm","thought":true}]}}],"usageMetadata":{"promptTokenCount":21,"totalTokenCount":21,"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.5-flash","createTime":"2025-06-01T00:00:00.000000Z","responseId":"rid-1"}"#,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]}}],"usageMetadata":{"promptTokenCount":21,"candidatesTokenCount":1,"thoughtsTokenCount":3,"totalTokenCount":25},"modelVersion":"gemini-2.5-flash","responseId":"rid-1"}"#,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":" wörld"}]}}],"modelVersion":"gemini-2.5-flash","responseId":"rid-1"}"#,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":21,"candidatesTokenCount":6,"thoughtsTokenCount":3,"totalTokenCount":30,"cachedContentTokenCount":4},"modelVersion":"gemini-2.5-flash","responseId":"rid-1"}"#,
    ];
    events
        .iter()
        .flat_map(|e| format!("data: {e}\r\n\r\n").into_bytes())
        .collect()
}

fn want_stream(include_usage: bool) -> String {
    let id = call_id(
        &json!({"name":"get_weather","args":{"city":"Paris"}}),
        "rid-1",
        0,
        0,
    ) + "~ts~c2ln";
    let prefix = r#"data: {"id":"chatcmpl-rid-1","object":"chat.completion.chunk","created":3,"model":"gem","choices":[{"index":0,"delta":"#;
    let deltas = [
        r#"{"reasoning_content":"Hmm","role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#.to_string(),
        r#"{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#.to_string(),
        r#"{"content":" wörld"},"logprobs":null,"finish_reason":null}]}"#.to_string(),
        format!(
            r#"{{"tool_calls":[{{"id":"{id}","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}},"index":0}}]}},"logprobs":null,"finish_reason":null}}]}}"#
        ),
        r#"{},"logprobs":null,"finish_reason":"tool_calls"}]}"#.to_string(),
    ];
    let mut s: String = deltas.iter().map(|d| format!("{prefix}{d}\n\n")).collect();
    if include_usage {
        s.push_str(r#"data: {"id":"chatcmpl-rid-1","object":"chat.completion.chunk","created":3,"model":"gem","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}"#);
        s.push_str("\n\n");
    }
    s.push_str("data: [DONE]\n\n");
    s
}

fn run(bytes: &[u8], cuts: &[usize], include_usage: bool) -> (String, Option<Usage>) {
    let mut t = StreamToChunks::new("fallback", "gem", 3, include_usage);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        out.extend(t.push(&bytes[start..cut], false));
        start = cut;
    }
    out.extend(t.push(&bytes[start..], true));
    (String::from_utf8(out).unwrap(), t.usage())
}

#[test]
fn golden_stream_at_every_split() {
    let bytes = recorded_stream();
    for include_usage in [true, false] {
        let want = want_stream(include_usage);
        // Every single split point, and every chunk size.
        for cut in 0..=bytes.len() {
            let (got, usage) = run(&bytes, &[cut], include_usage);
            assert_eq!(got, want, "split at {cut}");
            assert_eq!(usage.unwrap().total, 30);
        }
        for size in 1..=bytes.len() {
            let cuts: Vec<usize> = (size..bytes.len()).step_by(size).collect();
            let (got, _) = run(&bytes, &cuts, include_usage);
            assert_eq!(got, want, "size {size}");
        }
    }
    // Every pair of split points on a shorter stream.
    let short: Vec<u8> = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":1,\"candidatesTokenCount\":1,\"totalTokenCount\":2}}\n\n".to_vec();
    let (want, _) = run(&short, &[], true);
    assert!(want.contains(r#""content":"hi""#) && want.ends_with("data: [DONE]\n\n"));
    for a in 0..=short.len() {
        for b in a..=short.len() {
            assert_eq!(run(&short, &[a, b], true).0, want, "split at {a},{b}");
        }
    }
}

#[test]
fn stream_with_several_candidates() {
    let events = [
        r#"{"candidates":[{"index":0,"content":{"parts":[{"text":"a"}]}},{"index":1,"content":{"parts":[{"text":"b"}]}}]}"#,
        r#"{"candidates":[{"index":1,"content":{"parts":[{"functionCall":{"name":"f"}}]},"finishReason":"STOP"},{"index":0,"finishReason":"MAX_TOKENS"}]}"#,
    ];
    let bytes: Vec<u8> = events
        .iter()
        .flat_map(|e| format!("data: {e}\n\n").into_bytes())
        .collect();
    let (out, usage) = run(&bytes, &[], false);
    assert!(usage.is_none());
    let chunks: Vec<Value> = out
        .split_terminator("\n\n")
        .filter(|e| *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let of = |i: u64| -> Vec<&Value> {
        chunks
            .iter()
            .map(|c| &c["choices"][0])
            .filter(|c| c["index"] == i)
            .collect()
    };
    assert_eq!(
        of(0)[0]["delta"],
        json!({"content": "a", "role": "assistant"})
    );
    assert_eq!(of(0)[1]["finish_reason"], "length");
    assert_eq!(
        of(1)[1]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(of(1)[2]["finish_reason"], "tool_calls");
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn stream_errors_and_truncation() {
    // An error event mid-stream ends it with an OpenAI error event.
    let bytes = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\ndata: {\"error\":{\"code\":429,\"message\":\"Resource exhausted\",\"status\":\"RESOURCE_EXHAUSTED\"}}\r\n\r\ndata: {\"candidates\":[]}\r\n\r\n";
    let (out, _) = run(bytes, &[], true);
    assert!(
        out.ends_with("data: {\"error\":{\"message\":\"Resource exhausted\",\"type\":\"rate_limit_exceeded\",\"param\":null,\"code\":null}}\n\n"),
        "{out}"
    );
    assert!(!out.contains("[DONE]"));
    // Cut before the finish reason, or inside an event.
    let all = recorded_stream();
    let (out, _) = run(&all[..all.len() - 10], &[], false);
    assert!(out.contains("ended in the middle of an event"), "{out}");
    let first_event = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let (out, _) = run(&all[..first_event], &[], false);
    assert!(
        out.contains("ended before the answer was complete"),
        "{out}"
    );
    let (out, _) = run(b"", &[], false);
    assert!(
        out.contains("ended before the answer was complete"),
        "{out}"
    );
    // Not JSON, not an object.
    assert!(run(b"data: {nope\n\n", &[], false)
        .0
        .starts_with("data: {\"error\""));
    assert!(run(b"data: [1]\n\n", &[], false)
        .0
        .starts_with("data: {\"error\""));
    // A blocked prompt: one refusal chunk, then the end.
    let (out, usage) = run(
        b"data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"},\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4}}\n\n",
        &[],
        true,
    );
    assert!(
        out.contains(r#""refusal":"Gemini blocked the prompt (SAFETY)""#),
        "{out}"
    );
    assert!(out.contains(r#""finish_reason":"content_filter""#));
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(usage.unwrap().input, 4);
    // Nothing after the end.
    let mut t = StreamToChunks::new("i", "m", 1, false);
    let _ = t.push(&recorded_stream(), true);
    assert!(t.push(b"data: {}\n\n", true).is_empty());
}

#[test]
fn stream_choices_are_bounded() {
    let candidates: Vec<Value> = (0..20)
        .map(|i| json!({"index": i, "content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}))
        .collect();
    let event = format!("data: {}\n\n", json!({ "candidates": candidates }));
    let (out, _) = run(event.as_bytes(), &[], false);
    assert_eq!(out.matches(r#""finish_reason":"stop""#).count(), 8);
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn log_probabilities() {
    let lp = r#""logprobsResult":{"topCandidates":[{"candidates":[{"token":"Hi","logProbability":-0.1},{"token":"Hey","logProbability":-2.5}]},
        {"candidates":[{"token":"!","logProbability":-0.3}]}],
        "chosenCandidates":[{"token":"Hi","logProbability":-0.1},{"token":"!","logProbability":-0.3}]}"#;
    let body = format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"Hi!"}}]}},"finishReason":"STOP",{lp}}}]}}"#
    );
    let (out, _) = completion(body.as_bytes(), "i", "g", 1).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let want = json!({"content": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
            {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]}]},
        {"token": "!", "logprob": -0.3, "bytes": [33], "top_logprobs": [
            {"token": "!", "logprob": -0.3, "bytes": [33]}]}], "refusal": null});
    assert_eq!(v["choices"][0]["logprobs"], want);
    // In a stream: with the candidate's first delta of the event only.
    let lp = lp.replace('\n', "");
    let stream = format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"Hi\"}},{{\"text\":\"!\"}}]}},\"finishReason\":\"STOP\",{lp}}}]}}\n\n"
    );
    let (out, _) = run(stream.as_bytes(), &[], false);
    let chunks: Vec<Value> = out
        .split_terminator("\n\n")
        .filter(|e| *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[0]["choices"][0]["logprobs"], want);
    assert_eq!(chunks[1]["choices"][0]["logprobs"], Value::Null);
    assert_eq!(chunks[2]["choices"][0]["logprobs"], Value::Null);
    // Odd shapes give what can be read.
    let odd = br#"{"candidates":[{"logprobsResult":{"chosenCandidates":[7,{"token":3}],"topCandidates":"x"}}]}"#;
    let v: Value = serde_json::from_slice(&completion(odd, "i", "g", 1).unwrap().0).unwrap();
    assert_eq!(v["choices"][0]["logprobs"]["content"][1]["token"], "");
}
