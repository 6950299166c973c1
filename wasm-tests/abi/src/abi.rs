//! Numbers and wire formats of the proxy-wasm ABI 0.2.1, as the Rust
//! `proxy-wasm` 0.2.5 SDK uses them.

use std::fmt;

/// `proxy_result_t`: what a host function returns to the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// What a stream callback returned (`proxy_action_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    /// Any other number: a bug in the module.
    Other(u32),
}

impl Action {
    pub fn from_raw(raw: i32) -> Action {
        match raw {
            0 => Action::Continue,
            1 => Action::Pause,
            n => Action::Other(n as u32),
        }
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub fn from_raw(raw: i32) -> Option<MapType> {
        Some(match raw {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcReceiveInitialMetadata,
            5 => MapType::GrpcReceiveTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    pub fn from_raw(raw: i32) -> Option<BufferType> {
        Some(match raw {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`, for `proxy_continue_stream` and `proxy_close_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream,
}

impl StreamType {
    pub fn from_raw(raw: i32) -> Option<StreamType> {
        Some(match raw {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
    Other(u32),
}

impl LogLevel {
    pub fn from_raw(raw: i32) -> LogLevel {
        match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            n => LogLevel::Other(n as u32),
        }
    }
}

/// An ordered header map with byte values, as a proxy keeps it. Keys are
/// lower-cased on the way in, as Envoy does.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.add(k, v.as_bytes());
        }
        h
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first value of `key`, lossily as text.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_bytes(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn get_bytes(&self, key: &str) -> Option<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// All values of `key`.
    pub fn get_all(&self, key: &str) -> Vec<String> {
        let key = key.to_ascii_lowercase();
        self.0
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get_bytes(key).is_some()
    }

    pub fn add(&mut self, key: &str, value: &[u8]) {
        self.0.push((key.to_ascii_lowercase(), value.to_vec()));
    }

    /// Replaces every value of `key` with one value (Envoy's `setCopy`).
    pub fn replace(&mut self, key: &str, value: &[u8]) {
        let key = key.to_ascii_lowercase();
        match self.0.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                self.0[first].1 = value.to_vec();
                let mut i = 0;
                self.0.retain(|(k, _)| {
                    let keep = i <= first || *k != key;
                    i += 1;
                    keep
                });
            }
            None => self.0.push((key, value.to_vec())),
        }
    }

    pub fn remove(&mut self, key: &str) {
        let key = key.to_ascii_lowercase();
        self.0.retain(|(k, _)| *k != key);
    }

    /// The proxy-wasm serialization: count (u32 LE), then a (key length,
    /// value length) pair of u32 LE per entry, then each key and value
    /// followed by a NUL byte.
    pub fn serialize(&self) -> Vec<u8> {
        serialize_map(self.0.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned())),
            )
            .finish()
    }
}

/// One entry of a serialized map: key and value bytes.
pub type RawPair = (Vec<u8>, Vec<u8>);

pub fn serialize_map<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let count = pairs.clone().count();
    let mut out = Vec::new();
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a map the module serialized. Any inconsistency is an error: the
/// module produced bytes no proxy could read.
pub fn deserialize_map(bytes: &[u8]) -> Result<Vec<RawPair>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, String> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("map truncated at byte {at} of {}", bytes.len()))
    };
    let count = word(0)?;
    let mut data = 4usize
        .checked_add(count.checked_mul(8).ok_or("map count overflows")?)
        .ok_or("map count overflows")?;
    if data > bytes.len() {
        return Err(format!(
            "map says {count} entries but has {} bytes",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let mut take = |len: usize| -> Result<Vec<u8>, String> {
            let end = data
                .checked_add(len)
                .filter(|end| *end < bytes.len())
                .ok_or_else(|| format!("map entry {i} runs past the end"))?;
            if bytes[end] != 0 {
                return Err(format!("map entry {i} is not NUL-terminated"));
            }
            let v = bytes[data..end].to_vec();
            data = end + 1;
            Ok(v)
        };
        let key = take(key_len)?;
        let value = take(value_len)?;
        out.push((key, value));
    }
    if data != bytes.len() {
        return Err(format!(
            "map has {} trailing bytes",
            bytes.len().saturating_sub(data)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_matches_the_sdk_layout() {
        let h = Headers::from_pairs(&[(":method", "GET"), ("X-A", "")]);
        let bytes = h.serialize();
        let mut want = vec![2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b":method\0GET\0x-a\0\0");
        assert_eq!(bytes, want);
        let back = deserialize_map(&bytes).unwrap();
        assert_eq!(back[0], (b":method".to_vec(), b"GET".to_vec()));
        assert_eq!(back[1], (b"x-a".to_vec(), Vec::new()));
    }

    #[test]
    fn malformed_maps_are_errors() {
        assert!(deserialize_map(&[1, 0, 0, 0]).is_err());
        assert!(deserialize_map(&[255, 255, 255, 255]).is_err());
        let mut bad = Headers::from_pairs(&[("a", "b")]).serialize();
        bad.pop();
        assert!(deserialize_map(&bad).is_err());
    }

    #[test]
    fn replace_keeps_one_value() {
        let mut h = Headers::from_pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        h.replace("A", b"x");
        assert_eq!(h.get_all("a"), vec!["x"]);
        assert_eq!(h.0[0].0, "a");
        h.remove("a");
        assert!(!h.contains("a"));
        assert_eq!(h.len(), 1);
    }
}
