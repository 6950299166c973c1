//! Configurations and small helpers shared by the ABI tests.
#![allow(dead_code)]

use aigw_filter::config::{
    AuthKind, BackendAuth, BackendConfig, CredentialSource, ModelMatch, ModelRoute, PluginConfig,
    Role, SchemaName,
};
use aigw_wasm_abi_tests::{Vm, VmError};
use std::collections::BTreeMap;

pub const CREATED: u64 = 1_700_000_000;
pub const MAX_BYTES: u64 = 1024;
pub const BACKEND_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigw",
    "backend",
];
/// Endpoint metadata listing the rule's AIServiceBackends.
pub const PEERS_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigw",
    "peers",
];
pub const CREDENTIAL_CLUSTER: &str = "aigw-credentials";
pub const TOKEN_ENV: &str = "AIGW_CREDENTIAL_TOKEN";
pub const TOKEN: &str = "controller-token-123";

fn model(m: ModelMatch, owner: &str) -> ModelRoute {
    ModelRoute {
        matcher: m,
        owned_by: owner.into(),
    }
}

pub fn router_config() -> PluginConfig {
    PluginConfig {
        role: Role::Router,
        config_version: 1,
        created: CREATED,
        models: vec![
            model(ModelMatch::Exact("gpt-4o-mini".into()), "openai"),
            model(ModelMatch::Exact("llama-3".into()), "meta"),
            model(ModelMatch::Prefix("claude-".into()), "anthropic"),
            model(ModelMatch::Exact("gpt-4o-mini".into()), "openai"),
        ],
        max_request_bytes: MAX_BYTES,
        ..Default::default()
    }
}

pub fn upstream_config() -> PluginConfig {
    let mut backends = BTreeMap::new();
    backends.insert(
        "default/openai".to_string(),
        BackendConfig {
            schema: SchemaName::OpenAI,
            prefix: Some("/openai/v1".into()),
            host: Some("api.openai.example".into()),
            model_name_override: Some("gpt-4o-2024-08-06".into()),
            auth: Some(BackendAuth {
                kind: AuthKind::ApiKey,
                credential: "default/openai-key".into(),
                region: None,
                project: None,
            }),
            ..Default::default()
        },
    );
    backends.insert(
        "default/override".to_string(),
        BackendConfig {
            schema: SchemaName::OpenAI,
            prefix: Some("/api/v1/".into()),
            host: Some("llm.internal.example".into()),
            model_name_override: Some("meta-llama/Llama-3-8B".into()),
            ..Default::default()
        },
    );
    backends.insert(
        "default/local".to_string(),
        BackendConfig {
            schema: SchemaName::OpenAI,
            ..Default::default()
        },
    );
    PluginConfig {
        role: Role::Upstream,
        config_version: 3,
        created: CREATED,
        backends,
        credentials: Some(CredentialSource {
            cluster: CREDENTIAL_CLUSTER.into(),
            authority: "aigw-controller".into(),
            path: "/v1/credentials".into(),
            token_env: TOKEN_ENV.into(),
            ttl_seconds: 30,
        }),
        ..Default::default()
    }
}

/// A started VM of the built filter with `config`.
pub fn vm_with(config: &PluginConfig) -> Result<Vm, VmError> {
    let mut vm = Vm::filter()?;
    vm.set_env(TOKEN_ENV, TOKEN);
    assert!(vm.start_with(config)?, "proxy_on_configure returned false");
    // Every stream's endpoint belongs to a rule with all the configured
    // backends (the controller writes them in the endpoint metadata).
    let peers: Vec<&str> = config
        .backends
        .keys()
        .map(|k| aigw_filter::failover::service_of(k))
        .collect();
    vm.host_mut().properties.insert(
        aigw_wasm_abi_tests::host::property_key(&PEERS_METADATA),
        peers.join(",").into_bytes(),
    );
    Ok(vm)
}

pub fn chat_headers(len: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/v1/chat/completions".into()),
        (":authority", "gateway.local".into()),
        ("content-type", "application/json".into()),
        ("content-length", len.to_string()),
    ]
}

/// Borrows a list of owned header pairs as the `&[(&str, &str)]` the VM takes.
pub fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}
