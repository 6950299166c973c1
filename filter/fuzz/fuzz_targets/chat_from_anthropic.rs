//! OpenAI chat clients in front of Claude: Anthropic SSE, Bedrock
//! InvokeModel event-stream and Messages JSON bodies translated into OpenAI
//! shapes, cut at arbitrary points. Never a panic, and every event that
//! goes out is `data: <JSON>` or `data: [DONE]`.
#![no_main]
use aigw_filter::openai_to_anthropic::{completion, EventStreamToChunks, SseToChunks};
use libfuzzer_sys::fuzz_target;

fn check(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    for event in text.split_terminator("\n\n") {
        let data = event.strip_prefix("data: ").expect("one data line per event");
        assert!(data == "[DONE]" || serde_json::from_str::<serde_json::Value>(data).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let size = usize::from(cut).max(1);
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    for include_usage in [false, true] {
        let mut sse = SseToChunks::new("m", 1, include_usage);
        let mut es = EventStreamToChunks::new("m", 1, include_usage);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            a.extend(sse.push(chunk, last));
            b.extend(es.push(chunk, last));
        }
        check(&a);
        check(&b);
        let _ = (sse.usage(), es.usage());
    }
    if let Some((out, _)) = completion(body, "m", 1) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }
});
