//! OpenAI chat request bodies translated for Anthropic, Claude on Bedrock
//! and Bedrock Converse: any input is a request or a 4xx, never a panic.
#![no_main]
use aigw_filter::config::{BackendConfig, SchemaName};
use aigw_filter::request::Endpoint;
use aigw_filter::upstream::prepare;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for schema in [SchemaName::Anthropic, SchemaName::AWSAnthropic, SchemaName::AWSBedrock] {
        let backend = BackendConfig { schema, host: Some("h".into()), ..Default::default() };
        if let Err(e) = prepare(Endpoint::ChatCompletions, "", &backend, data) {
            assert!((400..500).contains(&e.status), "{e}");
        }
    }
});
