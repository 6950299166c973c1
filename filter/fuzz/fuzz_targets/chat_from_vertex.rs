//! OpenAI chat clients in front of Gemini on Vertex AI: streamGenerateContent
//! SSE, generateContent JSON and Google error bodies translated into OpenAI
//! shapes, cut at arbitrary points; the same bytes as an OpenAI request for
//! a Vertex backend. Never a panic; every event that goes out is
//! `data: <JSON>` or `data: [DONE]`; a refused request is a 4xx.
#![no_main]
use aigw_filter::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};
use aigw_filter::gemini::prepare;
use aigw_filter::gemini_response::{completion, error_body, StreamToChunks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let size = usize::from(cut).max(1);
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    let mut stream = StreamToChunks::new("id", "m", 1, cut & 1 == 1);
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(stream.push(chunk, i + 1 == chunks.len()));
    }
    let text = std::str::from_utf8(&out).expect("output is UTF-8");
    for event in text.split_terminator("\n\n") {
        let data = event.strip_prefix("data: ").expect("one data line per event");
        assert!(!data.contains('\n'), "one line per event");
        assert!(data == "[DONE]" || serde_json::from_str::<serde_json::Value>(data).is_ok());
    }
    let _ = stream.usage();
    if let Some((out, _)) = completion(body, "id", "m", 1) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }
    let shaped: serde_json::Value =
        serde_json::from_slice(&error_body(400, body)).expect("error bodies are JSON");
    assert!(shaped["error"].is_object());
    let backend = BackendConfig {
        schema: SchemaName::GCPVertexAI,
        auth: Some(BackendAuth {
            kind: AuthKind::GcpAccessToken,
            credential: "c".into(),
            region: Some("us-central1".into()),
            project: Some("p".into()),
        }),
        ..Default::default()
    };
    match prepare(&backend, body) {
        Ok(r) => {
            assert!(r.path.starts_with("/v1/projects/p/locations/us-central1/publishers/google/models/"));
            assert!(!r.path.contains(['\r', '\n', ' ']));
            assert!(serde_json::from_slice::<serde_json::Value>(&r.body.unwrap()).is_ok());
        }
        Err(e) => assert!((400..500).contains(&e.status), "{e}"),
    }
});
