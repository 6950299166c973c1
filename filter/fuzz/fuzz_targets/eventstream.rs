//! AWS event-stream frames in arbitrary chunks: decode without panicking,
//! and the same messages whatever the split.
#![no_main]
use aigw_filter::eventstream::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let mut whole = Decoder::new();
    let want = whole.push(body);
    let mut split = Decoder::new();
    let at = usize::from(cut).min(body.len());
    let first = split.push(&body[..at]);
    let second = split.push(&body[at..]);
    if let (Ok(want), Ok(mut got), Ok(rest)) = (want, first, second) {
        got.extend(rest);
        assert_eq!(got, want);
    }
});
