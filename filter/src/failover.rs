//! What the upstream role needs to take part in retries and failover. Pure.
//!
//! Envoy runs the upstream filters once per attempt but hands every attempt
//! the same request header map: what one attempt's rewrite changed (path,
//! host, credentials, the internal handoff header it removed) is what the
//! next attempt would see. So the first attempt keeps the headers as the
//! router passed them ([`encode_headers`], in filter state) and every later
//! attempt restores them before rewriting for its own backend.
//!
//! A provider's 429 with `retry-after` puts its backend on a cool-down
//! ([`retry_after_seconds`], [`Cooldown`]) kept in the VM's shared data, so
//! every worker sees it: while every backend of the rule is cooling, the
//! upstream role answers 429 with the time left without calling any (a
//! local reply, which Envoy does not retry); otherwise the request goes on.
//!
//! An attempt that cannot be made at all (its backend's credential is
//! missing) must still end in something Envoy retries: an upstream
//! filter's local reply never is, so with another backend in the rule the
//! attempt goes upstream empty ([`empty_attempt_headers`]) and its answer
//! becomes a retriable [`FAILED_ATTEMPT_STATUS`].

/// Filter-state name of the original request headers.
pub const ORIGINAL_HEADERS_PROPERTY: &str = "aigw_original_request_headers";
/// Shared-data key prefix of a backend's cool-down (seconds since the epoch).
pub const COOLDOWN_KEY_PREFIX: &str = "aigw.cooldown/";
/// Longest cool-down a provider can ask for.
pub const MAX_COOLDOWN_SECONDS: u64 = 600;
/// Set on the local answer the upstream role gives for a cooling backend.
pub const COOLDOWN_HEADER: &str = "x-aigw-cooldown";

/// The AIServiceBackend (`namespace/name`) of a configuration key. A
/// backend that rules send different `modelNameOverride`s is configured once
/// per override, keyed `namespace/name#model` (Kubernetes names never
/// contain `#`); its cool-down, metrics and access log use the backend name.
pub fn service_of(target: &str) -> &str {
    target
        .split_once('#')
        .map_or(target, |(service, _)| service)
}

/// Status an attempt that could not be made is answered with: retried by
/// the default AI retry policy (and any that lists 503), so Envoy moves on
/// to the rule's next backend.
pub const FAILED_ATTEMPT_STATUS: &str = "503";

/// Whether an attempt that cannot be made (its backend's credential is
/// missing) should still go upstream so that Envoy can fail over from its
/// answer: only when the rule has another backend to fail over to.
/// Envoy retries only what comes back from upstream; an upstream filter's
/// local reply goes straight to the client (`UpstreamFilterManager::
/// sendLocalReply` hands it to the downstream filter chain), and resetting
/// the stream from an upstream filter resets the client's stream too.
pub fn fail_over_through_upstream(backends_in_rule: usize) -> bool {
    backends_in_rule > 1
}

/// The request such an attempt sends instead of the client's: it tells the
/// provider nothing (no body, no credential, none of the client's headers,
/// not even the API path). `content-length: 0` keeps Envoy's HTTP/1 codec
/// from chunking the empty body.
pub fn empty_attempt_headers<'a>(
    authority: &'a str,
    scheme: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        (":method", "GET"),
        (":path", "/"),
        (":authority", authority),
        (":scheme", scheme),
        ("content-length", "0"),
    ]
}

/// Header pairs as bytes: for each, u32 LE name length, name, u32 LE value
/// length, value.
pub fn encode_headers<N: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        for part in [name.as_ref(), value.as_ref()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The inverse of [`encode_headers`]; `None` if the bytes are not its output.
pub fn decode_headers(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let part = bytes.get(4..4usize.checked_add(len)?)?;
        *bytes = &bytes[4 + len..];
        Some(part)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?.to_vec()).ok()?;
        let value = take(&mut bytes)?.to_vec();
        out.push((name, value));
    }
    Some(out)
}

/// Seconds to wait from a `retry-after` value (delta-seconds; an HTTP date
/// is not followed and counts as one second), capped.
pub fn retry_after_seconds(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => {
            Some((n.ceil() as u64).clamp(1, MAX_COOLDOWN_SECONDS))
        }
        Ok(_) => None,
        Err(_) => v.contains("GMT").then_some(1),
    }
}

/// A backend's cool-down as stored in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    pub until: u64,
}

impl Cooldown {
    pub fn key(target: &str) -> String {
        format!("{COOLDOWN_KEY_PREFIX}{}", service_of(target))
    }

    pub fn parse(bytes: &[u8]) -> Option<Cooldown> {
        let until = std::str::from_utf8(bytes).ok()?.trim().parse().ok()?;
        Some(Cooldown { until })
    }

    pub fn encode(self) -> Vec<u8> {
        self.until.to_string().into_bytes()
    }

    /// Seconds left at `now`, if still cooling down.
    pub fn remaining(self, now: u64) -> Option<u64> {
        (self.until > now).then(|| self.until - now)
    }
}

/// Most response bytes the upstream role holds while it waits for a
/// stream's first content event.
pub const MAX_HELD_STREAM_BYTES: usize = 64 << 10;

/// Largest JSON answer the upstream role holds to check that it parses;
/// larger ones pass unchecked (Envoy's upstream buffer limit is 1 MiB).
pub const MAX_CHECKED_JSON_BYTES: usize = 256 << 10;

/// Whether a complete JSON answer is well-formed.
pub fn json_is_valid(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// What the start of a server-sent-event stream says about the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// No content event yet: keep holding.
    NeedMore,
    /// The provider produced content (or something that is not an error):
    /// release the response.
    Content,
    /// The provider's first real event is an error: the attempt failed.
    Error,
}

