//! The credential service's answer: a bad one is an error, never a panic,
//! and never an error message that quotes what was sent.
#![no_main]
use aigw_filter::credentials::CredentialCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cache = CredentialCache::default();
    if let Err(message) = cache.load(data, 0) {
        if let Ok(text) = std::str::from_utf8(data) {
            for secret in text.split('"').filter(|s| s.len() >= 12) {
                assert!(!message.contains(secret), "load error quotes its input");
            }
        }
    }
});
