//! The credential service's answer: a bad one is an error, never a panic,
//! and the error never quotes what was sent (it may hold a secret).
#![no_main]
use aigw_filter::credentials::CredentialCache;
use libfuzzer_sys::fuzz_target;

/// The only shape a load error may take:
/// `credential service answer is not usable (<Kind> error at line <n> column <m>)`.
fn is_fixed_shape(message: &str) -> bool {
    let Some(inner) = message
        .strip_prefix("credential service answer is not usable (")
        .and_then(|m| m.strip_suffix(')'))
    else {
        return false;
    };
    let words: Vec<&str> = inner.split(' ').collect();
    matches!(
        words.as_slice(),
        [kind, "error", "at", "line", line, "column", column]
            if kind.chars().all(|c| c.is_ascii_alphabetic())
                && line.chars().all(|c| c.is_ascii_digit())
                && column.chars().all(|c| c.is_ascii_digit())
    )
}

fuzz_target!(|data: &[u8]| {
    let mut cache = CredentialCache::default();
    if let Err(message) = cache.load(data, 0) {
        assert!(is_fixed_shape(&message), "load error quotes its input: {message:?}");
    }
});
