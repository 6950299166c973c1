//! Client request bodies: routing facts and the upstream rewrite must never
//! panic, whatever the body and endpoint.
#![no_main]
use aigw_filter::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};
use aigw_filter::request::{parse_request, Endpoint};
use aigw_filter::upstream::prepare;
use libfuzzer_sys::fuzz_target;

const ENDPOINTS: [Endpoint; 5] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::AnthropicMessages,
    Endpoint::AnthropicCountTokens,
];
const SCHEMAS: [SchemaName; 7] = [
    SchemaName::OpenAI,
    SchemaName::AWSAnthropic,
    SchemaName::Anthropic,
    SchemaName::AWSBedrock,
    SchemaName::AzureOpenAI,
    SchemaName::GCPVertexAI,
    SchemaName::GCPAnthropic,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let endpoint = ENDPOINTS[usize::from(selector) % ENDPOINTS.len()];
    let _ = parse_request(endpoint, body);
    let backend = BackendConfig {
        schema: SCHEMAS[usize::from(selector >> 4) % SCHEMAS.len()],
        model_name_override: (selector & 8 != 0).then(|| "override".to_string()),
        version: Some("bedrock-2023-05-31".into()),
        host: Some("h".into()),
        auth: Some(BackendAuth {
            kind: AuthKind::ApiKey,
            credential: "c".into(),
            region: Some("r".into()),
            project: Some("p".into()),
        }),
        ..Default::default()
    };
    let _ = prepare(endpoint, "a=b", &backend, body);
    let _ = Endpoint::classify("POST", &String::from_utf8_lossy(body));
});
