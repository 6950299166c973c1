//! AWS event-stream (`application/vnd.amazon.eventstream`) framing: an
//! incremental decoder for the binary frames Bedrock streams back, and an
//! encoder for fake providers and tests.
//!
//! A frame is
//! ```text
//! total length   u32 BE   (the whole frame, these 4 bytes and the trailing CRC included)
//! headers length u32 BE
//! prelude CRC    u32 BE   (CRC-32/IEEE of the 8 bytes above)
//! headers        `headers length` bytes
//! payload        total - headers - 16 bytes
//! message CRC    u32 BE   (CRC-32/IEEE of everything before it)
//! ```
//! and each header is `name length u8, name, type u8, value`, with the value
//! types 0 (true), 1 (false), 2 (i8), 3 (i16 BE), 4 (i32 BE), 5 (i64 BE),
//! 6 (u16 BE length + bytes), 7 (u16 BE length + UTF-8), 8 (i64 BE
//! milliseconds since the epoch), 9 (16-byte UUID).
//!
//! Nothing here panics on input: every read is bounds-checked, every length
//! is checked against the frame before use, and a frame longer than the
//! decoder's limit is refused from its 12-byte prelude, before any of it is
//! buffered.

use std::fmt;

/// The largest frame [`Decoder::new`] accepts (the limit AWS documents).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

/// Total length, headers length and prelude CRC.
const PRELUDE_LEN: usize = 12;
/// The prelude plus the trailing message CRC: a frame with no headers and
/// no payload.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

/// A header value, one variant per wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The wire type of this value.
    pub fn type_id(&self) -> u8 {
        match self {
            HeaderValue::Bool(true) => 0,
            HeaderValue::Bool(false) => 1,
            HeaderValue::Byte(_) => 2,
            HeaderValue::Short(_) => 3,
            HeaderValue::Int(_) => 4,
            HeaderValue::Long(_) => 5,
            HeaderValue::Bytes(_) => 6,
            HeaderValue::String(_) => 7,
            HeaderValue::Timestamp(_) => 8,
            HeaderValue::Uuid(_) => 9,
        }
    }

    /// The value of a string header.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One header of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: HeaderValue,
}

impl Header {
    pub fn new(name: impl Into<String>, value: HeaderValue) -> Self {
        Header {
            name: name.into(),
            value,
        }
    }

    /// A string header, the kind AWS uses for `:event-type`,
    /// `:message-type`, `:content-type` and `:exception-type`.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header::new(name, HeaderValue::String(value.into()))
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// In wire order; a name may repeat.
    pub headers: Vec<Header>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// The value of the first header with this name, if it is a string.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

/// Why a byte stream is not valid event-stream, or a message cannot be
/// encoded. After a decoding error the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamError {
    /// The prelude's CRC does not match its first 8 bytes.
    PreludeChecksumMismatch { expected: u32, computed: u32 },
    /// The message CRC does not match the frame.
    MessageChecksumMismatch { expected: u32, computed: u32 },
    /// The total length is below the 16 bytes of prelude and CRC.
    MessageTooShort { total_len: u32 },
    /// The frame is longer than the limit (decoding) or than a u32 can say
    /// (encoding).
    MessageTooLong { total_len: u64, max: u64 },
    /// The headers do not fit in the frame's total length.
    InvalidHeadersLength { total_len: u32, headers_len: u32 },
    /// A header name is empty or runs past the end of the headers section.
    /// `offset` is from the start of the frame.
    InvalidHeaderNameLength { offset: usize },
    /// A header has a type other than 0..=9.
    InvalidHeaderValueType { name: String, type_id: u8 },
    /// A header value runs past the end of the headers section.
    InvalidHeaderValue { name: String },
    /// A header name or string value is not UTF-8. `offset` is from the
    /// start of the frame.
    InvalidUtf8 { offset: usize },
    /// The stream ended inside a frame ([`Decoder::finish`]).
    Truncated { buffered: usize },
    /// [`decode_message`] was given bytes after the end of its frame.
    TrailingBytes { extra: usize },
    /// Encoding: a header name must be 1..=255 bytes.
    InvalidHeaderName { name: String },
    /// Encoding: a bytes or string value must be at most 65535 bytes.
    HeaderValueTooLong { name: String, len: usize },
}

