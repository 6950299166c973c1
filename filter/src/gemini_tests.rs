use super::*;
use crate::config::{AuthKind, BackendAuth, SchemaName};

fn backend(model: Option<&str>) -> BackendConfig {
    BackendConfig {
        schema: SchemaName::GCPVertexAI,
        host: Some("us-central1-aiplatform.googleapis.com".into()),
        model_name_override: model.map(str::to_string),
        auth: Some(BackendAuth {
            kind: AuthKind::GcpAccessToken,
            credential: "default/vertex-policy".into(),
            region: Some("us-central1".into()),
            project: Some("my-project".into()),
        }),
        ..Default::default()
    }
}

fn sent(request: Value) -> Value {
    let r = prepare(&backend(None), request.to_string().as_bytes()).unwrap();
    serde_json::from_slice(&r.body.unwrap()).unwrap()
}

fn with(extra: Value) -> Value {
    let mut body =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn paths_and_headers() {
    let r = prepare(
        &backend(None),
        br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert_eq!(
        r.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        r.host.as_deref(),
        Some("us-central1-aiplatform.googleapis.com")
    );
    assert_eq!(
        r.set_headers,
        vec![("content-type".to_string(), "application/json".to_string())]
    );
    assert!(r.remove_headers.contains(&"accept-encoding"));
    let r = prepare(
        &backend(Some("gemini-2.5-pro")),
        br#"{"model":"g","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    assert_eq!(
        r.path,
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        vertex_path("p", "global", "a/b:c", false),
        "/v1/projects/p/locations/global/publishers/google/models/a%2Fb%3Ac:generateContent"
    );
}

#[test]
fn missing_project_or_region_is_a_config_error() {
    let body = br#"{"model":"g","messages":[{"role":"user","content":"hi"}]}"#;
    let mut b = backend(None);
    b.auth.as_mut().unwrap().project = None;
    let e = prepare(&b, body).unwrap_err();
    assert_eq!(e.status, 500);
    assert!(e.message.contains("GCPCredentials"), "{}", e.message);
    b.auth = None;
    assert_eq!(prepare(&b, body).unwrap_err().status, 500);
    let mut b = backend(None);
    b.auth.as_mut().unwrap().region = Some(String::new());
    assert_eq!(prepare(&b, body).unwrap_err().status, 500);
}

#[test]
fn golden_conversation() {
    let request = json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "no jokes"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/PNG;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.JPG?size=2", "detail": "low"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "put", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "done"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "You're welcome."},
            {"role": "user", "content": "bye"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get", "description": "gets",
                "parameters": {"type": "object", "properties": {"q": {"type": "integer"}},
                               "required": ["q"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "put"}}],
        "tool_choice": "required",
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 100,
        "stop": ["END", "STOP"], "n": 2, "seed": 42, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "user": "u1", "parallel_tool_calls": true,
        "response_format": {"type": "json_object"}, "reasoning_effort": "low"
    });
    let r = prepare(&backend(None), request.to_string().as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(r.body.unwrap()).unwrap(),
        concat!(
            r#"{"contents":[{"role":"user","parts":[{"text":"what is this?"},"#,
            r#"{"inlineData":{"mimeType":"image/png","data":"iVBO"}},"#,
            r#"{"fileData":{"mimeType":"image/jpeg","fileUri":"https://x.test/a/cat.JPG?size=2"}}]},"#,
            r#"{"role":"model","parts":[{"text":"Let me look."},{"functionCall":{"name":"get","args":{"q":1}}},"#,
            r#"{"functionCall":{"name":"put","args":{}}}]},"#,
            r#"{"role":"user","parts":[{"functionResponse":{"name":"get","response":{"temp":21}}},"#,
            r#"{"functionResponse":{"name":"put","response":{"output":"done"}}},{"text":"thanks"}]},"#,
            r#"{"role":"model","parts":[{"text":"You're welcome."}]},{"role":"user","parts":[{"text":"bye"}]}],"#,
            r#""systemInstruction":{"parts":[{"text":"be brief"},{"text":"no jokes"}]},"#,
            r#""tools":[{"functionDeclarations":[{"name":"get","description":"gets","parametersJsonSchema":"#,
            r#"{"type":"object","properties":{"q":{"type":"integer"}},"required":["q"],"additionalProperties":false}},"#,
            r#"{"name":"put","parametersJsonSchema":{"type":"object","properties":{}}}]}],"#,
            r#""toolConfig":{"functionCallingConfig":{"mode":"ANY"}},"#,
            r#""generationConfig":{"temperature":0.2,"topP":0.9,"candidateCount":2,"maxOutputTokens":100,"#,
            r#""stopSequences":["END","STOP"],"presencePenalty":0.5,"frequencyPenalty":-0.5,"seed":42,"#,
            r#""responseMimeType":"application/json","thinkingConfig":{"thinkingBudget":1024,"includeThoughts":true}}}"#
        )
    );
}

