//! Bedrock InvokeModel answers that are not chat, and compressed answers:
//! Titan / Cohere embeddings and CountTokens bodies (and errors) translated
//! whole, and gzip / deflate bodies inflated in arbitrary chunks. Never a
//! panic; every translated body is JSON in the client's shape; a decoded
//! body never exceeds the cap.
#![no_main]
use aigw_filter::bedrock_invoke::{Buffered, Family, Kind};
use aigw_filter::encoding::{decoder_with_limit, DecodeError};
use libfuzzer_sys::fuzz_target;

const FAMILIES: [Family; 5] = [
    Family::TitanV1,
    Family::Titan,
    Family::TitanImage,
    Family::CohereV3,
    Family::Cohere,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let status = if selector & 0x80 == 0 { 200 } else { 400 + u16::from(selector & 0x3f) };
    let kind = if selector & 0x40 == 0 {
        Kind::Embeddings {
            family: Some(FAMILIES[usize::from(selector) % FAMILIES.len()]),
            model: "m".into(),
            base64: selector & 0x20 != 0,
            header_tokens: (selector & 0x10 != 0).then_some(7),
        }
    } else {
        Kind::CountTokens
    };
    let mut t = Buffered::new(kind, status);
    let cut = usize::from(selector & 0x0f) * 3 % body.len().max(1);
    let mut out = t.push(&body[..cut], false);
    assert!(out.is_empty(), "nothing goes out before the end");
    out = t.push(&body[cut..], true);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("the client gets JSON");
    assert!(v.is_object());
    if status != 200 {
        assert!(t.usage().is_none());
    }

    // Compressed bodies: the same bytes as gzip and as deflate.
    let size = usize::from(selector % 17) + 1;
    for encoding in ["gzip", "deflate"] {
        let Ok(Some(mut d)) = decoder_with_limit(encoding, 1 << 20) else {
            panic!("gzip and deflate have decoders")
        };
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        let mut total = 0usize;
        for (i, c) in chunks.iter().enumerate() {
            match d.push(c, i + 1 == chunks.len()) {
                Ok(o) => {
                    total += o.len();
                    assert!(total <= 1 << 20);
                }
                Err(DecodeError::Unsupported(_)) => panic!("not for a known coding"),
                Err(_) => break,
            }
        }
    }
});