impl fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventStreamError::PreludeChecksumMismatch { expected, computed } => write!(
                f,
                "event-stream prelude checksum mismatch: frame says {expected:#010x}, computed {computed:#010x}"
            ),
            EventStreamError::MessageChecksumMismatch { expected, computed } => write!(
                f,
                "event-stream message checksum mismatch: frame says {expected:#010x}, computed {computed:#010x}"
            ),
            EventStreamError::MessageTooShort { total_len } => write!(
                f,
                "event-stream frame length {total_len} is below the minimum of {MIN_MESSAGE_LEN}"
            ),
            EventStreamError::MessageTooLong { total_len, max } => write!(
                f,
                "event-stream frame length {total_len} exceeds the limit of {max} bytes"
            ),
            EventStreamError::InvalidHeadersLength {
                total_len,
                headers_len,
            } => write!(
                f,
                "event-stream headers length {headers_len} does not fit in a frame of {total_len} bytes"
            ),
            EventStreamError::InvalidHeaderNameLength { offset } => write!(
                f,
                "event-stream header name at byte {offset} is empty or runs past the headers"
            ),
            EventStreamError::InvalidHeaderValueType { name, type_id } => write!(
                f,
                "event-stream header {name:?} has unknown value type {type_id}"
            ),
            EventStreamError::InvalidHeaderValue { name } => write!(
                f,
                "event-stream header {name:?} has a value that runs past the headers"
            ),
            EventStreamError::InvalidUtf8 { offset } => {
                write!(f, "event-stream header text at byte {offset} is not UTF-8")
            }
            EventStreamError::Truncated { buffered } => write!(
                f,
                "event-stream ended inside a frame ({buffered} bytes of it received)"
            ),
            EventStreamError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes follow the event-stream frame")
            }
            EventStreamError::InvalidHeaderName { name } => write!(
                f,
                "event-stream header name {name:?} must be 1 to 255 bytes"
            ),
            EventStreamError::HeaderValueTooLong { name, len } => write!(
                f,
                "event-stream header {name:?} value of {len} bytes exceeds 65535"
            ),
        }
    }
}

impl std::error::Error for EventStreamError {}

/// Turns a byte stream that arrives in arbitrary chunks into messages.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    max_message_len: usize,
    /// Set by the first error; the stream is dead after it.
    failed: Option<EventStreamError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder that accepts frames up to [`DEFAULT_MAX_MESSAGE_LEN`].
    pub fn new() -> Self {
        Decoder::with_max_message_len(DEFAULT_MAX_MESSAGE_LEN)
    }

    /// A decoder that refuses frames longer than `max` bytes.
    pub fn with_max_message_len(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max_message_len: max,
            failed: None,
        }
    }

    /// Bytes of an unfinished frame held so far.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a chunk and returns the messages it completed, in order.
    ///
    /// If the chunk completes some messages and then hits an error, the
    /// messages are returned and the error is reported by the next call to
    /// `push` or [`finish`](Decoder::finish). Once an error has been
    /// reported every later call reports it again.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Message>, EventStreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let mut pos = 0usize;
        let outcome = loop {
            let rest = self.buf.get(pos..).unwrap_or_default();
            match next_frame(rest, self.max_message_len) {
                Ok(None) => break Ok(()),
                Ok(Some((message, len))) => {
                    messages.push(message);
                    pos = pos.saturating_add(len);
                }
                Err(err) => break Err(err),
            }
        };
        match outcome {
            Ok(()) => {
                self.buf.drain(..pos.min(self.buf.len()));
                Ok(messages)
            }
            Err(err) => {
                // The rest of the stream is unusable; keep nothing.
                self.buf = Vec::new();
                self.failed = Some(err.clone());
                if messages.is_empty() {
                    Err(err)
                } else {
                    Ok(messages)
                }
            }
        }
    }

    /// Call when the stream has ended: fails if it ended inside a frame or
    /// an error is still to be reported.
    pub fn finish(&self) -> Result<(), EventStreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(EventStreamError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }

    /// The error that ended the stream, if one was found, including one
    /// found after the messages the last `push` returned (which the next
    /// `push` or `finish` reports).
    pub fn error(&self) -> Option<&EventStreamError> {
        self.failed.as_ref()
    }
}

/// Decodes one complete frame; the slice must hold exactly one frame.
pub fn decode_message(frame: &[u8]) -> Result<Message, EventStreamError> {
    // No limit is needed: nothing is allocated from the declared length.
    match next_frame(frame, usize::MAX)? {
        Some((message, len)) if len == frame.len() => Ok(message),
        Some((_, len)) => Err(EventStreamError::TrailingBytes {
            extra: frame.len().saturating_sub(len),
        }),
        None => Err(EventStreamError::Truncated {
            buffered: frame.len(),
        }),
    }
}

