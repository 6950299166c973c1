//! Provider response streams cut at arbitrary points: SSE framing, the usage
//! chunk filter and JSON usage reading must never panic, and when nothing is
//! dropped the client gets exactly the bytes the provider sent, plus an
//! error event if the stream ended before it was complete.
#![no_main]
use aigw_filter::error::{ErrorShape, GatewayError};
use aigw_filter::response::{ChunkOutput, JsonBody, OpenAiStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let size = usize::from(cut).max(1);
    for wants_usage in [false, true] {
        let mut stream = OpenAiStream::new(wants_usage);
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            match stream.push(chunk, i + 1 == chunks.len()) {
                ChunkOutput::Unchanged => out.extend_from_slice(chunk),
                ChunkOutput::Replace(bytes) => out.extend(bytes),
            }
        }
        if wants_usage && !chunks.is_empty() {
            let incomplete = GatewayError::stream_incomplete().stream_event(ErrorShape::OpenAi);
            let tail = out.strip_prefix(body).expect("a stream the client asked usage for must pass unchanged");
            assert!(tail.is_empty() || tail == incomplete.as_slice(), "only the incomplete-stream event may follow");
        }
        let _ = stream.usage();
    }
    let mut json = JsonBody::default();
    json.push(body);
    let _ = json.usage();
});
