//! Bedrock InvokeModel calls that are not chat: OpenAI embeddings on an
//! `AWSBedrock` backend and Anthropic `count_tokens` on an `AWSAnthropic`
//! backend (Bedrock's CountTokens API). Both are signed with SigV4 like the
//! other Bedrock paths (`host.rs` signs any request to an AWS backend) and
//! both answer one JSON body, which the router role translates whole.
//!
//! Embeddings (`POST /v1/embeddings` -> `POST /model/{id}/invoke`), picked
//! by the model id (after `modelNameOverride`; an ARN's last segment, a
//! geography prefix such as `us.` ignored):
//! - `amazon.titan-embed-*`: `{"inputText", "dimensions", "normalize"}` ->
//!   `{"embedding": [...], "inputTextTokenCount": N}`. One text per call:
//!   a list of more than one input is a 400. `dimensions` goes to
//!   `dimensions` (text v2; `embeddingConfig.outputEmbeddingLength` on the
//!   image model; a 400 on text v1, which has a fixed size); `normalize`
//!   defaults to true on text v2 (OpenAI's vectors are normalized).
//! - `cohere.embed-*`: `{"texts": [...], "input_type", "embedding_types":
//!   ["float"]}` -> `{"embeddings": {"float": [[...]]}}` (or the older
//!   `{"embeddings": [[...]]}`); `input_type` defaults to
//!   `search_document` (a client may send its own, and `truncate`, as extra
//!   body fields); `dimensions` -> `output_dimension` on v4, a 400 on v3.
//!   Cohere reports no token count in its body: usage comes from Bedrock's
//!   `x-amzn-bedrock-input-token-count` response header (also read for
//!   Titan when its body has none).
//!
//! Token arrays as `input` are refused (Bedrock takes text).
//! `encoding_format: "base64"` is produced by the gateway from the floats
//! (little-endian f32, as OpenAI encodes them). The answer is OpenAI's
//! `{"object":"list","data":[{"object":"embedding","index","embedding"}],
//! "model","usage":{"prompt_tokens","total_tokens"}}` with the client's
//! model name.
//!
//! CountTokens (`POST /anthropic/v1/messages/count_tokens` ->
//! `POST /model/{id}/count-tokens`): the Messages body becomes the
//! InvokeModel body Bedrock would take (no `model`, `anthropic_version`
//! from `schema.version`, `max_tokens` 1 when absent since InvokeModel
//! requires it), base64 in `{"input":{"invokeModel":{"body":...}}}`; the
//! answer `{"inputTokens": N}` becomes `{"input_tokens": N}`. CountTokens
//! takes foundation-model ids, so a cross-region inference profile prefix
//! (`us.anthropic...`) is dropped from the path. Bedrock errors take
//! Anthropic's error shape (`bedrock::error_body`).

use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::request::{parse_request, Endpoint};
use crate::response::MAX_ACCOUNTED_BODY;
use crate::upstream::UpstreamRequest;
use crate::usage::Usage;
use serde_json::{json, Map, Value};

/// The Bedrock response header with the input tokens of an InvokeModel call.
pub const INPUT_TOKENS_HEADER: &str = "x-amzn-bedrock-input-token-count";

const REMOVED_HEADERS: &[&str] = &["anthropic-version", "anthropic-beta", "content-length"];

/// Which embeddings API a Bedrock model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `amazon.titan-embed-text-v1`: text only, fixed size.
    TitanV1,
    /// `amazon.titan-embed-text-v2` and later text models.
    Titan,
    /// `amazon.titan-embed-image-*` (text input here).
    TitanImage,
    /// `cohere.embed-english-v3`, `cohere.embed-multilingual-v3`.
    CohereV3,
    /// `cohere.embed-v4` and later.
    Cohere,
}

/// A model id as Bedrock's foundation-model id: the last segment of an
/// ARN, without a geography prefix (`us.`, `eu.`, `apac.`, `global.`).
pub fn base_model_id(model: &str) -> &str {
    let id = model.rsplit('/').next().unwrap_or(model);
    if let Some((first, rest)) = id.split_once('.') {
        let geo = !first.is_empty()
            && first.len() <= 7
            && first.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        let provider = ["anthropic.", "amazon.", "cohere.", "meta.", "mistral."];
        if geo && provider.iter().any(|p| rest.starts_with(p)) {
            return rest;
        }
    }
    id
}

