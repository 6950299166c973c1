//! The plugin configuration the controller writes and the filter reads.
//! Both crates use these types, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The header the router role hands a request to the upstream role with
/// (internal: the upstream role removes it).
pub const HANDOFF_HEADER: &str = "x-aigw-endpoint";
/// The header a request the router role wrote for its backend itself
/// carries (`PluginConfig::direct`), naming that backend: the rule's route
/// matches it and removes it, so that no request written for another
/// backend, or not written at all, reaches a cluster that runs no upstream
/// role while Envoy applies a new configuration.
pub const DIRECT_HEADER: &str = "x-aigw-direct";

/// Where in Envoy this instance of the filter runs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// In the listener's HTTP filter chain: picks the model, answers local
    /// endpoints, translates responses back and counts usage.
    #[default]
    Router,
    /// In a cluster's upstream filter chain: rewrites each attempt for the
    /// endpoint that was picked and injects its credential.
    Upstream,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct PluginConfig {
    #[serde(default)]
    pub role: Role,
    /// Increases with every configuration the controller serves.
    #[serde(default)]
    pub config_version: u64,
    /// Unix seconds, reported as `created` by `GET /v1/models`.
    #[serde(default)]
    pub created: u64,
    /// Models the routes serve, in route order.
    #[serde(default)]
    pub models: Vec<ModelRoute>,
    /// Request bodies larger than this are refused with 413 (0: no limit).
    #[serde(default)]
    pub max_request_bytes: u64,
    /// Backends by name (`namespace/name`), as named in endpoint metadata.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    /// The backend (a key of `backends`) of each cluster all of whose
    /// endpoints are that backend's: the cluster's name, a cheaper property
    /// than the endpoint's metadata, then names the backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_backends: BTreeMap<String, String>,
    /// Router role: the models whose rule has a single backend (a key of
    /// `backends`) that the router role serves directly: it writes the
    /// request for that backend itself, and the rule's cluster runs no
    /// upstream role (a wasm context per attempt saved). The controller
    /// lists a model only where no other route can take its requests and
    /// no filter after the router role reads what it rewrites.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub direct: BTreeMap<String, String>,
    /// Where the filter fetches upstream credentials.
    #[serde(default)]
    pub credentials: Option<CredentialSource>,
    /// Reserve-then-settle rate limits: the router publishes each request's
    /// token reservation (`wasm.llm_reserve_*`, see `reservation.rs`), and
    /// zero usage for a request that ends without any; the value is the
    /// output tokens reserved when the request names no max_tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_output_tokens: Option<u64>,
    /// The request facts (`wasm.<name>` filter state: usage, backend,
    /// response model, ...) something in Envoy reads, so the router role
    /// publishes these only: each is a host call per request. `None`
    /// publishes all (for access logs the controller does not write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<BTreeSet<String>>,
}

impl PluginConfig {
    /// Whether the router role publishes the property `name`.
    pub fn publishes(&self, name: &str) -> bool {
        self.published.as_ref().is_none_or(|p| p.contains(name))
    }
}

/// One model matcher of a route rule, and who owns it (for `/v1/models`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ModelRoute {
    #[serde(rename = "match")]
    pub matcher: ModelMatch,
    #[serde(default)]
    pub owned_by: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ModelMatch {
    Exact(String),
    Prefix(String),
    /// An RE2 pattern that Envoy checks; the filter lets such requests
    /// through to routing and Envoy answers if nothing matches.
    Regex(String),
}

/// The API schema a backend speaks.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaName {
    #[default]
    OpenAI,
    Anthropic,
    AWSAnthropic,
    AWSBedrock,
    AzureOpenAI,
    GCPVertexAI,
    GCPAnthropic,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct BackendConfig {
    pub schema: SchemaName,
    /// `schema.version`: e.g. Azure's api-version or Bedrock's anthropic_version.
    #[serde(default)]
    pub version: Option<String>,
    /// Path prefix the backend serves the API under (OpenAI: `/v1`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Host header to send (the backend's own hostname).
    #[serde(default)]
    pub host: Option<String>,
    /// Model name sent to this backend instead of the client's.
    #[serde(default)]
    pub model_name_override: Option<String>,
    /// How this backend is authenticated, if at all.
    #[serde(default)]
    pub auth: Option<BackendAuth>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BackendAuth {
    pub kind: AuthKind,
    /// Key of the credential in the controller's credential service.
    pub credential: String,
    /// AWS region for SigV4; GCP region (location) for Vertex AI paths.
    #[serde(default)]
    pub region: Option<String>,
    /// GCP project for Vertex AI paths.
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// `Authorization: Bearer <key>`
    ApiKey,
    /// `x-api-key: <key>`
    AnthropicApiKey,
    /// `api-key: <key>`
    AzureApiKey,
    /// SigV4 with AWS credentials.
    AwsSigV4,
    /// `Authorization: Bearer <token>` with a GCP OAuth2 access token that
    /// the controller mints from the policy's credentials and refreshes.
    GcpAccessToken,
    /// `Authorization: Bearer <token>` with a Microsoft Entra ID access
    /// token for Azure OpenAI that the controller mints and refreshes.
    AzureAccessToken,
}

/// The controller's credential endpoint, reached with `dispatch_http_call`.
/// Credentials travel this way, never in the plugin configuration, so they
/// never show in Envoy's `/config_dump`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CredentialSource {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    /// Name of the environment variable (exposed to the VM with
    /// `host_env_keys`) that holds the bearer token for the endpoint.
    pub token_env: String,
    /// Seconds a fetched set of credentials is used before it is refreshed.
    #[serde(default = "default_credential_ttl")]
    pub ttl_seconds: u64,
}

fn default_credential_ttl() -> u64 {
    30
}

impl PluginConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid plugin configuration: {e}"))
    }
}