/// The first frame of `buf` and its length, `None` if `buf` does not hold all
/// of it yet. The prelude is checked as soon as its 12 bytes are there.
fn next_frame(buf: &[u8], max: usize) -> Result<Option<(Message, usize)>, EventStreamError> {
    let Some(prelude) = buf.get(..PRELUDE_LEN) else {
        return Ok(None);
    };
    let total_len = read_u32(prelude, 0);
    let headers_len = read_u32(prelude, 4);
    let expected = read_u32(prelude, 8);
    let computed = crc32fast::hash(prelude.get(..8).unwrap_or_default());
    if expected != computed {
        return Err(EventStreamError::PreludeChecksumMismatch { expected, computed });
    }
    let total = usize::try_from(total_len).unwrap_or(usize::MAX);
    if total < MIN_MESSAGE_LEN {
        return Err(EventStreamError::MessageTooShort { total_len });
    }
    if total > max {
        return Err(EventStreamError::MessageTooLong {
            total_len: u64::from(total_len),
            max: max as u64,
        });
    }
    let headers = usize::try_from(headers_len).unwrap_or(usize::MAX);
    if headers > total - MIN_MESSAGE_LEN {
        return Err(EventStreamError::InvalidHeadersLength {
            total_len,
            headers_len,
        });
    }
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    // total >= 16, so these splits are in range; `get` keeps it panic-free.
    let crc_at = total - 4;
    let expected = read_u32(frame, crc_at);
    let computed = crc32fast::hash(frame.get(..crc_at).unwrap_or_default());
    if expected != computed {
        return Err(EventStreamError::MessageChecksumMismatch { expected, computed });
    }
    let headers_end = PRELUDE_LEN + headers;
    let header_bytes = frame.get(PRELUDE_LEN..headers_end).unwrap_or_default();
    let headers = parse_headers(header_bytes)?;
    let payload = frame.get(headers_end..crc_at).unwrap_or_default().to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

/// A big-endian u32 at `at`, 0 if out of range (callers check lengths first).
fn read_u32(buf: &[u8], at: usize) -> u32 {
    match buf.get(at..at.saturating_add(4)) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A bounds-checked reader over the headers section.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// Offset in the frame of the cursor's position.
    fn frame_offset(&self) -> usize {
        self.pos.saturating_add(PRELUDE_LEN)
    }
}

fn parse_headers(buf: &[u8]) -> Result<Vec<Header>, EventStreamError> {
    let mut cur = Cursor { buf, pos: 0 };
    let mut headers = Vec::new();
    while cur.pos < buf.len() {
        let name_offset = cur.frame_offset();
        let name_len = cur.u8().unwrap_or(0);
        let name_bytes = match cur.take(usize::from(name_len)) {
            Some(bytes) if !bytes.is_empty() => bytes,
            _ => {
                return Err(EventStreamError::InvalidHeaderNameLength {
                    offset: name_offset,
                })
            }
        };
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| EventStreamError::InvalidUtf8 {
                offset: name_offset.saturating_add(1),
            })?
            .to_string();
        let bad_value = |name: &str| EventStreamError::InvalidHeaderValue {
            name: name.to_string(),
        };
        let Some(type_id) = cur.u8() else {
            return Err(bad_value(&name));
        };
        let value = match type_id {
            0 => Some(HeaderValue::Bool(true)),
            1 => Some(HeaderValue::Bool(false)),
            2 => cur.array().map(|b| HeaderValue::Byte(i8::from_be_bytes(b))),
            3 => cur
                .array()
                .map(|b| HeaderValue::Short(i16::from_be_bytes(b))),
            4 => cur.array().map(|b| HeaderValue::Int(i32::from_be_bytes(b))),
            5 => cur
                .array()
                .map(|b| HeaderValue::Long(i64::from_be_bytes(b))),
            6 => cur
                .u16()
                .and_then(|len| cur.take(usize::from(len)))
                .map(|b| HeaderValue::Bytes(b.to_vec())),
            7 => {
                let text_offset = cur.frame_offset().saturating_add(2);
                match cur.u16().and_then(|len| cur.take(usize::from(len))) {
                    Some(b) => Some(HeaderValue::String(
                        std::str::from_utf8(b)
                            .map_err(|_| EventStreamError::InvalidUtf8 {
                                offset: text_offset,
                            })?
                            .to_string(),
                    )),
                    None => None,
                }
            }
            8 => cur
                .array()
                .map(|b| HeaderValue::Timestamp(i64::from_be_bytes(b))),
            9 => cur.array().map(HeaderValue::Uuid),
            other => {
                return Err(EventStreamError::InvalidHeaderValueType {
                    name,
                    type_id: other,
                })
            }
        };
        match value {
            Some(value) => headers.push(Header { name, value }),
            None => return Err(bad_value(&name)),
        }
    }
    Ok(headers)
}