#[test]
fn tool_choice_table() {
    let tools = json!([{"type": "function", "function": {"name": "f"}},
                       {"type": "function", "function": {"name": "g"}}]);
    for (choice, want) in [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "g"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["g"]}),
        ),
    ] {
        let body = sent(with(json!({"tools": tools, "tool_choice": choice})));
        assert_eq!(
            body["toolConfig"]["functionCallingConfig"], want,
            "{choice}"
        );
    }
    let body = sent(with(json!({"tools": tools})));
    assert!(body.get("toolConfig").is_none());
    let body = sent(with(json!({"tool_choice": "auto"})));
    assert!(body.get("toolConfig").is_none() && body.get("tools").is_none());
}

#[test]
fn json_schema_and_reasoning_table() {
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let body = sent(with(json!({"response_format": {"type": "json_schema",
        "json_schema": {"name": "x", "strict": true, "schema": schema}}})));
    assert_eq!(
        body["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
    );
    let body = sent(with(json!({"response_format": {"type": "text"}})));
    assert!(body.get("generationConfig").is_none());
    for (effort, want) in [
        ("none", json!({"thinkingBudget": 0})),
        (
            "minimal",
            json!({"thinkingBudget": 512, "includeThoughts": true}),
        ),
        (
            "medium",
            json!({"thinkingBudget": 8192, "includeThoughts": true}),
        ),
        (
            "high",
            json!({"thinkingBudget": 24576, "includeThoughts": true}),
        ),
    ] {
        let body = sent(with(json!({"reasoning_effort": effort})));
        assert_eq!(body["generationConfig"]["thinkingConfig"], want, "{effort}");
    }
    let body = sent(with(json!({"logprobs": true, "top_logprobs": 3})));
    assert_eq!(
        body["generationConfig"],
        json!({"responseLogprobs": true, "logprobs": 3})
    );
    let body = sent(with(json!({"logprobs": true, "top_logprobs": 0})));
    assert_eq!(body["generationConfig"], json!({"responseLogprobs": true}));
    let body = sent(with(json!({"logprobs": false})));
    assert!(body.get("generationConfig").is_none());
    // n = 1 asks for nothing.
    let body = sent(with(json!({"n": 1, "max_tokens": 5})));
    assert_eq!(body["generationConfig"], json!({"maxOutputTokens": 5}));
}

#[test]
fn refusals_name_the_parameter() {
    for (extra, param) in [
        (json!({"n": 9}), "n"),
        (json!({"n": 0}), "n"),
        (json!({"seed": 1u64 << 40}), "seed"),
        (json!({"seed": "x"}), "seed"),
        (json!({"presence_penalty": "x"}), "presence_penalty"),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (json!({"response_format": {}}), "response_format"),
        (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
        (json!({"reasoning_effort": 3}), "reasoning_effort"),
        (json!({"parallel_tool_calls": false}), "parallel_tool_calls"),
        (json!({"logprobs": "yes"}), "logprobs"),
        (json!({"top_logprobs": 3}), "top_logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"logit_bias": {"1": 2}}), "logit_bias"),
        (json!({"audio": {}}), "audio"),
        (json!({"stop": ["a", "b", "c", "d", "e", "f"]}), "stop"),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x.test/picture"}}]}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"},
                                {"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0]",
        ),
    ] {
        let e = prepare(&backend(None), with(extra.clone()).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.status, 400, "{extra}: {}", e.message);
        assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
    }
    for body in [&b"nope"[..], b"[]", b"{}", br#"{"model":"m"}"#] {
        assert_eq!(prepare(&backend(None), body).unwrap_err().status, 400);
    }
}

#[test]
fn image_types_from_names() {
    for (url, want) in [
        ("https://x/a.png", Some("image/png")),
        ("https://x/a.jpeg#frag", Some("image/jpeg")),
        ("http://x/a.WEBP?x=1.png", Some("image/webp")),
        ("https://x/doc.pdf", Some("application/pdf")),
        ("https://x/a.gif", Some("image/gif")),
        ("https://x/a.bmp", None),
        ("https://x.png/", None),
        ("https://x/noext", None),
    ] {
        assert_eq!(mime_from_url(url), want, "{url}");
    }
}

#[test]
fn tool_result_names_come_from_the_nearest_call() {
    // The same id used in two turns: each result gets its own call's name.
    let body = sent(json!({"model": "g", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "[1,2]"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "3"}
    ]}));
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "first", "response": {"output": "[1,2]"}})
    );
    assert_eq!(
        body["contents"][4]["parts"][0]["functionResponse"],
        json!({"name": "second", "response": {"output": "3"}})
    );
}

#[test]
fn thought_signatures_in_tool_call_ids_go_back_to_gemini() {
    let body = sent(json!({"model": "g", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_0123~ts~CiQB+/x=", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_4567", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "x~ts~not base64!", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0123~ts~CiQB+/x=", "content": "1"},
        {"role": "tool", "tool_call_id": "call_4567", "content": "2"},
        {"role": "tool", "tool_call_id": "x~ts~not base64!", "content": "3"}
    ]}));
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0],
        json!({"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "CiQB+/x="})
    );
    assert_eq!(parts[1], json!({"functionCall": {"name": "f", "args": {}}}));
    assert_eq!(parts[2], json!({"functionCall": {"name": "f", "args": {}}}));
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "f"
    );
}
