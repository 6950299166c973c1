//! OpenAI chat clients in front of Bedrock Converse: ConverseStream
//! event-stream and Converse JSON bodies translated into OpenAI shapes, cut
//! at arbitrary points. Never a panic, and every event that goes out is
//! `data: <JSON>` or `data: [DONE]`.
#![no_main]
use aigw_filter::converse::{completion, StreamToChunks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let size = usize::from(cut).max(1);
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    let mut stream = StreamToChunks::new("id", "m", 1, true);
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(stream.push(chunk, i + 1 == chunks.len()));
    }
    let text = std::str::from_utf8(&out).expect("output is UTF-8");
    for event in text.split_terminator("\n\n") {
        let data = event.strip_prefix("data: ").expect("one data line per event");
        assert!(data == "[DONE]" || serde_json::from_str::<serde_json::Value>(data).is_ok());
    }
    let _ = stream.usage();
    if let Some((out, _)) = completion(body, "id", "m", 1) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }
});
