//! Claude on AWS Bedrock (`AWSAnthropic`): the Anthropic Messages request
//! becomes an InvokeModel call signed with SigV4, and the binary
//! event-stream answer of a streaming call becomes Anthropic SSE again.
//!
//! Request: `POST /model/{model id, URI-encoded}/invoke` (or
//! `/invoke-with-response-stream`), body = the client's body without
//! `model` and `stream`, with `anthropic_version` (the backend's
//! `schema.version`) unless the client gave one.
//!
//! Stream: each event-stream message of type `chunk` carries
//! `{"bytes":"<base64 of one Anthropic stream event>"}`; it goes out as
//! `event: <type>\ndata: <json>\n\n`. An exception message becomes an
//! Anthropic `error` event.

use crate::anthropic::StreamUsage;
use crate::config::{BackendConfig, SchemaName};
use crate::credentials::AwsCredential;
use crate::error::GatewayError;
use crate::eventstream::{Decoder, Message};
use crate::request::{parse_request, Endpoint};
use crate::sigv4::{self, Credentials, Payload, SigningInput, SigningSettings};
use crate::upstream::UpstreamRequest;
use crate::usage::Usage;
use serde_json::{json, Value};

/// `anthropic_version` when the backend names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// Bedrock's SigV4 signing name.
pub const SERVICE: &str = "bedrock";
/// Client headers Bedrock must not see (its version goes in the body).
const REMOVED_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta", "content-length"];

/// The InvokeModel path for `model`.
pub fn invoke_path(model: &str, stream: bool) -> String {
    let action = if stream {
        "invoke-with-response-stream"
    } else {
        "invoke"
    };
    format!(
        "/model/{}/{action}",
        sigv4::uri_encode(model.as_bytes(), true)
    )
}

