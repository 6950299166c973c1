//! Compressed provider answers (`content-encoding: gzip` / `deflate`).
//!
//! The gateway prevents them first: the upstream role sends every attempt
//! with `accept-encoding: identity` (the client's own value never reaches a
//! provider), because the gateway reads every answer it forwards (usage of
//! OpenAI JSON and SSE, every translator, error re-shaping) and must hand
//! the client a body labelled for what it is. A provider that compresses
//! anyway (some do on errors, or ignore the header) is decoded here, in the
//! upstream role, chunk by chunk as the body arrives: `content-encoding` and
//! `content-length` are removed and the router role and the client only
//! ever see identity bytes. `gzip`, `x-gzip` and `deflate` (zlib, or raw
//! deflate as some servers send it) are inflated with `miniz_oxide` (pure
//! Rust); the decoded size is capped ([`MAX_DECODED_BYTES`]). Other codings
//! (`br`, `zstd`, `compress`, stacked codings) and corrupt, truncated or
//! oversized bodies become a clear 502 in the client's API shape.

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Largest decoded answer (whole body or whole stream) the gateway accepts.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// Why a compressed body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Unsupported(String),
    Corrupt(&'static str),
    Truncated,
    TooLarge,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unsupported(c) => write!(
                f,
                "the model provider answered with content-encoding {c:?}, which the gateway cannot decode"
            ),
            DecodeError::Corrupt(why) => {
                write!(f, "the model provider's compressed answer is corrupt ({why})")
            }
            DecodeError::Truncated => {
                write!(f, "the model provider's compressed answer ended early")
            }
            DecodeError::TooLarge => write!(
                f,
                "the model provider's answer is larger than the gateway's limit of {MAX_DECODED_BYTES} bytes once decompressed"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    /// HTTP `deflate`: zlib, or raw deflate; told apart by the first bytes.
    Deflate,
}

#[derive(Debug)]
enum Stage {
    /// Collecting a gzip member header (bytes so far).
    GzipHeader(Vec<u8>),
    /// Collecting the first two bytes of a `deflate` body.
    DeflateStart(Vec<u8>),
    Inflating,
    /// Collecting a gzip trailer (CRC32, size).
    GzipTrailer(Vec<u8>),
    /// A complete stream; only another gzip member may follow.
    Done,
}

/// Decodes one response body as it arrives.
pub struct Decoder {
    coding: Coding,
    stage: Stage,
    state: Box<InflateState>,
    crc: crc32fast::Hasher,
    member_out: u64,
    total_out: usize,
    limit: usize,
    seen_input: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("coding", &self.coding)
            .field("stage", &self.stage)
            .field("total_out", &self.total_out)
            .finish()
    }
}

/// The decoder a `content-encoding` value calls for: `Ok(None)` for none
/// (`identity` or empty).
pub fn decoder_for(content_encoding: &str) -> Result<Option<Decoder>, DecodeError> {
    decoder_with_limit(content_encoding, MAX_DECODED_BYTES)
}

pub fn decoder_with_limit(
    content_encoding: &str,
    limit: usize,
) -> Result<Option<Decoder>, DecodeError> {
    let codings: Vec<String> = content_encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    let coding = match codings.as_slice() {
        [] => return Ok(None),
        [one] if one == "gzip" || one == "x-gzip" => Coding::Gzip,
        [one] if one == "deflate" => Coding::Deflate,
        _ => {
            let shown: String = content_encoding
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect();
            return Err(DecodeError::Unsupported(shown));
        }
    };
    let stage = match coding {
        Coding::Gzip => Stage::GzipHeader(Vec::new()),
        Coding::Deflate => Stage::DeflateStart(Vec::new()),
    };
    Ok(Some(Decoder {
        coding,
        stage,
        state: InflateState::new_boxed(DataFormat::Raw),
        crc: crc32fast::Hasher::new(),
        member_out: 0,
        total_out: 0,
        limit,
        seen_input: false,
    }))
}

