//! What providers send back besides the bodies the translators read:
//! compressed answers (inflated within a limit, and exactly what was
//! compressed, however the bytes are cut), the held answer's checks, the
//! headers kept for a retry, `retry-after` and the stored cool-down. Never a
//! panic.
#![no_main]
use aigw_filter::encoding::{decoder_with_limit, DecodeError};
use aigw_filter::failover::{
    decode_headers, encode_headers, json_is_valid, retry_after_seconds, sse_stream_start, Cooldown,
    MAX_COOLDOWN_SECONDS,
};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 16;
const CODINGS: [&str; 4] = ["gzip", "deflate", "x-gzip, identity", "br"];

/// Decodes `body` cut into pieces of `size` bytes.
fn decode(coding: &str, body: &[u8], size: usize) -> Result<Vec<u8>, DecodeError> {
    let Some(mut decoder) = decoder_with_limit(coding, LIMIT)? else {
        return Ok(body.to_vec());
    };
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    if chunks.is_empty() {
        return decoder.push(&[], true);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(decoder.push(chunk, i + 1 == chunks.len())?);
        assert!(out.len() <= LIMIT, "decoded past the limit");
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let size = usize::from(selector >> 2).max(1);
    let coding = CODINGS[usize::from(selector & 3)];
    // Arbitrary bytes as a compressed answer.
    let _ = decode(coding, body, size);
    // A real compressed answer comes back exactly, however it is cut.
    if body.len() <= LIMIT {
        let zlib = miniz_oxide::deflate::compress_to_vec_zlib(body, 1);
        assert_eq!(decode("deflate", &zlib, size).expect("zlib answer"), body);
        let raw = miniz_oxide::deflate::compress_to_vec(body, 1);
        assert_eq!(decode("deflate", &raw, size).expect("raw deflate answer"), body);
    }
    let _ = json_is_valid(body);
    let _ = sse_stream_start(body);
    if let Some(headers) = decode_headers(body) {
        assert_eq!(decode_headers(&encode_headers(&headers)), Some(headers));
    }
    let text = String::from_utf8_lossy(body);
    if let Some(wait) = retry_after_seconds(&text) {
        assert!((1..=MAX_COOLDOWN_SECONDS).contains(&wait));
    }
    if let Some(cooldown) = Cooldown::parse(body) {
        assert_eq!(Cooldown::parse(&cooldown.encode()), Some(cooldown));
    }
});