/// Rewrites an Anthropic Messages request for Bedrock InvokeModel.
pub fn prepare(
    endpoint: Endpoint,
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    if endpoint != Endpoint::AnthropicMessages {
        return Err(GatewayError::client(
            404,
            "this endpoint is not available on an AWSAnthropic backend; use /anthropic/v1/messages",
        ));
    }
    let facts = parse_request(endpoint, body)?;
    let model = backend
        .model_name_override
        .as_deref()
        .unwrap_or(&facts.model);
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| GatewayError::bad_request("request body must be a JSON object"))?;
    object.shift_remove("model");
    object.shift_remove("stream");
    if !object.contains_key("anthropic_version") {
        let version = backend
            .version
            .as_deref()
            .unwrap_or(DEFAULT_ANTHROPIC_VERSION);
        object.insert("anthropic_version".into(), Value::String(version.into()));
    }
    Ok(UpstreamRequest {
        path: invoke_path(model, facts.stream),
        host: backend.host.clone(),
        body: Some(value.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// Moves the client's `anthropic-beta` header (comma-separated flags) into
/// the body's `anthropic_beta` list, where Bedrock reads it, unless the
/// body already has one.
pub fn add_beta(request: &mut UpstreamRequest, header: &str) {
    let flags: Vec<Value> = header
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| Value::String(f.to_string()))
        .collect();
    if flags.is_empty() {
        return;
    }
    let Some(body) = &request.body else { return };
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Some(object) = value.as_object_mut() else {
        return;
    };
    if object.contains_key("anthropic_beta") {
        return;
    }
    object.insert("anthropic_beta".into(), Value::Array(flags));
    request.body = Some(value.to_string().into_bytes());
}

/// The region to sign for: the policy's, else the one in a
/// `bedrock-runtime.<region>.amazonaws.com` host.
pub fn region(backend: &BackendConfig) -> Option<String> {
    if let Some(r) = backend
        .auth
        .as_ref()
        .and_then(|a| a.region.clone())
        .filter(|r| !r.is_empty())
    {
        return Some(r);
    }
    let host = backend.host.as_deref()?;
    let rest = host.strip_prefix("bedrock-runtime.")?;
    let (region, _) = rest.split_once('.')?;
    (!region.is_empty()).then(|| region.to_string())
}

/// The headers that sign `request` (prepared by [`prepare`]) at `now`
/// (Unix seconds): `x-amz-date`, maybe `x-amz-security-token`, and
/// `authorization`. Signed: `host`, `content-type` and those.
pub fn sign(
    request: &UpstreamRequest,
    backend: &BackendConfig,
    credential: &AwsCredential,
    now: u64,
) -> Result<Vec<(String, String)>, GatewayError> {
    let host = request.host.as_deref().ok_or_else(|| {
        GatewayError::internal("an AWS backend needs a hostname to sign requests for")
    })?;
    let region = region(backend)
        .ok_or_else(|| GatewayError::internal("no AWS region is configured for this backend"))?;
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let mut headers = vec![("host".to_string(), host.to_string())];
    headers.extend(
        request
            .set_headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .cloned(),
    );
    let body = request.body.as_deref().unwrap_or_default();
    let input = SigningInput {
        method: "POST",
        path,
        query,
        headers: &headers,
        payload: Payload::Bytes(body),
        service: SERVICE,
        region: &region,
        time: now,
        credentials: Credentials {
            access_key_id: &credential.access_key_id,
            secret_access_key: &credential.secret_access_key,
            session_token: credential.session_token.as_deref(),
        },
        settings: SigningSettings::default(),
    };
    sigv4::sign(&input)
        .map(|out| out.headers)
        .map_err(|e| GatewayError::internal(e.to_string()))
}

/// Whether the router role translates this backend's responses from
/// Bedrock's shapes.
pub fn is_bedrock(schema: SchemaName) -> bool {
    schema == SchemaName::AWSAnthropic
}

/// Turns Bedrock's event-stream into Anthropic SSE as it arrives.
#[derive(Debug, Default)]
pub struct EventStreamToSse {
    decoder: Decoder,
    usage: StreamUsage,
    /// Set once an error event was sent: nothing follows it.
    ended: bool,
}

impl EventStreamToSse {
    pub fn usage(&self) -> Option<Usage> {
        self.usage.usage()
    }

    /// The SSE bytes to send for this chunk of the Bedrock body.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        translate_stream(self, chunk, end_of_stream)
    }
}

impl StreamTranslation for EventStreamToSse {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn exception_type(exception: &str) -> &'static str {
        error_type(exception)
    }

    fn event(&mut self, m: &Message, out: &mut Vec<u8>) {
        if m.header_str(":event-type") != Some("chunk") {
            return;
        }
        let event = serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .and_then(|v| {
                v.get("bytes")
                    .and_then(Value::as_str)
                    .and_then(crate::base64::decode)
            })
            .and_then(|bytes| {
                serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .map(|v| (bytes, v))
            });
        let Some((bytes, value)) = event else {
            self.fail(
                "api_error",
                "Bedrock sent a stream chunk that is not an Anthropic event",
                out,
            );
            return;
        };
        self.usage.observe(&value);
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        // The type becomes a header line: keep it to one line.
        let kind: String = kind.chars().filter(|c| !c.is_control()).collect();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // serde_json's compact form has no raw newlines.
        if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
            out.extend_from_slice(value.to_string().as_bytes());
        } else {
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(b"\n\n");
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.ended = true;
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(body.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> bool {
        self.usage.is_complete()
    }
}

/// A translation of a Bedrock event-stream answer into the client's SSE
/// (InvokeModel's stream into Anthropic events here, ConverseStream into
/// OpenAI chunks in [`crate::converse`]): the parts [`translate_stream`]
/// leaves to it.
pub(crate) trait StreamTranslation {
    /// The decoder of Bedrock's frames.
    fn decoder(&mut self) -> &mut Decoder;
    /// Whether the client's stream has ended (an error or its end was
    /// sent): nothing more goes out.
    fn ended(&self) -> bool;
    /// The client API's error type for a Bedrock exception name.
    fn exception_type(exception: &str) -> &'static str;
    /// An event message (`:message-type` `event`, or none).
    fn event(&mut self, m: &Message, out: &mut Vec<u8>);
    /// Sends the client an error event of type `kind` that ends its stream.
    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>);
    /// Bedrock's stream ended between frames: closes the client's stream
    /// if the message was complete, and says whether it was.
    fn finish(&mut self, out: &mut Vec<u8>) -> bool;
}

/// The bytes to send the client for this chunk of a Bedrock event-stream:
/// frames are decoded and handed to `t`; a frame that does not decode, an
/// exception or error message, and a stream that ends before the message
/// is complete become an error event that ends the client's stream.
pub(crate) fn translate_stream<T: StreamTranslation>(
    t: &mut T,
    chunk: &[u8],
    end_of_stream: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    if t.ended() {
        return out;
    }
    match t.decoder().push(chunk) {
        Ok(messages) => {
            for m in messages {
                stream_message(t, &m, &mut out);
                if t.ended() {
                    return out;
                }
            }
        }
        Err(e) => {
            t.fail(
                "api_error",
                &format!("invalid response stream from Bedrock: {e}"),
                &mut out,
            );
            return out;
        }
    }
    if end_of_stream {
        if let Err(e) = t.decoder().finish() {
            t.fail(
                "api_error",
                &format!("invalid response stream from Bedrock: {e}"),
                &mut out,
            );
        } else if !t.finish(&mut out) {
            t.fail(
                "api_error",
                "Bedrock's stream ended before the message was complete",
                &mut out,
            );
        }
    }
    out
}

fn stream_message<T: StreamTranslation>(t: &mut T, m: &Message, out: &mut Vec<u8>) {
    match m.header_str(":message-type") {
        Some("event") | None => t.event(m, out),
        Some("exception") => {
            let kind = m.header_str(":exception-type").unwrap_or("exception");
            let text = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .or_else(|| v.get("Message"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
            t.fail(T::exception_type(kind), &format!("{kind}: {text}"), out);
        }
        Some(_) => {
            let code = m.header_str(":error-code").unwrap_or("error");
            let text = m.header_str(":error-message").unwrap_or("");
            t.fail("api_error", &format!("{code}: {text}"), out);
        }
    }
}

/// Anthropic's error type for a Bedrock exception name.
pub fn error_type(exception: &str) -> &'static str {
    match exception {
        "throttlingException" | "ThrottlingException" => "rate_limit_error",
        "validationException" | "ValidationException" => "invalid_request_error",
        "accessDeniedException" | "AccessDeniedException" => "permission_error",
        "serviceUnavailableException" | "ServiceUnavailableException" => "overloaded_error",
        "modelNotReadyException" | "ModelNotReadyException" => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error type for a Bedrock HTTP status.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A Bedrock error body (`{"message": ...}`) in Anthropic's error shape.
/// One already in that shape (the gateway's own, e.g. from the upstream
/// role) is kept as it is.
pub fn error_body(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    if parsed
        .as_ref()
        .is_some_and(|v| v["type"] == "error" && v["error"]["message"].is_string())
    {
        return body.to_vec();
    }
    let message = parsed
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("Bedrock answered HTTP {status}"));
    json!({"type": "error", "error": {"type": error_type_for_status(status), "message": message}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKind, BackendAuth};
    use crate::eventstream::{encode, Header};

    fn backend() -> BackendConfig {
        BackendConfig {
            schema: SchemaName::AWSAnthropic,
            version: Some("bedrock-2023-05-31".into()),
            host: Some("bedrock-runtime.us-west-2.amazonaws.com".into()),
            auth: Some(BackendAuth {
                kind: AuthKind::AwsSigV4,
                credential: "default/bedrock-policy".into(),
                region: Some("us-west-2".into()),
                project: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn golden_request() {
        let body = br#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let r = prepare(Endpoint::AnthropicMessages, &backend(), body).unwrap();
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
        );
        assert_eq!(
            String::from_utf8(r.body.clone().unwrap()).unwrap(),
            r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}],"anthropic_version":"bedrock-2023-05-31"}"#
        );
        assert!(r.remove_headers.contains(&"anthropic-version"));
        let body = br#"{"model":"m","anthropic_version":"mine","messages":[]}"#;
        let mut b = backend();
        b.model_name_override = Some("us.anthropic.claude:1".into());
        let r = prepare(Endpoint::AnthropicMessages, &b, body).unwrap();
        assert_eq!(r.path, "/model/us.anthropic.claude%3A1/invoke");
        assert_eq!(
            String::from_utf8(r.body.unwrap()).unwrap(),
            r#"{"anthropic_version":"mine","messages":[]}"#
        );
        assert_eq!(
            prepare(Endpoint::ChatCompletions, &backend(), body)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            prepare(Endpoint::AnthropicMessages, &backend(), b"[")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn beta_header_goes_into_the_body() {
        let body = br#"{"model":"m","messages":[]}"#;
        let mut r = prepare(Endpoint::AnthropicMessages, &backend(), body).unwrap();
        add_beta(&mut r, " a-2025-01-01 , b ,");
        assert_eq!(
            String::from_utf8(r.body.clone().unwrap()).unwrap(),
            r#"{"messages":[],"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a-2025-01-01","b"]}"#
        );
        let before = r.body.clone();
        add_beta(&mut r, "c");
        assert_eq!(r.body, before, "the client's own anthropic_beta wins");
        add_beta(&mut r, " , ");
        assert_eq!(r.body, before);
    }

    #[test]
    fn region_from_policy_or_host() {
        assert_eq!(region(&backend()).as_deref(), Some("us-west-2"));
        let mut b = backend();
        b.auth = None;
        b.host = Some("bedrock-runtime.eu-central-1.amazonaws.com".into());
        assert_eq!(region(&b).as_deref(), Some("eu-central-1"));
        b.host = Some("example.com".into());
        assert_eq!(region(&b), None);
    }

    #[test]
    fn signs_like_the_aws_sdk() {
        let b = backend();
        let r = prepare(
            Endpoint::AnthropicMessages,
            &b,
            br#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","messages":[]}"#,
        )
        .unwrap();
        let cred = AwsCredential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("TOKEN".into()),
        };
        let headers = sign(&r, &b, &cred, 1_700_000_000).unwrap();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("x-amz-date").as_deref(), Some("20231114T221320Z"));
        assert_eq!(get("x-amz-security-token").as_deref(), Some("TOKEN"));
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="), "{auth}");

        // The same request signed by the AWS SDK's signer.
        use aws_credential_types::Credentials as SdkCredentials;
        use aws_sigv4::http_request::{
            sign as sdk_sign, SignableBody, SignableRequest, SigningSettings as SdkSettings,
        };
        use aws_sigv4::sign::v4;
        let identity = SdkCredentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("TOKEN".into()),
            None,
            "test",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-west-2")
            .name("bedrock")
            .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
            .settings(SdkSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("https://bedrock-runtime.us-west-2.amazonaws.com{}", r.path);
        let body = r.body.clone().unwrap();
        let signable = SignableRequest::new(
            "POST",
            &url,
            [
                ("host", "bedrock-runtime.us-west-2.amazonaws.com"),
                ("content-type", "application/json"),
            ]
            .into_iter(),
            SignableBody::Bytes(&body),
        )
        .unwrap();
        let (instructions, _) = sdk_sign(signable, &params).unwrap().into_parts();
        let sdk_auth = instructions
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.to_string())
            .unwrap();
        assert_eq!(auth, sdk_auth);
    }

    fn chunk(event: &str) -> Vec<u8> {
        // Base64 via the encoder-free route: build it by hand for the test.
        let payload = format!(r#"{{"bytes":"{}","p":"abc"}}"#, b64(event.as_bytes()));
        encode(
            &[
                Header::string(":event-type", "chunk"),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn b64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    const EVENTS: [&str; 6] = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":14,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":6}}"#,
        r#"{"type":"message_stop"}"#,
    ];

    #[test]
    fn golden_stream_in_any_chunking() {
        let stream: Vec<u8> = EVENTS.iter().flat_map(|e| chunk(e)).collect();
        let mut want = String::new();
        for e in EVENTS {
            let v: Value = serde_json::from_str(e).unwrap();
            want.push_str(&format!(
                "event: {}\ndata: {e}\n\n",
                v["type"].as_str().unwrap()
            ));
        }
        for size in [1, 7, 100, stream.len()] {
            let mut t = EventStreamToSse::default();
            let mut out = Vec::new();
            let parts: Vec<&[u8]> = stream.chunks(size).collect();
            for (i, p) in parts.iter().enumerate() {
                out.extend(t.push(p, i + 1 == parts.len()));
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "chunk size {size}");
            let u = t.usage().unwrap();
            assert_eq!((u.input, u.output, u.total), (14, 6, 20));
        }
    }

    #[test]
    fn exception_becomes_error_event() {
        let mut stream = chunk(EVENTS[0]);
        stream.extend(encode(
            &[
                Header::string(":exception-type", "throttlingException"),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "exception"),
            ],
            br#"{"message":"Too many requests"}"#,
        ));
        stream.extend(chunk(EVENTS[5]));
        let mut t = EventStreamToSse::default();
        let out = String::from_utf8(t.push(&stream, true)).unwrap();
        assert!(out.starts_with("event: message_start\n"));
        assert!(out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"throttlingException: Too many requests\"}}\n\n"), "{out}");
        assert!(!out.contains("message_stop"));
        assert!(t.push(&chunk(EVENTS[5]), true).is_empty());
    }

    #[test]
    fn a_stream_that_stops_before_message_stop_ends_with_an_error_event() {
        let stream: Vec<u8> = EVENTS[..3].iter().flat_map(|e| chunk(e)).collect();
        let mut t = EventStreamToSse::default();
        let out = String::from_utf8(t.push(&stream, true)).unwrap();
        assert!(out.starts_with("event: message_start\n"));
        assert!(
            out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Bedrock's stream ended before the message was complete\"}}\n\n"),
            "{out}"
        );
    }

    #[test]
    fn garbage_and_truncation_become_one_error_event() {
        let mut t = EventStreamToSse::default();
        let out = String::from_utf8(t.push(b"\x00\x00\x00\x10garbage-garbage!", false)).unwrap();
        assert!(out.starts_with("event: error\n"), "{out}");
        let mut t = EventStreamToSse::default();
        let frame = chunk(EVENTS[3]);
        let out = t.push(&frame[..frame.len() - 3], true);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("ended inside a frame"));
        let mut t = EventStreamToSse::default();
        let bad = encode(
            &[Header::string(":event-type", "chunk")],
            br#"{"bytes":"!!"}"#,
        );
        assert!(String::from_utf8(t.push(&bad, true))
            .unwrap()
            .starts_with("event: error"));
    }

    #[test]
    fn error_bodies() {
        let b = error_body(
            403,
            br#"{"message":"The request signature we calculated does not match"}"#,
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"type":"error","error":{"type":"permission_error","message":"The request signature we calculated does not match"}}"#
        );
        let own = br#"{"type":"error","error":{"type":"api_error","message":"the upstream credential is not available"}}"#;
        assert_eq!(
            error_body(503, own),
            own.to_vec(),
            "already Anthropic-shaped"
        );
        let b = error_body(500, b"<html>");
        assert!(String::from_utf8(b)
            .unwrap()
            .contains("Bedrock answered HTTP 500"));
    }
}