/// The embeddings family of a Bedrock model id, if the gateway knows it.
pub fn family(model: &str) -> Option<Family> {
    let id = base_model_id(model);
    if let Some(rest) = id.strip_prefix("amazon.titan-embed") {
        return Some(if rest.starts_with("-text-v1") {
            Family::TitanV1
        } else if rest.starts_with("-image") {
            Family::TitanImage
        } else {
            Family::Titan
        });
    }
    if let Some(rest) = id.strip_prefix("cohere.embed") {
        return Some(if rest.ends_with("-v3") || rest.contains("-v3:") {
            Family::CohereV3
        } else {
            Family::Cohere
        });
    }
    None
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::bad_request(message)
        .with_param(param)
        .with_code("invalid_value")
}

/// The texts of an OpenAI `input`.
fn texts(input: Option<&Value>) -> Result<Vec<String>, GatewayError> {
    let tokens = || {
        invalid(
            "Bedrock embeddings take text: token arrays are not supported as input",
            "input",
        )
    };
    let list = match input {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    Value::Number(_) | Value::Array(_) => return Err(tokens()),
                    _ => {
                        return Err(invalid(
                            "input must be a string or a list of strings",
                            "input",
                        ))
                    }
                }
            }
            out
        }
        None | Some(Value::Null) => {
            return Err(invalid("you must provide an input parameter", "input"))
        }
        Some(_) => {
            return Err(invalid(
                "input must be a string or a list of strings",
                "input",
            ))
        }
    };
    if list.is_empty() {
        return Err(invalid("input must not be empty", "input"));
    }
    Ok(list)
}

/// Whether the client asked for base64 embeddings (checked by `prepare`).
pub fn wants_base64(body: &[u8]) -> bool {
    // Every embeddings request passes here: parse only when it may say so.
    if !body.windows(6).any(|w| w == b"base64") {
        return false;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("encoding_format").and_then(Value::as_str) == Some("base64"))
}

/// The model id this backend calls for `client_model`.
pub fn model_for<'a>(backend: &'a BackendConfig, client_model: &'a str) -> &'a str {
    backend
        .model_name_override
        .as_deref()
        .unwrap_or(client_model)
}

