//! A tiny built-in OpenAI-compatible model, so `aigw run` with nothing
//! configured still answers a first curl. It echoes the last user message.

use axum::body::Bytes;
use axum::extract::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const DEMO_MODEL: &str = "aigw-demo";

pub fn router() -> axum::Router {
    axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat))
}

fn last_user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

// Any content type is accepted, as OpenAI's own API does.
async fn chat(body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let error = json!({"error": {"message": "invalid JSON", "type": "invalid_request_error", "param": null, "code": null}});
        return (axum::http::StatusCode::BAD_REQUEST, Json(error)).into_response();
    };
    let text = format!(
        "Hello from {DEMO_MODEL}! You said: {}",
        last_user_text(&request)
    );
    let prompt_tokens = last_user_text(&request).split_whitespace().count() as u64 + 1;
    let completion_tokens = text.split_whitespace().count() as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let model = request["model"].as_str().unwrap_or(DEMO_MODEL).to_string();
    if request["stream"] == json!(true) {
        let mut body = String::new();
        for (i, word) in text.split_inclusive(' ').enumerate() {
            let delta = if i == 0 {
                json!({"role": "assistant", "content": word})
            } else {
                json!({"content": word})
            };
            let chunk = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
            body.push_str(&format!("data: {chunk}\n\n"));
        }
        let last = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        body.push_str(&format!("data: {last}\n\n"));
        if request["stream_options"]["include_usage"] == json!(true) {
            let u = json!({"id": "chatcmpl-demo", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [], "usage": usage});
            body.push_str(&format!("data: {u}\n\n"));
        }
        body.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], body).into_response();
    }
    Json(json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    }))
    .into_response()
}