/// Encodes one frame, checking every length against what the wire format
/// can carry.
pub fn try_encode(headers: &[Header], payload: &[u8]) -> Result<Vec<u8>, EventStreamError> {
    let mut header_bytes = Vec::new();
    for header in headers {
        let name = header.name.as_bytes();
        let name_len = match u8::try_from(name.len()) {
            Ok(len) if len > 0 => len,
            _ => {
                return Err(EventStreamError::InvalidHeaderName {
                    name: header.name.clone(),
                })
            }
        };
        header_bytes.push(name_len);
        header_bytes.extend_from_slice(name);
        header_bytes.push(header.value.type_id());
        match &header.value {
            HeaderValue::Bool(_) => {}
            HeaderValue::Byte(v) => header_bytes.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Short(v) => header_bytes.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Int(v) => header_bytes.extend_from_slice(&v.to_be_bytes()),
            HeaderValue::Long(v) | HeaderValue::Timestamp(v) => {
                header_bytes.extend_from_slice(&v.to_be_bytes())
            }
            HeaderValue::Bytes(v) => push_with_u16_len(&mut header_bytes, &header.name, v)?,
            HeaderValue::String(v) => {
                push_with_u16_len(&mut header_bytes, &header.name, v.as_bytes())?
            }
            HeaderValue::Uuid(v) => header_bytes.extend_from_slice(v),
        }
    }
    let too_long = |total: u64| EventStreamError::MessageTooLong {
        total_len: total,
        max: u64::from(u32::MAX),
    };
    let total = (MIN_MESSAGE_LEN as u64)
        .saturating_add(header_bytes.len() as u64)
        .saturating_add(payload.len() as u64);
    let total_len = u32::try_from(total).map_err(|_| too_long(total))?;
    let headers_len = u32::try_from(header_bytes.len()).map_err(|_| too_long(total))?;

    let mut out = Vec::with_capacity(usize::try_from(total_len).unwrap_or(0));
    out.extend_from_slice(&total_len.to_be_bytes());
    out.extend_from_slice(&headers_len.to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(out)
}

/// Encodes one frame. For callers whose headers are known to be valid (fake
/// providers, tests): if a name is empty or longer than 255 bytes, a value
/// longer than 65535 bytes or the frame longer than 4 GiB, it returns an
/// empty vector, which no decoder accepts as a frame. Use [`try_encode`] to
/// learn why.
pub fn encode(headers: &[Header], payload: &[u8]) -> Vec<u8> {
    try_encode(headers, payload).unwrap_or_default()
}

fn push_with_u16_len(out: &mut Vec<u8>, name: &str, value: &[u8]) -> Result<(), EventStreamError> {
    let len = u16::try_from(value.len()).map_err(|_| EventStreamError::HeaderValueTooLong {
        name: name.to_string(),
        len: value.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The event-stream frames of the shared conformance data (Apache-2.0,
    /// from smithy-rs `aws-smithy-eventstream/test_data`). Missing data is a
    /// failure, not a skip.
    fn conformance_dir() -> PathBuf {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/eventstream");
        assert!(
            dir.is_dir(),
            "event-stream conformance data not found at {}: the `shared` folder must sit beside the repository root",
            dir.display()
        );
        dir
    }

    fn conformance_files() -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(conformance_dir())
            .expect("read event-stream conformance dir")
            .map(|entry| {
                let path = entry.expect("dir entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = std::fs::read(&path).expect("read conformance file");
                (name, bytes)
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no event-stream conformance files");
        files
    }

    /// Recomputes the prelude CRC and, if the frame is complete, the message
    /// CRC, so that a deliberately corrupt header section is reached.
    fn repair_checksums(frame: &mut [u8]) {
        let crc = crc32fast::hash(&frame[..8]);
        frame[8..12].copy_from_slice(&crc.to_be_bytes());
        let total = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        if total >= MIN_MESSAGE_LEN && total <= frame.len() {
            let crc = crc32fast::hash(&frame[..total - 4]);
            frame[total - 4..total].copy_from_slice(&crc.to_be_bytes());
        }
    }

    fn all_headers_message() -> Message {
        // valid_with_all_headers_and_payload, read off its bytes by hand.
        Message {
            headers: vec![
                Header::new("true", HeaderValue::Bool(true)),
                Header::new("false", HeaderValue::Bool(false)),
                Header::new("byte", HeaderValue::Byte(50)),
                Header::new("short", HeaderValue::Short(20_000)),
                Header::new("int", HeaderValue::Int(500_000)),
                Header::new("long", HeaderValue::Long(50_000_000_000)),
                Header::new("bytes", HeaderValue::Bytes(b"some bytes".to_vec())),
                Header::string("str", "some str"),
                Header::new("time", HeaderValue::Timestamp(5_000_000_000)),
                Header::new(
                    "uuid",
                    HeaderValue::Uuid([
                        0xb7, 0x9b, 0xc9, 0x14, 0xde, 0x21, 0x4e, 0x13, 0xb8, 0xb2, 0xbc, 0x47,
                        0xe8, 0x5b, 0x7f, 0x0b,
                    ]),
                ),
            ],
            payload: b"some payload".to_vec(),
        }
    }

    /// What each valid file holds.
    fn expected_valid(name: &str) -> Option<Message> {
        match name {
            "valid_with_all_headers_and_payload" => Some(all_headers_message()),
            "valid_empty_payload" => Some(Message {
                headers: vec![Header::new("some-header", HeaderValue::Short(500))],
                payload: Vec::new(),
            }),
            "valid_no_headers" => Some(Message {
                headers: Vec::new(),
                payload: b"another test payload".to_vec(),
            }),
            _ => None,
        }
    }

    /// A check on the error as received, and the error once the checksums
    /// are repaired (`None`: the repaired frame is valid).
    type InvalidExpectation = (fn(&EventStreamError) -> bool, Option<EventStreamError>);

    /// Whether an invalid file's error is the expected one, as received and
    /// with its checksums repaired. The decoder checks both CRCs before it
    /// reads a header, so a corrupt header section shows up as a checksum
    /// mismatch until the CRCs are repaired; then the specific fault is
    /// found. (smithy-rs, which reads headers first, reports the same kinds,
    /// except `invalid_header_name_length_too_long`, which it reports as bad
    /// UTF-8 because it reads the name past the headers section; here the
    /// name is bounded by the section.)
    fn expected_invalid(name: &str) -> Option<InvalidExpectation> {
        use EventStreamError as E;
        let crc = |e: &E| matches!(e, E::MessageChecksumMismatch { .. });
        Some(match name {
            "invalid_header_name_length" => (crc, Some(E::InvalidHeaderNameLength { offset: 25 })),
            "invalid_header_name_length_too_long" => {
                (crc, Some(E::InvalidHeaderNameLength { offset: 18 }))
            }
            "invalid_header_string_length_cut_off" => {
                (crc, Some(E::InvalidHeaderValue { name: "str".into() }))
            }
            "invalid_header_string_value_length" => {
                (crc, Some(E::InvalidHeaderValue { name: "str".into() }))
            }
            "invalid_header_value_type" => (
                crc,
                Some(E::InvalidHeaderValueType {
                    name: "byte".into(),
                    type_id: 0x60,
                }),
            ),
            "invalid_headers_length" => (
                |e| {
                    *e == E::InvalidHeadersLength {
                        total_len: 89,
                        headers_len: 77,
                    }
                },
                Some(E::InvalidHeadersLength {
                    total_len: 89,
                    headers_len: 77,
                }),
            ),
            "invalid_message_checksum" => (
                |e| {
                    *e == E::MessageChecksumMismatch {
                        expected: 0xDEAD_BEEF,
                        computed: 0x01a0_5860,
                    }
                },
                None,
            ),
            "invalid_prelude_checksum" => (
                |e| {
                    *e == E::PreludeChecksumMismatch {
                        expected: 0xDEAD_BEEF,
                        computed: 0x8bb4_95fb,
                    }
                },
                None,
            ),
            _ => return None,
        })
    }

    /// Feeds the chunks in order, stopping at the first error, then ends the
    /// stream: every message and the error, if any.
    fn decode_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Message>, Option<EventStreamError>) {
        let mut decoder = Decoder::new();
        let mut messages = Vec::new();
        for chunk in chunks {
            match decoder.push(chunk) {
                Ok(mut done) => messages.append(&mut done),
                Err(err) => return (messages, Some(err)),
            }
        }
        (messages, decoder.finish().err())
    }

    fn decode_all(bytes: &[u8]) -> (Vec<Message>, Option<EventStreamError>) {
        decode_chunks([bytes])
    }

    #[test]
    fn conformance_valid_frames_decode_to_recorded_values_and_reencode_identically() {
        let mut checked = 0;
        for (name, bytes) in conformance_files() {
            if !name.starts_with("valid_") {
                continue;
            }
            let expected = expected_valid(&name).unwrap_or_else(|| {
                panic!("{name}: a valid frame this test does not know; add its expected headers and payload")
            });
            assert_eq!(decode_all(&bytes), (vec![expected.clone()], None), "{name}");
            assert_eq!(decode_message(&bytes).as_ref(), Ok(&expected), "{name}");
            assert_eq!(
                try_encode(&expected.headers, &expected.payload).as_deref(),
                Ok(&bytes[..]),
                "{name}: re-encoding differs"
            );
            assert_eq!(
                encode(&expected.headers, &expected.payload),
                bytes,
                "{name}"
            );
            println!("eventstream conformance: {name}: decoded and re-encoded byte for byte");
            checked += 1;
        }
        assert_eq!(checked, 3, "expected the three valid_* frames");
    }

    #[test]
    fn conformance_invalid_frames_give_the_expected_error() {
        let mut checked = 0;
        for (name, bytes) in conformance_files() {
            if name.starts_with("valid_") {
                continue;
            }
            assert!(
                name.starts_with("invalid_"),
                "{name}: neither valid_ nor invalid_: classify it in this test"
            );
            let (as_received, repaired) = expected_invalid(&name).unwrap_or_else(|| {
                panic!("{name}: an invalid frame this test does not know; add its expected error")
            });
            let (messages, err) = decode_all(&bytes);
            assert!(messages.is_empty(), "{name}: decoded {messages:?}");
            let err = err.unwrap_or_else(|| panic!("{name}: decoded without error"));
            assert!(as_received(&err), "{name}: unexpected error {err:?}");
            assert!(decode_message(&bytes).is_err(), "{name}");

            let mut fixed = bytes.clone();
            repair_checksums(&mut fixed);
            let (messages, err) = decode_all(&fixed);
            match repaired {
                Some(expected) => {
                    assert!(messages.is_empty(), "{name} repaired: decoded {messages:?}");
                    assert_eq!(err, Some(expected), "{name} repaired");
                }
                None => {
                    // Only the checksum was broken: repaired, it is the
                    // valid frame again.
                    assert_eq!(
                        (messages, err),
                        (vec![all_headers_message()], None),
                        "{name} repaired"
                    );
                }
            }
            println!(
                "eventstream conformance: {name}: error {}",
                decode_all(&bytes).1.unwrap()
            );
            checked += 1;
        }
        assert_eq!(checked, 8, "expected the eight invalid_* frames");
    }

    /// Every way of cutting each conformance file into three chunks (two
    /// cut points, empty chunks included) gives the same result as one
    /// push. The files are at most 150 bytes, about 11,000 splits each.
    #[test]
    fn conformance_results_do_not_depend_on_chunk_boundaries() {
        for (name, bytes) in conformance_files() {
            let whole = decode_all(&bytes);
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let split = decode_chunks([&bytes[..i], &bytes[i..j], &bytes[j..]]);
                    assert_eq!(split, whole, "{name} split at {i} and {j}");
                }
            }
            let byte_by_byte = decode_chunks(bytes.chunks(1));
            assert_eq!(byte_by_byte, whole, "{name} byte by byte");
        }
    }

    #[test]
    fn a_stream_of_several_frames_decodes_whatever_the_split() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for name in [
            "valid_with_all_headers_and_payload",
            "valid_empty_payload",
            "valid_no_headers",
            "valid_empty_payload",
        ] {
            stream.extend(std::fs::read(conformance_dir().join(name)).unwrap());
            expected.push(expected_valid(name).unwrap());
        }
        let whole = decode_all(&stream);
        assert_eq!(whole, (expected.clone(), None));
        for i in 0..=stream.len() {
            assert_eq!(
                decode_chunks([&stream[..i], &stream[i..]]),
                whole,
                "split at {i}"
            );
        }
        for size in 1..=17 {
            assert_eq!(
                decode_chunks(stream.chunks(size)),
                whole,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn messages_before_an_error_are_returned_then_the_error() {
        let files: std::collections::BTreeMap<_, _> = conformance_files().into_iter().collect();
        let mut stream = files["valid_no_headers"].clone();
        stream.extend(&files["invalid_message_checksum"]);
        stream.extend(&files["valid_empty_payload"]);
        let mut decoder = Decoder::new();
        let first = decoder.push(&stream).unwrap();
        assert_eq!(first, vec![expected_valid("valid_no_headers").unwrap()]);
        assert!(matches!(
            decoder.error(),
            Some(EventStreamError::MessageChecksumMismatch { .. })
        ));
        // Reported by the next call, and by every call after that.
        assert!(decoder.push(&files["valid_no_headers"]).is_err());
        assert!(decoder.push(&[]).is_err());
        assert!(decoder.finish().is_err());
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let bytes =
            std::fs::read(conformance_dir().join("valid_with_all_headers_and_payload")).unwrap();
        for cut in 1..bytes.len() {
            let mut decoder = Decoder::new();
            assert_eq!(decoder.push(&bytes[..cut]), Ok(Vec::new()), "cut at {cut}");
            assert_eq!(decoder.buffered_len(), cut);
            assert_eq!(
                decoder.finish(),
                Err(EventStreamError::Truncated { buffered: cut }),
                "cut at {cut}"
            );
            assert!(
                decode_message(&bytes[..cut]).is_err(),
                "decode_message cut at {cut}"
            );
        }
        let mut with_extra = bytes.clone();
        with_extra.push(0);
        assert_eq!(
            decode_message(&with_extra),
            Err(EventStreamError::TrailingBytes { extra: 1 })
        );
        assert_eq!(Decoder::new().finish(), Ok(()));
    }

    /// CRC-32 detects every single-bit error, and the lengths are covered
    /// by the prelude CRC, so every bit flip of a valid frame must fail at
    /// once, with nothing left waiting for more bytes.
    #[test]
    fn every_single_bit_flip_of_a_valid_frame_is_an_error() {
        for (name, bytes) in conformance_files() {
            if !name.starts_with("valid_") {
                continue;
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let mut decoder = Decoder::new();
                assert!(
                    decoder.push(&flipped).is_err(),
                    "{name}: bit {bit} flipped decoded"
                );
            }
        }
    }

    fn frame_with_prelude(total_len: u32, headers_len: u32) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&total_len.to_be_bytes());
        frame.extend_from_slice(&headers_len.to_be_bytes());
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        frame
    }

    #[test]
    fn oversized_or_impossible_lengths_fail_from_the_prelude_without_buffering() {
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.push(&frame_with_prelude(u32::MAX, 0)),
            Err(EventStreamError::MessageTooLong {
                total_len: u64::from(u32::MAX),
                max: DEFAULT_MAX_MESSAGE_LEN as u64,
            })
        );
        assert_eq!(decoder.buffered_len(), 0);

        let just_over = (DEFAULT_MAX_MESSAGE_LEN + 1) as u32;
        assert!(matches!(
            Decoder::new().push(&frame_with_prelude(just_over, 0)),
            Err(EventStreamError::MessageTooLong { .. })
        ));
        // At the limit the decoder waits for the rest.
        let mut decoder = Decoder::new();
        let at_limit = DEFAULT_MAX_MESSAGE_LEN as u32;
        assert_eq!(
            decoder.push(&frame_with_prelude(at_limit, 0)),
            Ok(Vec::new())
        );

        let mut small = Decoder::with_max_message_len(100);
        let big = encode(&[], &[7u8; 100]);
        assert!(matches!(
            small.push(&big[..12]),
            Err(EventStreamError::MessageTooLong {
                total_len: 116,
                max: 100
            })
        ));

        for total in 0..16 {
            assert_eq!(
                Decoder::new().push(&frame_with_prelude(total, 0)),
                Err(EventStreamError::MessageTooShort { total_len: total })
            );
        }
        for (total, headers) in [(16, 1), (20, 5), (100, u32::MAX), (u32::MAX, u32::MAX)] {
            let max =
                Decoder::with_max_message_len(usize::MAX).push(&frame_with_prelude(total, headers));
            assert_eq!(
                max,
                Err(EventStreamError::InvalidHeadersLength {
                    total_len: total,
                    headers_len: headers,
                })
            );
        }
    }

    #[test]
    fn all_value_types_round_trip_including_extremes() {
        let headers = vec![
            Header::new("t", HeaderValue::Bool(true)),
            Header::new("f", HeaderValue::Bool(false)),
            Header::new("b-min", HeaderValue::Byte(i8::MIN)),
            Header::new("b-max", HeaderValue::Byte(i8::MAX)),
            Header::new("s", HeaderValue::Short(i16::MIN)),
            Header::new("i", HeaderValue::Int(-1)),
            Header::new("l", HeaderValue::Long(i64::MIN)),
            Header::new("empty-bytes", HeaderValue::Bytes(Vec::new())),
            Header::new("max-bytes", HeaderValue::Bytes(vec![0xff; 65_535])),
            Header::string("empty-str", ""),
            Header::string("unicode", "ünïcødé ✓"),
            Header::new("ts", HeaderValue::Timestamp(-1)),
            Header::new("u", HeaderValue::Uuid([0; 16])),
            Header::string("dup", "1"),
            Header::string("dup", "2"),
            Header::string(&*"n".repeat(255), "longest name"),
        ];
        let message = Message {
            headers,
            payload: (0..=255u8).collect(),
        };
        let bytes = encode(&message.headers, &message.payload);
        assert_eq!(decode_all(&bytes), (vec![message.clone()], None));
        assert_eq!(
            message.header_str("dup"),
            Some("1"),
            "the first of repeated names"
        );
        assert_eq!(message.header("ts"), Some(&HeaderValue::Timestamp(-1)));
        assert_eq!(message.header_str("t"), None);
        assert_eq!(message.header("missing"), None);
    }

    #[test]
    fn a_bedrock_stream_chunk_event_round_trips() {
        let payload = br#"{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=","p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"}"#;
        let headers = vec![
            Header::string(":event-type", "chunk"),
            Header::string(":content-type", "application/json"),
            Header::string(":message-type", "event"),
        ];
        let bytes = encode(&headers, payload);
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            got.extend(decoder.push(chunk).unwrap());
        }
        decoder.finish().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header_str(":event-type"), Some("chunk"));
        assert_eq!(got[0].header_str(":message-type"), Some("event"));
        assert_eq!(got[0].payload, payload);
    }

    #[test]
    fn encode_refuses_what_the_wire_format_cannot_carry() {
        let cases = [
            (
                Header::string("", "v"),
                EventStreamError::InvalidHeaderName {
                    name: String::new(),
                },
            ),
            (
                Header::string("n".repeat(256), "v"),
                EventStreamError::InvalidHeaderName {
                    name: "n".repeat(256),
                },
            ),
            (
                Header::string("s", "x".repeat(65_536)),
                EventStreamError::HeaderValueTooLong {
                    name: "s".into(),
                    len: 65_536,
                },
            ),
            (
                Header::new("b", HeaderValue::Bytes(vec![0; 70_000])),
                EventStreamError::HeaderValueTooLong {
                    name: "b".into(),
                    len: 70_000,
                },
            ),
        ];
        for (header, expected) in cases {
            let headers = [Header::string("ok", "fine"), header];
            assert_eq!(try_encode(&headers, b"p"), Err(expected));
            assert_eq!(encode(&headers, b"p"), Vec::<u8>::new());
        }
        // An empty frame: headers and payload both empty.
        assert_eq!(encode(&[], &[]).len(), MIN_MESSAGE_LEN);
        assert_eq!(
            decode_all(&encode(&[], &[])),
            (vec![Message::default()], None)
        );
    }

    #[test]
    fn bad_header_sections_are_errors_not_panics() {
        use EventStreamError as E;
        // Each header section is wrapped in a frame with correct CRCs, so
        // only the header parser can object.
        let cases: &[(&[u8], E)] = &[
            (b"\x00", E::InvalidHeaderNameLength { offset: 12 }),
            (b"\x05ab", E::InvalidHeaderNameLength { offset: 12 }),
            (b"\x01a", E::InvalidHeaderValue { name: "a".into() }),
            (b"\x01a\x02", E::InvalidHeaderValue { name: "a".into() }),
            (b"\x01a\x03\x00", E::InvalidHeaderValue { name: "a".into() }),
            (
                b"\x01a\x04\x00\x00\x00",
                E::InvalidHeaderValue { name: "a".into() },
            ),
            (
                b"\x01a\x05\x00\x00\x00\x00\x00\x00\x00",
                E::InvalidHeaderValue { name: "a".into() },
            ),
            (b"\x01a\x06\x00", E::InvalidHeaderValue { name: "a".into() }),
            (
                b"\x01a\x06\x00\x02x",
                E::InvalidHeaderValue { name: "a".into() },
            ),
            (
                b"\x01a\x07\xff\xff",
                E::InvalidHeaderValue { name: "a".into() },
            ),
            (b"\x01a\x08\x00", E::InvalidHeaderValue { name: "a".into() }),
            (
                b"\x01a\x09\x00\x01",
                E::InvalidHeaderValue { name: "a".into() },
            ),
            (
                b"\x01a\x0a",
                E::InvalidHeaderValueType {
                    name: "a".into(),
                    type_id: 10,
                },
            ),
            (
                b"\x01a\xff",
                E::InvalidHeaderValueType {
                    name: "a".into(),
                    type_id: 255,
                },
            ),
            (b"\x01\xff\x00", E::InvalidUtf8 { offset: 13 }),
            (b"\x01a\x07\x00\x02\xc3\x28", E::InvalidUtf8 { offset: 17 }),
        ];
        for (section, expected) in cases {
            let frame = raw_frame(section, b"payload");
            assert_eq!(
                decode_all(&frame),
                (Vec::new(), Some(expected.clone())),
                "{section:x?}"
            );
        }
    }

    /// A frame around arbitrary header bytes, with correct CRCs.
    fn raw_frame(header_section: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (16 + header_section.len() + payload.len()) as u32;
        let mut frame = frame_with_prelude(total, header_section.len() as u32);
        frame.extend_from_slice(header_section);
        frame.extend_from_slice(payload);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        frame
    }

    /// xorshift64*: deterministic pseudo-random bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random header sections with valid CRCs and random garbage: never a
    /// panic, and whatever decodes re-encodes to the same bytes.
    #[test]
    fn random_input_never_panics_and_decoded_frames_reencode_identically() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seed_frame = encode(&all_headers_message().headers, b"some payload");
        let header_section = seed_frame[12..seed_frame.len() - 16].to_vec();
        let mut decoded = 0;
        for round in 0..20_000 {
            let bytes = if round % 2 == 0 {
                // Mutate the headers of a real frame and fix the CRCs.
                let mut section = header_section.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(section.len());
                    section[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    section.truncate(rng.below(section.len()));
                }
                raw_frame(&section, b"p")
            } else {
                // Garbage behind a valid prelude, or plain garbage.
                let len = rng.below(64);
                let mut garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 {
                    let total = 16 + rng.below(48) as u32;
                    let mut frame = frame_with_prelude(total, rng.below(40) as u32);
                    frame.append(&mut garbage);
                    garbage = frame;
                }
                garbage
            };
            let cut = rng.below(bytes.len() + 1);
            let (messages, err) = decode_chunks([&bytes[..cut], &bytes[cut..]]);
            assert_eq!((messages.clone(), err.clone()), decode_all(&bytes));
            if let (Some(message), None) = (messages.first(), &err) {
                assert_eq!(messages.len(), 1);
                assert_eq!(encode(&message.headers, &message.payload), bytes);
                decoded += 1;
            }
        }
        assert!(
            decoded > 100,
            "the mutations should leave some frames valid, got {decoded}"
        );
    }
}