/// Rewrites an OpenAI embeddings request for Bedrock InvokeModel.
pub fn prepare_embeddings(
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let facts = parse_request(Endpoint::Embeddings, body)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("invalid JSON: {e}")))?;
    let model = model_for(backend, &facts.model);
    let family = family(model).ok_or_else(|| {
        GatewayError::client(
            400,
            format!(
                "embeddings on Bedrock are supported for Amazon Titan (amazon.titan-embed-*) and Cohere (cohere.embed-*) models, not {model:?}"
            ),
        )
        .with_param("model")
        .with_code("unsupported_model")
    })?;
    match value.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "float" || f == "base64" => {}
        Some(_) => {
            return Err(invalid(
                "encoding_format must be \"float\" or \"base64\"",
                "encoding_format",
            ))
        }
    }
    let dimensions = match value.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|d| *d > 0) {
            Some(d) => Some(d),
            None => {
                return Err(invalid(
                    "dimensions must be a positive integer",
                    "dimensions",
                ))
            }
        },
    };
    let texts = texts(value.get("input"))?;
    let mut out = Map::new();
    match family {
        Family::TitanV1 | Family::Titan | Family::TitanImage => {
            if texts.len() > 1 {
                return Err(invalid(
                    format!(
                        "Amazon Titan embeddings take one input per request; this request has {} (send them one at a time, or use a Cohere model)",
                        texts.len()
                    ),
                    "input",
                ));
            }
            out.insert("inputText".into(), Value::String(texts[0].clone()));
            match (family, dimensions) {
                (Family::TitanV1, Some(_)) => {
                    return Err(invalid(
                        "amazon.titan-embed-text-v1 has a fixed size; dimensions is not supported",
                        "dimensions",
                    ))
                }
                (Family::TitanImage, Some(d)) => {
                    out.insert(
                        "embeddingConfig".into(),
                        json!({"outputEmbeddingLength": d}),
                    );
                }
                (Family::Titan, Some(d)) => {
                    out.insert("dimensions".into(), json!(d));
                }
                _ => {}
            }
            if family == Family::Titan {
                let normalize = value
                    .get("normalize")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                out.insert("normalize".into(), Value::Bool(normalize));
            }
        }
        Family::CohereV3 | Family::Cohere => {
            out.insert(
                "texts".into(),
                Value::Array(texts.into_iter().map(Value::String).collect()),
            );
            let input_type = match value.get("input_type") {
                None | Some(Value::Null) => "search_document".to_string(),
                Some(Value::String(t)) => t.clone(),
                Some(_) => return Err(invalid("input_type must be a string", "input_type")),
            };
            out.insert("input_type".into(), Value::String(input_type));
            out.insert("embedding_types".into(), json!(["float"]));
            if let Some(t) = value.get("truncate").filter(|t| t.is_string()) {
                out.insert("truncate".into(), t.clone());
            }
            match (family, dimensions) {
                (Family::CohereV3, Some(_)) => {
                    return Err(invalid(
                        "Cohere Embed v3 has a fixed size; dimensions is not supported (Cohere Embed v4 takes it)",
                        "dimensions",
                    ))
                }
                (_, Some(d)) => {
                    out.insert("output_dimension".into(), json!(d));
                }
                _ => {}
            }
        }
    }
    Ok(UpstreamRequest {
        path: crate::bedrock::invoke_path(model, false),
        host: backend.host.clone(),
        body: Some(Value::Object(out).to_string().into_bytes()),
        set_headers: vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// Rewrites an Anthropic `count_tokens` request for Bedrock CountTokens.
pub fn prepare_count_tokens(
    backend: &BackendConfig,
    body: &[u8],
) -> Result<UpstreamRequest, GatewayError> {
    let facts = parse_request(Endpoint::AnthropicCountTokens, body)?;
    // The InvokeModel body the same request would send.
    let invoke = crate::bedrock::prepare(Endpoint::AnthropicMessages, backend, body)?;
    let mut inner: Value = serde_json::from_slice(invoke.body.as_deref().unwrap_or(b"{}"))
        .map_err(|e| GatewayError::internal(format!("count_tokens body: {e}")))?;
    if let Some(object) = inner.as_object_mut() {
        if !object.contains_key("max_tokens") {
            object.insert("max_tokens".into(), json!(1));
        }
    }
    let encoded = crate::base64::encode(inner.to_string().as_bytes());
    let wrapped = json!({"input": {"invokeModel": {"body": encoded}}});
    let model = base_model_id(model_for(backend, &facts.model));
    Ok(UpstreamRequest {
        path: format!(
            "/model/{}/count-tokens",
            crate::sigv4::uri_encode(model.as_bytes(), true)
        ),
        host: backend.host.clone(),
        body: Some(wrapped.to_string().into_bytes()),
        set_headers: vec![("content-type".into(), "application/json".into())],
        remove_headers: REMOVED_HEADERS.to_vec(),
        default_headers: Vec::new(),
    })
}

/// Little-endian f32 bytes of `values`, base64: OpenAI's base64 encoding.
fn base64_floats(values: &[Value]) -> Option<String> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        let f = v.as_f64()? as f32;
        bytes.extend_from_slice(&f.to_le_bytes());
    }
    Some(crate::base64::encode(&bytes))
}

/// Bedrock's embeddings answer as OpenAI's, with its usage.
pub fn embeddings_response(
    family: Family,
    body: &[u8],
    header_tokens: Option<u64>,
    model: &str,
    base64: bool,
) -> Option<(Vec<u8>, Usage)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let vectors: Vec<&Vec<Value>> = match family {
        Family::TitanV1 | Family::Titan | Family::TitanImage => {
            vec![v.get("embedding")?.as_array()?]
        }
        Family::CohereV3 | Family::Cohere => {
            let embeddings = v.get("embeddings")?;
            let list = match embeddings {
                Value::Object(by_type) => by_type.get("float")?.as_array()?,
                Value::Array(list) => list,
                _ => return None,
            };
            list.iter()
                .map(Value::as_array)
                .collect::<Option<Vec<_>>>()?
        }
    };
    let mut data = Vec::with_capacity(vectors.len());
    for (index, vector) in vectors.into_iter().enumerate() {
        if !vector.iter().all(Value::is_number) {
            return None;
        }
        let embedding = if base64 {
            Value::String(base64_floats(vector)?)
        } else {
            Value::Array(vector.clone())
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    let tokens = v
        .get("inputTextTokenCount")
        .and_then(Value::as_u64)
        .or(header_tokens)
        .or_else(|| {
            v.pointer("/meta/billed_units/input_tokens")
                .and_then(Value::as_u64)
        })
        .unwrap_or(0);
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    let usage = Usage {
        input: tokens,
        total: tokens,
        ..Default::default()
    };
    Some((out.to_string().into_bytes(), usage))
}

/// Bedrock's CountTokens answer as Anthropic's.
pub fn count_tokens_response(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let n = v.get("inputTokens")?.as_u64()?;
    Some(json!({"input_tokens": n}).to_string().into_bytes())
}

/// What the router role translates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Embeddings {
        family: Option<Family>,
        model: String,
        base64: bool,
        header_tokens: Option<u64>,
    },
    CountTokens,
}