/// The length of a complete gzip member header at the start of `h`,
/// `Ok(None)` if more bytes are needed.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, DecodeError> {
    if h.len() < 10 {
        if h.first().is_some_and(|b| *b != 0x1f) || h.get(1).is_some_and(|b| *b != 0x8b) {
            return Err(DecodeError::Corrupt("not a gzip header"));
        }
        return Ok(None);
    }
    if h[0] != 0x1f || h[1] != 0x8b {
        return Err(DecodeError::Corrupt("not a gzip header"));
    }
    if h[2] != 8 {
        return Err(DecodeError::Corrupt("unknown gzip compression method"));
    }
    let flags = h[3];
    if flags & 0xe0 != 0 {
        return Err(DecodeError::Corrupt("reserved gzip flags set"));
    }
    let mut pos = 10usize;
    if flags & 0x04 != 0 {
        let Some(len) = h.get(pos..pos + 2) else {
            return Ok(None);
        };
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
        if h.len() < pos {
            return Ok(None);
        }
    }
    for flag in [0x08u8, 0x10] {
        if flags & flag != 0 {
            match h
                .get(pos..)
                .and_then(|rest| rest.iter().position(|b| *b == 0))
            {
                Some(end) => pos += end + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        pos += 2;
        if h.len() < pos {
            return Ok(None);
        }
    }
    Ok(Some(pos))
}

/// Gzip headers larger than this (huge FEXTRA or names) are refused. The
/// header is parsed again with each chunk until it is complete, so this
/// also bounds that work (an HTTP server's header is 10 bytes, or a file
/// name more).
const MAX_GZIP_HEADER: usize = 4 << 10;

impl Decoder {
    /// The decoded bytes for this chunk of the encoded body. With
    /// `end_of_stream`, the body must be complete.
    pub fn push(&mut self, input: &[u8], end_of_stream: bool) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        let mut rest = input;
        if !rest.is_empty() {
            self.seen_input = true;
        }
        loop {
            match &mut self.stage {
                Stage::GzipHeader(h) => {
                    if rest.is_empty() {
                        break;
                    }
                    let before = h.len();
                    let take = rest.len().min(MAX_GZIP_HEADER.saturating_sub(before));
                    if take == 0 {
                        return Err(DecodeError::Corrupt("gzip header too large"));
                    }
                    h.extend_from_slice(&rest[..take]);
                    match gzip_header_len(h)? {
                        Some(len) => {
                            // Bytes past the header belong to the deflate data.
                            let used = len.saturating_sub(before);
                            rest = &rest[used.min(rest.len())..];
                            self.state = InflateState::new_boxed(DataFormat::Raw);
                            self.crc = crc32fast::Hasher::new();
                            self.member_out = 0;
                            self.stage = Stage::Inflating;
                        }
                        None => rest = &rest[take..],
                    }
                }
                Stage::DeflateStart(h) => {
                    if rest.is_empty() {
                        break;
                    }
                    let need = 2 - h.len();
                    let take = need.min(rest.len());
                    h.extend_from_slice(&rest[..take]);
                    if h.len() < 2 {
                        rest = &rest[take..];
                        continue;
                    }
                    let zlib = h[0] & 0x0f == 8
                        && h[0] >> 4 <= 7
                        && (u16::from(h[0]) << 8 | u16::from(h[1])) % 31 == 0;
                    let format = if zlib {
                        DataFormat::Zlib
                    } else {
                        DataFormat::Raw
                    };
                    let start = std::mem::take(h);
                    self.state = InflateState::new_boxed(format);
                    self.stage = Stage::Inflating;
                    self.inflate(&start, &mut out)?;
                    rest = &rest[take..];
                }
                Stage::Inflating => {
                    let used = self.inflate(rest, &mut out)?;
                    rest = &rest[used..];
                    if matches!(self.stage, Stage::Inflating) {
                        break;
                    }
                }
                Stage::GzipTrailer(t) => {
                    if rest.is_empty() {
                        break;
                    }
                    let take = (8 - t.len()).min(rest.len());
                    t.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if t.len() == 8 {
                        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        let hasher = std::mem::take(&mut self.crc);
                        if hasher.finalize() != crc {
                            return Err(DecodeError::Corrupt("gzip CRC mismatch"));
                        }
                        if size != self.member_out as u32 {
                            return Err(DecodeError::Corrupt("gzip size mismatch"));
                        }
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done => {
                    if rest.is_empty() {
                        break;
                    }
                    if self.coding == Coding::Gzip {
                        // Another member follows (concatenated gzip).
                        self.stage = Stage::GzipHeader(Vec::new());
                        continue;
                    }
                    return Err(DecodeError::Corrupt("data after the end of the stream"));
                }
            }
        }
        if end_of_stream && self.seen_input && !matches!(self.stage, Stage::Done) {
            return Err(DecodeError::Truncated);
        }
        Ok(out)
    }

    /// Inflates from `input` into `out`; returns the bytes consumed. Moves
    /// to the trailer (gzip) or Done when the deflate stream ends.
    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        // Decoded straight into `out` in steps sized after the input: a
        // stream's chunks are mostly small, and a 32 KiB scratch buffer
        // allocated and zeroed for each one cost more than decoding it.
        let step = input.len().saturating_mul(4).clamp(1 << 10, 32 << 10);
        let mut pos = 0usize;
        loop {
            let start = out.len();
            out.resize(start + step, 0);
            let r = inflate(
                &mut self.state,
                &input[pos..],
                &mut out[start..],
                MZFlush::None,
            );
            out.truncate(start + r.bytes_written);
            pos += r.bytes_consumed;
            self.total_out = self.total_out.saturating_add(r.bytes_written);
            if self.total_out > self.limit {
                return Err(DecodeError::TooLarge);
            }
            if self.coding == Coding::Gzip {
                self.crc.update(&out[start..]);
                self.member_out = self.member_out.wrapping_add(r.bytes_written as u64);
            }
            match r.status {
                Ok(MZStatus::StreamEnd) => {
                    self.stage = match self.coding {
                        Coding::Gzip => Stage::GzipTrailer(Vec::new()),
                        Coding::Deflate => Stage::Done,
                    };
                    return Ok(pos);
                }
                Ok(MZStatus::Ok) => {
                    if r.bytes_consumed == 0 && r.bytes_written == 0 {
                        return Ok(pos);
                    }
                    if pos >= input.len() && r.bytes_written < step {
                        return Ok(pos);
                    }
                }
                Ok(MZStatus::NeedDict) => {
                    return Err(DecodeError::Corrupt("a preset dictionary is required"))
                }
                Err(MZError::Buf) => {
                    // No progress without more input.
                    return Ok(pos);
                }
                Err(_) => return Err(DecodeError::Corrupt("invalid deflate data")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

    /// A gzip member built by hand around miniz_oxide's raw deflate.
    pub(crate) fn gzip(data: &[u8], flags: u8, extra: &[u8]) -> Vec<u8> {
        let mut out = vec![0x1f, 0x8b, 8, flags, 0, 0, 0, 0, 0, 3];
        out.extend_from_slice(extra);
        out.extend(compress_to_vec(data, 6));
        let mut h = crc32fast::Hasher::new();
        h.update(data);
        out.extend(h.finalize().to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out
    }

    fn decode_in_chunks(encoding: &str, body: &[u8], size: usize) -> Result<Vec<u8>, DecodeError> {
        let mut d = decoder_for(encoding)?.expect("a decoder");
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = body.chunks(size.max(1)).collect();
        if chunks.is_empty() {
            return d.push(b"", true);
        }
        for (i, c) in chunks.iter().enumerate() {
            out.extend(d.push(c, i + 1 == chunks.len())?);
        }
        Ok(out)
    }

    fn text() -> Vec<u8> {
        let mut t = Vec::new();
        for i in 0..3000 {
            t.extend(format!("data: {{\"i\":{i},\"text\":\"hello world\"}}\n\n").bytes());
        }
        t
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_in_any_chunking() {
        let data = text();
        let name_flag = b"file.json\0".to_vec();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("gzip", gzip(&data, 0, b"")),
            ("x-gzip", gzip(&data, 0x08, &name_flag)),
            (
                "gzip",
                gzip(&data, 0x04 | 0x02, &[3, 0, b'a', b'b', b'c', 0xaa, 0xbb]),
            ),
            ("deflate", compress_to_vec_zlib(&data, 6)),
            ("deflate", compress_to_vec(&data, 6)),
            ("GZIP, identity", gzip(&data, 0, b"")),
        ];
        for (encoding, body) in cases {
            for size in [1, 2, 3, 7, 100, 4096, body.len()] {
                let out = decode_in_chunks(encoding, &body, size).unwrap();
                assert!(out == data, "{encoding} chunk size {size}");
            }
        }
        let mut two = gzip(b"abc", 0, b"");
        two.extend(gzip(b"def", 0, b""));
        assert_eq!(decode_in_chunks("gzip", &two, 3).unwrap(), b"abcdef");
    }

    #[test]
    fn identity_and_unsupported() {
        assert!(decoder_for("").unwrap().is_none());
        assert!(decoder_for("identity").unwrap().is_none());
        for bad in ["br", "zstd", "compress", "gzip, br", "gzip, gzip"] {
            let e = decoder_for(bad).unwrap_err();
            assert!(matches!(e, DecodeError::Unsupported(_)), "{bad}");
            assert!(e.to_string().contains("cannot decode"));
        }
    }

    #[test]
    fn corrupt_truncated_and_oversized_are_errors() {
        let data = text();
        let good = gzip(&data, 0, b"");
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        assert_eq!(
            decode_in_chunks("gzip", &bad_crc, 50),
            Err(DecodeError::Corrupt("gzip CRC mismatch"))
        );
        assert_eq!(
            decode_in_chunks("gzip", &good[..good.len() - 3], 50),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_in_chunks("gzip", &good[..good.len() / 2], 50),
            Err(DecodeError::Truncated)
        );
        assert!(matches!(
            decode_in_chunks("gzip", b"{\"not\":\"gzip\"}", 4),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(decode_in_chunks("deflate", b"\xff\xff\xff\xff garbage", 3).is_err());
        let mut trailing = compress_to_vec_zlib(b"x", 6);
        trailing.extend(b"junk");
        assert!(decode_in_chunks("deflate", &trailing, 100).is_err());
        let zeros = vec![0u8; 5 << 20];
        let bomb = gzip(&zeros, 0, b"");
        let mut d = decoder_with_limit("gzip", 1 << 20).unwrap().unwrap();
        assert_eq!(d.push(&bomb, true), Err(DecodeError::TooLarge));
        // An empty body (e.g. a 204) labelled gzip is fine.
        assert_eq!(decode_in_chunks("gzip", b"", 1).unwrap(), b"");
    }

    #[test]
    fn a_gzip_header_is_bounded_even_when_it_comes_byte_by_byte() {
        let named = |len: usize| {
            let mut name = vec![b'n'; len];
            name.push(0);
            gzip(b"hello", 0x08, &name)
        };
        let fits = named(MAX_GZIP_HEADER - 11);
        assert_eq!(decode_in_chunks("gzip", &fits, 1).unwrap(), b"hello");
        assert_eq!(
            decode_in_chunks("gzip", &named(MAX_GZIP_HEADER - 10), 1),
            Err(DecodeError::Corrupt("gzip header too large"))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678u32;
        for round in 0..300 {
            let len = (round * 7) % 200;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if round % 3 == 0 && bytes.len() > 4 {
                bytes[0] = 0x1f;
                bytes[1] = 0x8b;
                bytes[2] = 8;
                bytes[3] = 0;
            }
            for encoding in ["gzip", "deflate"] {
                let _ = decode_in_chunks(encoding, &bytes, 1 + round % 13);
            }
        }
    }
}
