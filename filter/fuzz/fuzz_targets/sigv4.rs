//! SigV4 canonicalization of arbitrary paths, queries and header values.
#![no_main]
use aigw_filter::sigv4::{canonical_query_string, canonical_uri, uri_encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (normalize, double) in [(false, false), (true, false), (true, true), (false, true)] {
        let _ = canonical_uri(&text, normalize, double);
    }
    let _ = canonical_query_string(&text);
    let _ = uri_encode(data, true);
});
