//! Incremental Server-Sent Events framing: bytes arrive in arbitrary chunks,
//! complete events come out as soon as their blank line arrives.

/// One complete event: its raw bytes (terminator included) and its joined
/// `data` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Vec<u8>,
    pub event: Option<String>,
    pub data: String,
}

/// Splits a byte stream into events, holding the bytes of an unfinished one.
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: Vec<u8>,
}

impl SseSplitter {
    /// Bytes of an unfinished event held so far; callers bound this.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Appends a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        // Resume the terminator search a few bytes back so a "\r\n\r\n"
        // split across chunks is still found.
        let resume = self.pending.len().saturating_sub(3);
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = resume;
        while let Some(end) = find_event_end(&self.pending, i) {
            let raw = &self.pending[start..end];
            events.push(parse_event(raw));
            start = end;
            i = end;
        }
        self.pending.drain(..start);
        events
    }

    /// Bytes of an event that never finished, returned when the stream ends.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// The index just past the blank line that ends the first event at or after
/// `from`, for "\n\n", "\r\n\r\n" and "\r\r" terminators.
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some(i + 2),
            (b'\r', b'\r') => return Some(i + 2),
            (b'\r', b'\n') if buf.get(i + 2) == Some(&b'\r') && buf.get(i + 3) == Some(&b'\n') => {
                return Some(i + 4)
            }
            _ => i += 1,
        }
    }
    None
}

fn parse_event(raw: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(raw);
    let mut data = String::new();
    let mut event = None;
    let mut first = true;
    for line in text.split(['\n', '\r']) {
        if let Some(value) = field_value(line, "data") {
            if !first {
                data.push('\n');
            }
            data.push_str(value);
            first = false;
        } else if let Some(value) = field_value(line, "event") {
            event = Some(value.to_string());
        }
    }
    SseEvent {
        raw: raw.to_vec(),
        event,
        data,
    }
}

fn field_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"a\":1}\n\nevent: ping\ndata: x\ndata: y\n\ndata: [DONE]\n\n";

    #[test]
    fn whole_stream_in_one_chunk() {
        let mut s = SseSplitter::default();
        let events = s.push(STREAM);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data, "{\"a\":1}");
        assert_eq!(events[1].event.as_deref(), Some("ping"));
        assert_eq!(events[1].data, "x\ny");
        assert_eq!(events[2].data, "[DONE]");
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(joined, STREAM);
        assert!(s.take_rest().is_empty());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let crlf = String::from_utf8(STREAM.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        for stream in [STREAM.to_vec(), crlf.into_bytes()] {
            let mut whole = SseSplitter::default();
            let want = whole.push(&stream);
            for a in 0..stream.len() {
                for b in a..stream.len() {
                    let mut s = SseSplitter::default();
                    let mut got = s.push(&stream[..a]);
                    got.extend(s.push(&stream[a..b]));
                    got.extend(s.push(&stream[b..]));
                    assert_eq!(got, want, "split at {a},{b}");
                }
            }
        }
    }

    #[test]
    fn unfinished_event_is_held() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: 0123456789").is_empty());
        assert_eq!(s.pending_len(), 16);
        assert_eq!(s.take_rest(), b"data: 0123456789");
    }
}
