//! The Kubernetes resources the gateway reads, as typed Rust values. Only the
//! fields the gateway acts on are modelled; others are ignored.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Where a resource came from, for diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    /// 1-based position of the YAML document in the file.
    pub document: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

/// A resource with its identity.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub namespace: String,
    pub source: Source,
    pub spec: T,
}

impl<T> Named<T> {
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Resources {
    pub gateway_classes: Vec<Named<serde_json::Value>>,
    pub envoy_proxies: Vec<Named<serde_json::Value>>,
    pub gateways: Vec<Named<GatewaySpec>>,
    pub client_traffic_policies: Vec<Named<ClientTrafficPolicySpec>>,
    pub backends: Vec<Named<BackendSpec>>,
    pub ai_service_backends: Vec<Named<AIServiceBackendSpec>>,
    pub ai_gateway_routes: Vec<Named<AIGatewayRouteSpec>>,
    pub backend_security_policies: Vec<Named<BackendSecurityPolicySpec>>,
    pub backend_tls_policies: Vec<Named<BackendTLSPolicySpec>>,
    pub backend_traffic_policies: Vec<Named<BackendTrafficPolicySpec>>,
    pub secrets: Vec<Named<SecretData>>,
    /// ConfigMaps (CA certificates of BackendTLSPolicy), values by key.
    pub config_maps: Vec<Named<SecretData>>,
    /// Envoy Gateway SecurityPolicy (client authentication; see translate/auth.rs).
    pub security_policies: Vec<Named<crate::translate::auth::SecurityPolicySpec>>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// A parentRef's listener name (Gateway API `sectionName`).
    #[serde(default)]
    pub section_name: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    pub listeners: Vec<GatewayListener>,
    #[serde(default)]
    pub gateway_class_name: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayListener {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub connection: Option<ClientConnection>,
    #[serde(default)]
    pub timeout: Option<ClientTimeout>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    #[serde(default)]
    pub buffer_limit: Option<Quantity>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientTimeout {
    #[serde(default)]
    pub http: Option<ClientHttpTimeout>,
}

/// Envoy Gateway's `ClientTrafficPolicy.spec.timeout.http`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientHttpTimeout {
    #[serde(default)]
    pub request_received_timeout: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub stream_idle_timeout: Option<String>,
}

/// A Kubernetes quantity such as `50Mi` or a plain number.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Quantity {
    Number(u64),
    Text(String),
}

impl Quantity {
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Quantity::Number(n) => return Ok(*n),
            Quantity::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, suffix) = text.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a quantity such as 50Mi"))?;
        let multiplier: u64 = match suffix {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => return Err(format!("{text:?} has an unknown unit {suffix:?}")),
        };
        number
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    pub endpoints: Vec<BackendEndpoint>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendEndpoint {
    #[serde(default)]
    pub fqdn: Option<HostPort>,
    #[serde(default)]
    pub ip: Option<IpPort>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct HostPort {
    pub hostname: String,
    pub port: u16,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct IpPort {
    pub address: String,
    pub port: u16,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct AIServiceBackendSpec {
    pub schema: BackendSchema,
    pub backend_ref: BackendObjectRef,
    #[serde(default)]
    pub backend_security_policy_ref: Option<TargetRef>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendSchema {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct AIGatewayRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<TargetRef>,
    /// v1alpha1's older way to attach a route to Gateways.
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    #[serde(default)]
    pub llm_request_costs: Vec<LlmRequestCost>,
}

/// `spec.llmRequestCosts[]`: which usage number is published under `metadataKey`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct LlmRequestCost {
    pub metadata_key: String,
    #[serde(rename = "type")]
    pub cost_type: LlmCostType,
    #[serde(default, rename = "celExpression")]
    pub cel_expression: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmCostType {
    InputToken,
    OutputToken,
    TotalToken,
    CachedInputToken,
    CacheCreationInputToken,
    ReasoningToken,
    #[serde(rename = "CEL")]
    Cel,
}

/// Envoy Gateway's BackendTrafficPolicy: `rateLimit`, `retry`, `timeout`,
/// `healthCheck.passive` and `circuitBreaker` are acted on.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
}

/// `spec.retry`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    #[serde(default)]
    pub num_retries: Option<u32>,
    #[serde(default)]
    pub num_attempts_per_priority: Option<u32>,
    #[serde(default)]
    pub retry_on: Option<RetryOn>,
    #[serde(default)]
    pub per_retry: Option<PerRetry>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryOn {
    #[serde(default)]
    pub triggers: Vec<String>,
    #[serde(default)]
    pub http_status_codes: Vec<u16>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PerRetry {
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub back_off: Option<BackOff>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackOff {
    #[serde(default)]
    pub base_interval: Option<String>,
    #[serde(default)]
    pub max_interval: Option<String>,
}

/// `spec.timeout`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutSpec {
    #[serde(default)]
    pub http: Option<HttpTimeout>,
    #[serde(default)]
    pub tcp: Option<TcpTimeout>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpTimeout {
    #[serde(default)]
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub connection_idle_timeout: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TcpTimeout {
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

/// `spec.healthCheck`; only `passive` (outlier detection) is acted on.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    #[serde(default)]
    pub passive: Option<PassiveHealthCheck>,
    #[serde(default)]
    pub active: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheck {
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, rename = "consecutive5XxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
}

/// `spec.circuitBreaker`.
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    #[serde(default)]
    pub max_parallel_requests: Option<u32>,
    #[serde(default)]
    pub max_parallel_retries: Option<u32>,
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    #[serde(default, rename = "type")]
    pub limit_type: Option<String>,
    #[serde(default)]
    pub global: Option<GlobalRateLimit>,
    #[serde(default)]
    pub local: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct GlobalRateLimit {
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    #[serde(default)]
    pub client_selectors: Vec<ClientSelector>,
    pub limit: RateLimitValue,
    #[serde(default)]
    pub cost: Option<RateLimitCost>,
    /// Count but never refuse.
    #[serde(default)]
    pub shadow_mode: Option<bool>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientSelector {
    #[serde(default)]
    pub headers: Vec<HeaderSelector>,
    #[serde(default, rename = "sourceCIDR")]
    pub source_cidr: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSelector {
    pub name: String,
    #[serde(default, rename = "type")]
    pub match_type: HeaderSelectorType,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub invert: Option<bool>,
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderSelectorType {
    #[default]
    Exact,
    Distinct,
    RegularExpression,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitValue {
    pub requests: u64,
    pub unit: RateLimitUnit,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RateLimitUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl RateLimitUnit {
    pub fn seconds(self) -> u64 {
        match self {
            RateLimitUnit::Second => 1,
            RateLimitUnit::Minute => 60,
            RateLimitUnit::Hour => 3600,
            RateLimitUnit::Day => 86_400,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitCost {
    #[serde(default)]
    pub request: Option<CostSpecifier>,
    #[serde(default)]
    pub response: Option<CostSpecifier>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CostSpecifier {
    pub from: CostFrom,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub metadata: Option<CostMetadata>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostFrom {
    Number,
    Metadata,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CostMetadata {
    pub namespace: String,
    pub key: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub backend_refs: Vec<RouteBackendRef>,
    #[serde(default)]
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, rename = "type")]
    pub match_type: Option<String>,
    pub value: String,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteBackendRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub model_name_override: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    #[serde(default)]
    pub request: Option<String>,
    /// Gateway API's per-attempt timeout.
    #[serde(default)]
    pub backend_request: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendSecurityPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(rename = "type")]
    pub policy_type: String,
    #[serde(default)]
    pub api_key: Option<ApiKeySpec>,
    #[serde(default, rename = "anthropicAPIKey")]
    pub anthropic_api_key: Option<ApiKeySpec>,
    #[serde(default, rename = "azureAPIKey")]
    pub azure_api_key: Option<ApiKeySpec>,
    #[serde(default)]
    pub aws_credentials: Option<serde_json::Value>,
    #[serde(default)]
    pub azure_credentials: Option<serde_json::Value>,
    #[serde(default)]
    pub gcp_credentials: Option<serde_json::Value>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    #[serde(default)]
    pub secret_ref: Option<TargetRef>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendTLSPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub validation: TlsValidation,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsValidation {
    #[serde(default, rename = "wellKnownCACertificates")]
    pub well_known_ca_certificates: Option<String>,
    #[serde(default, rename = "caCertificateRefs")]
    pub ca_certificate_refs: Vec<TargetRef>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Names the certificate must carry instead of `hostname` (Gateway API v1).
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltName>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAltName {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
}

/// A Secret's decoded values by key.
#[derive(Debug, Clone, Default)]
pub struct SecretData {
    pub values: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases = [
            (Quantity::Text("50Mi".into()), Ok(50 << 20)),
            (Quantity::Text("1Gi".into()), Ok(1 << 30)),
            (Quantity::Text("10k".into()), Ok(10_000)),
            (Quantity::Text("123".into()), Ok(123)),
            (Quantity::Number(7), Ok(7)),
        ];
        for (q, want) in cases {
            assert_eq!(q.bytes(), want, "{q:?}");
        }
        assert!(Quantity::Text("5Xi".into()).bytes().is_err());
        assert!(Quantity::Text("Mi".into()).bytes().is_err());
        assert!(Quantity::Text("99999999999999Gi".into()).bytes().is_err());
    }
}
