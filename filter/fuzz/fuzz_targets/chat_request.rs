//! OpenAI chat request bodies translated for Anthropic, Claude on Bedrock,
//! Bedrock Converse, Gemini and Claude on Vertex AI: any input is a request
//! or a 4xx, never a panic.
#![no_main]
use aigw_filter::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};
use aigw_filter::request::Endpoint;
use aigw_filter::upstream::prepare;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let schemas = [
        SchemaName::Anthropic,
        SchemaName::AWSAnthropic,
        SchemaName::AWSBedrock,
        SchemaName::GCPVertexAI,
        SchemaName::GCPAnthropic,
    ];
    for schema in schemas {
        let auth = BackendAuth {
            kind: AuthKind::GcpAccessToken,
            credential: "c".into(),
            region: Some("us-east5".into()),
            project: Some("p".into()),
        };
        let backend = BackendConfig { schema, host: Some("h".into()), auth: Some(auth), ..Default::default() };
        if let Err(e) = prepare(Endpoint::ChatCompletions, "", &backend, data) {
            assert!((400..500).contains(&e.status), "{e}");
        }
    }
});