/// Looks at the complete events of `buffer` (the response so far): pings,
/// comments, Anthropic's `message_start` and OpenAI's role-only first
/// chunk do not count as content.
pub fn sse_stream_start(buffer: &[u8]) -> StreamStart {
    let text = String::from_utf8_lossy(buffer).replace("\r\n", "\n");
    let mut events: Vec<&str> = text.split("\n\n").collect();
    events.pop(); // the part after the last blank line is incomplete
    for event in events {
        let mut name = "";
        let mut data = String::new();
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if name == "error" {
            return StreamStart::Error;
        }
        if data.is_empty() || name == "ping" || name == "message_start" {
            continue;
        }
        if data == "[DONE]" {
            return StreamStart::Content;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&data) else {
            return StreamStart::Content;
        };
        if value.get("error").is_some_and(|e| !e.is_null())
            || value.get("type").and_then(|t| t.as_str()) == Some("error")
        {
            return StreamStart::Error;
        }
        let role_only = value["choices"].as_array().is_some_and(|choices| {
            !choices.is_empty()
                && choices.iter().all(|c| {
                    c["finish_reason"].is_null()
                        && c["delta"].as_object().is_some_and(|d| {
                            d.iter().all(|(k, v)| {
                                k == "role" || v.is_null() || v.as_str().is_some_and(str::is_empty)
                            })
                        })
                })
        });
        if role_only || value.get("type").and_then(|t| t.as_str()) == Some("ping") {
            continue;
        }
        return StreamStart::Content;
    }
    StreamStart::NeedMore
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_validity() {
        assert!(json_is_valid(br#"{"choices":[]}"#));
        assert!(!json_is_valid(br#"{"choices":["#));
        assert!(!json_is_valid(b"<html>bad gateway</html>"));
    }

    #[test]
    fn stream_start() {
        use StreamStart::*;
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
        let word = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(sse_stream_start(b""), NeedMore);
        assert_eq!(sse_stream_start(role.as_bytes()), NeedMore);
        assert_eq!(
            sse_stream_start(format!("{role}{word}").as_bytes()),
            Content
        );
        assert_eq!(sse_stream_start(&word.as_bytes()[..20]), NeedMore);
        assert_eq!(
            sse_stream_start(b": keep-alive\n\ndata: [DONE]\n\n"),
            Content
        );
        assert_eq!(
            sse_stream_start(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
            Error
        );
        assert_eq!(
            sse_stream_start(b"event: message_start\ndata: {\"type\":\"message_start\"}\r\n\r\nevent: error\ndata: {\"type\":\"error\"}\n\n"),
            Error
        );
        assert_eq!(
            sse_stream_start(
                b"event: message_start\ndata: {}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n"
            ),
            NeedMore
        );
        assert_eq!(
            sse_stream_start(
                b"event: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n"
            ),
            Content
        );
        assert_eq!(sse_stream_start(b"data: not json\n\n"), Content);
    }

    #[test]
    fn headers_round_trip_with_any_bytes() {
        let headers: Vec<(String, Vec<u8>)> = vec![
            (":path".into(), b"/v1/chat/completions".to_vec()),
            ("x-obs".into(), vec![0xff, 0x80, b'a']),
            ("empty".into(), Vec::new()),
        ];
        let bytes = encode_headers(&headers);
        assert_eq!(decode_headers(&bytes).unwrap(), headers);
        assert_eq!(decode_headers(&[]).unwrap(), Vec::new());
        for cut in 1..bytes.len() {
            // A truncated value never decodes to something else silently.
            if let Some(h) = decode_headers(&bytes[..cut]) {
                assert!(h.len() < headers.len());
            }
        }
        assert!(decode_headers(&[0xff, 0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(retry_after_seconds("5"), Some(5));
        assert_eq!(retry_after_seconds(" 0.2 "), Some(1));
        assert_eq!(retry_after_seconds("0"), Some(1));
        assert_eq!(retry_after_seconds("99999"), Some(MAX_COOLDOWN_SECONDS));
        assert_eq!(
            retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1)
        );
        for bad in ["", "-1", "NaN", "inf", "soon"] {
            assert_eq!(retry_after_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn failed_attempts_fail_over_only_when_another_backend_exists() {
        assert!(!fail_over_through_upstream(0));
        assert!(!fail_over_through_upstream(1));
        assert!(fail_over_through_upstream(2));
        let headers = empty_attempt_headers("api.example.com", "https");
        assert!(headers.contains(&(":method", "GET")));
        assert!(headers.contains(&(":path", "/")));
        assert!(headers.contains(&(":authority", "api.example.com")));
        assert!(headers.contains(&("content-length", "0")));
        // Nothing else: no credential, no client header.
        assert_eq!(headers.len(), 5);
        assert_eq!(FAILED_ATTEMPT_STATUS.parse::<u16>(), Ok(503));
    }

    #[test]
    fn cooldown() {
        let c = Cooldown { until: 100 };
        assert_eq!(Cooldown::parse(&c.encode()), Some(c));
        assert_eq!(c.remaining(95), Some(5));
        assert_eq!(c.remaining(100), None);
        assert_eq!(Cooldown::parse(b"x"), None);
        assert_eq!(Cooldown::key("default/a"), "aigw.cooldown/default/a");
        assert_eq!(Cooldown::key("default/a#gpt-4o"), "aigw.cooldown/default/a");
        assert_eq!(service_of("default/a#m#x"), "default/a");
    }
}