/// One whole-body answer being gathered and translated at its end.
#[derive(Debug)]
pub struct Buffered {
    kind: Kind,
    status: u16,
    body: Vec<u8>,
    overflow: bool,
    usage: Option<Usage>,
}

impl Buffered {
    pub fn new(kind: Kind, status: u16) -> Buffered {
        Buffered {
            kind,
            status,
            body: Vec::new(),
            overflow: false,
            usage: None,
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Gathers a chunk; at the end, the bytes the client gets.
    pub fn push(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.overflow || self.body.len().saturating_add(chunk.len()) > MAX_ACCOUNTED_BODY {
            self.overflow = true;
            self.body = Vec::new();
        } else {
            self.body.extend_from_slice(chunk);
        }
        if !end_of_stream {
            return Vec::new();
        }
        let unreadable = |what: &str| {
            GatewayError::upstream(502, format!("the gateway could not read Bedrock's {what}"))
                .with_code("upstream_response_error")
        };
        match &self.kind {
            Kind::Embeddings {
                family,
                model,
                base64,
                header_tokens,
            } => {
                if self.status != 200 {
                    return crate::chat::error_body(self.status, &self.body, "Bedrock");
                }
                let translated = family.filter(|_| !self.overflow).and_then(|f| {
                    embeddings_response(f, &self.body, *header_tokens, model, *base64)
                });
                match translated {
                    Some((out, usage)) => {
                        self.usage = Some(usage);
                        out
                    }
                    None => unreadable("embeddings answer").body(crate::error::ErrorShape::OpenAi),
                }
            }
            Kind::CountTokens => {
                if self.status != 200 {
                    return crate::bedrock::error_body(self.status, &self.body);
                }
                match count_tokens_response(&self.body).filter(|_| !self.overflow) {
                    Some(out) => out,
                    None => {
                        unreadable("count-tokens answer").body(crate::error::ErrorShape::Anthropic)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKind, BackendAuth, SchemaName};

    fn backend(schema: SchemaName) -> BackendConfig {
        BackendConfig {
            schema,
            host: Some("bedrock-runtime.us-west-2.amazonaws.com".into()),
            auth: Some(BackendAuth {
                kind: AuthKind::AwsSigV4,
                credential: "default/p".into(),
                region: Some("us-west-2".into()),
                project: None,
            }),
            ..Default::default()
        }
    }

    fn body_of(r: &UpstreamRequest) -> Value {
        serde_json::from_slice(r.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn families_by_model_id() {
        let cases = [
            ("amazon.titan-embed-text-v2:0", Some(Family::Titan)),
            ("amazon.titan-embed-text-v1", Some(Family::TitanV1)),
            ("amazon.titan-embed-g1-text-02", Some(Family::Titan)),
            ("amazon.titan-embed-image-v1", Some(Family::TitanImage)),
            ("cohere.embed-english-v3", Some(Family::CohereV3)),
            ("cohere.embed-multilingual-v3:0", Some(Family::CohereV3)),
            ("cohere.embed-v4:0", Some(Family::Cohere)),
            ("us.cohere.embed-v4:0", Some(Family::Cohere)),
            (
                "arn:aws:bedrock:us-west-2::foundation-model/amazon.titan-embed-text-v2:0",
                Some(Family::Titan),
            ),
            ("anthropic.claude-3-haiku-20240307-v1:0", None),
            ("amazon.nova-pro-v1:0", None),
            ("", None),
        ];
        for (model, want) in cases {
            assert_eq!(family(model), want, "{model}");
        }
        assert_eq!(
            base_model_id("us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            "anthropic.claude-3-5-haiku-20241022-v1:0"
        );
        assert_eq!(
            base_model_id("amazon.titan-embed-text-v2:0"),
            "amazon.titan-embed-text-v2:0"
        );
    }

    #[test]
    fn golden_titan_request() {
        let b = backend(SchemaName::AWSBedrock);
        let r = prepare_embeddings(
            &b,
            br#"{"model":"amazon.titan-embed-text-v2:0","input":"hello","dimensions":256,"encoding_format":"base64","user":"u"}"#,
        )
        .unwrap();
        assert_eq!(r.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(
            String::from_utf8(r.body.clone().unwrap()).unwrap(),
            r#"{"inputText":"hello","dimensions":256,"normalize":true}"#
        );
        assert!(r
            .set_headers
            .contains(&("content-type".into(), "application/json".into())));
        let r = prepare_embeddings(
            &b,
            br#"{"model":"amazon.titan-embed-text-v2:0","input":["one"],"normalize":false}"#,
        )
        .unwrap();
        assert_eq!(body_of(&r), json!({"inputText": "one", "normalize": false}));
        let r = prepare_embeddings(
            &b,
            br#"{"model":"amazon.titan-embed-image-v1","input":"x","dimensions":384}"#,
        )
        .unwrap();
        assert_eq!(
            body_of(&r),
            json!({"inputText": "x", "embeddingConfig": {"outputEmbeddingLength": 384}})
        );
        let r = prepare_embeddings(&b, br#"{"model":"amazon.titan-embed-text-v1","input":"x"}"#)
            .unwrap();
        assert_eq!(body_of(&r), json!({"inputText": "x"}));
    }

    #[test]
    fn golden_cohere_request() {
        let mut b = backend(SchemaName::AWSBedrock);
        let r = prepare_embeddings(
            &b,
            br#"{"model":"cohere.embed-english-v3","input":["a","b"]}"#,
        )
        .unwrap();
        assert_eq!(r.path, "/model/cohere.embed-english-v3/invoke");
        assert_eq!(
            String::from_utf8(r.body.clone().unwrap()).unwrap(),
            r#"{"texts":["a","b"],"input_type":"search_document","embedding_types":["float"]}"#
        );
        b.model_name_override = Some("cohere.embed-v4:0".into());
        let r = prepare_embeddings(
            &b,
            br#"{"model":"my-embedder","input":"q","input_type":"search_query","truncate":"RIGHT","dimensions":512}"#,
        )
        .unwrap();
        assert_eq!(r.path, "/model/cohere.embed-v4%3A0/invoke");
        assert_eq!(
            body_of(&r),
            json!({"texts": ["q"], "input_type": "search_query", "embedding_types": ["float"],
                   "truncate": "RIGHT", "output_dimension": 512})
        );
    }

    #[test]
    fn refused_requests_say_why() {
        let b = backend(SchemaName::AWSBedrock);
        let cases: [(&[u8], &str); 12] = [
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":["a","b"]}"#,
                "input",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":[1,2,3]}"#,
                "input",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":[[1,2]]}"#,
                "input",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":[]}"#,
                "input",
            ),
            (br#"{"model":"amazon.titan-embed-text-v2:0"}"#, "input"),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":{}}"#,
                "input",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":"x","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v2:0","input":"x","dimensions":-1}"#,
                "dimensions",
            ),
            (
                br#"{"model":"amazon.titan-embed-text-v1","input":"x","dimensions":256}"#,
                "dimensions",
            ),
            (
                br#"{"model":"cohere.embed-english-v3","input":"x","dimensions":256}"#,
                "dimensions",
            ),
            (
                br#"{"model":"cohere.embed-english-v3","input":"x","input_type":7}"#,
                "input_type",
            ),
            (br#"{"model":"amazon.nova-pro-v1:0","input":"x"}"#, "model"),
        ];
        for (body, param) in cases {
            let e = prepare_embeddings(&b, body).unwrap_err();
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(body));
            assert_eq!(
                e.param.as_deref(),
                Some(param),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = prepare_embeddings(
            &b,
            br#"{"model":"amazon.titan-embed-text-v2:0","input":["a","b"]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("one input per request"), "{}", e.message);
        assert_eq!(prepare_embeddings(&b, b"[").unwrap_err().status, 400);
    }

    #[test]
    fn golden_titan_and_cohere_responses() {
        let (out, usage) = embeddings_response(
            Family::Titan,
            br#"{"embedding":[0.5,-1.25,3],"inputTextTokenCount":7,"embeddingsByType":{"float":[0.5,-1.25,3]}}"#,
            Some(99),
            "my-titan",
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1.25,3]}],"model":"my-titan","usage":{"prompt_tokens":7,"total_tokens":7}}"#
        );
        assert_eq!((usage.input, usage.output, usage.total), (7, 0, 7));
        let (out, _) = embeddings_response(
            Family::Titan,
            br#"{"embedding":[0.5,-1.25],"inputTextTokenCount":7}"#,
            None,
            "m",
            true,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        // 0.5f32 = 00 00 00 3f, -1.25f32 = 00 00 a0 bf
        assert_eq!(v["data"][0]["embedding"], "AAAAPwAAoL8=");
        let (out, usage) = embeddings_response(
            Family::CohereV3,
            br#"{"id":"x","embeddings":{"float":[[0.1,0.2],[0.3,0.4]]},"response_type":"embeddings_by_type","texts":["a","b"]}"#,
            Some(4),
            "cohere",
            false,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["data"][1],
            json!({"object":"embedding","index":1,"embedding":[0.3,0.4]})
        );
        assert_eq!(usage.input, 4);
        let (out, usage) = embeddings_response(
            Family::Cohere,
            br#"{"embeddings":[[1]],"response_type":"embeddings_floats"}"#,
            None,
            "c",
            false,
        )
        .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(r#""embedding":[1]"#));
        assert_eq!(usage.total, 0);
        for bad in [
            &b"not json"[..],
            br#"{"embedding":"x"}"#,
            br#"{"embedding":["a"]}"#,
            br#"{"embeddings":{"int8":[[1]]}}"#,
        ] {
            for f in [Family::Titan, Family::Cohere] {
                assert!(embeddings_response(f, bad, None, "m", false).is_none());
            }
        }
    }

    #[test]
    fn base64_is_asked_for_explicitly() {
        assert!(wants_base64(br#"{"model":"m","encoding_format":"base64"}"#));
        assert!(!wants_base64(br#"{"model":"m","encoding_format":"float"}"#));
        assert!(!wants_base64(br#"{"model":"m","input":"base64"}"#));
        assert!(!wants_base64(b"base64 ["));
    }

    #[test]
    fn golden_count_tokens() {
        let mut b = backend(SchemaName::AWSAnthropic);
        b.version = Some("bedrock-2023-05-31".into());
        let r = prepare_count_tokens(
            &b,
            br#"{"model":"us.anthropic.claude-3-5-haiku-20241022-v1:0","system":"s","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens"
        );
        let v = body_of(&r);
        let inner =
            crate::base64::decode(v["input"]["invokeModel"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(inner).unwrap(),
            r#"{"system":"s","messages":[{"role":"user","content":"hi"}],"anthropic_version":"bedrock-2023-05-31","max_tokens":1}"#
        );
        assert_eq!(
            count_tokens_response(br#"{"inputTokens":42}"#).unwrap(),
            br#"{"input_tokens":42}"#.to_vec()
        );
        assert!(count_tokens_response(br#"{"inputTokens":"x"}"#).is_none());
        assert_eq!(prepare_count_tokens(&b, b"{}").unwrap_err().status, 400);
    }

    #[test]
    fn buffered_translation_and_errors() {
        let kind = Kind::Embeddings {
            family: Some(Family::Titan),
            model: "m".into(),
            base64: false,
            header_tokens: None,
        };
        let mut t = Buffered::new(kind.clone(), 200);
        assert!(t.push(br#"{"embedding":[1,"#, false).is_empty());
        let out = t.push(br#"2],"inputTextTokenCount":3}"#, true);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([1, 2]));
        assert_eq!(t.usage().unwrap().input, 3);

        let mut e = Buffered::new(kind.clone(), 400);
        let out = e.push(
            br#"{"message":"Malformed input request: expected maxLength: 50000"}"#,
            true,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Malformed input"));
        assert_eq!(e.usage(), None);

        let mut junk = Buffered::new(kind, 200);
        let v: Value = serde_json::from_slice(&junk.push(b"<html>", true)).unwrap();
        assert_eq!(v["error"]["code"], "upstream_response_error");

        let mut c = Buffered::new(Kind::CountTokens, 200);
        assert_eq!(
            c.push(br#"{"inputTokens":5}"#, true),
            br#"{"input_tokens":5}"#.to_vec()
        );
        let mut c = Buffered::new(Kind::CountTokens, 400);
        let v: Value = serde_json::from_slice(&c.push(
            br#"{"message":"The provided model doesn't support counting tokens"}"#,
            true,
        ))
        .unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let mut c = Buffered::new(Kind::CountTokens, 200);
        let v: Value = serde_json::from_slice(&c.push(b"{}", true)).unwrap();
        assert_eq!(v["type"], "error");
    }
}
