//! The aigateway.envoyproxy.io CRDs (AIGatewayRoute, AIServiceBackend,
//! BackendSecurityPolicy), generated from these Rust types into
//! `deploy/crds/`. Both v1alpha1 and v1beta1 are served with the same
//! schema; v1alpha1 is stored. Sub-objects the gateway does not interpret
//! yet (header and body mutations, Azure and GCP credentials, ...) are kept
//! as-is (`x-kubernetes-preserve-unknown-fields`).
//!
//! Regenerate after a change: `AIGW_UPDATE_CRDS=1 cargo test -p aigw crds`.

use kube::core::crd::merge_crds;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn default_weight() -> Option<i32> {
    Some(1)
}

fn default_priority() -> Option<i32> {
    Some(0)
}

/// A reference to a Gateway (Gateway API ParentReference).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// A reference to a local object by group, kind and name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalPolicyTargetReference {
    #[schemars(length(max = 253))]
    pub group: String,
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub enum HeaderMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<HeaderMatchType>,
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteRuleMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.group) == has(self.kind)", "message": "group and kind must be specified together"}
]))]
pub struct RouteBackendRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name_override: Option<String>,
    #[serde(default = "default_weight", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub weight: Option<i32>,
    #[serde(default = "default_priority", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.name) || self.name != 'route-not-found'", "message": "rule name route-not-found is reserved"}
]))]
pub struct RouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub backend_refs: Vec<RouteBackendRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub matches: Vec<RouteRuleMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_created_at: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum LlmRequestCostType {
    InputToken,
    CachedInputToken,
    CacheCreationInputToken,
    OutputToken,
    TotalToken,
    #[serde(rename = "CEL")]
    Cel,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'CEL' || has(self.cel)", "message": "cel is required when type is CEL"}
]))]
pub struct LlmRequestCost {
    #[schemars(length(min = 1))]
    pub metadata_key: String,
    #[serde(rename = "type")]
    pub cost_type: LlmRequestCostType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<String>,
}

/// `status` of the three kinds: the conditions `aigw controller` writes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct AIGatewayStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
}

/// metav1.Condition
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    #[schemars(length(max = 32768))]
    pub message: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum APISchema {
    OpenAI,
    Cohere,
    AWSBedrock,
    AzureOpenAI,
    GCPVertexAI,
    GCPAnthropic,
    Anthropic,
    AWSAnthropic,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VersionedAPISchema {
    pub name: APISchema,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.kind) || self.kind == 'Backend' || self.kind == 'Service'", "message": "BackendRef must be a Backend or a Service"}
]))]
pub struct BackendObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub port: Option<i32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum BackendSecurityPolicyType {
    #[serde(rename = "APIKey")]
    ApiKey,
    AWSCredentials,
    #[serde(rename = "AzureAPIKey")]
    AzureApiKey,
    AzureCredentials,
    GCPCredentials,
    #[serde(rename = "AnthropicAPIKey")]
    AnthropicApiKey,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySource {
    pub secret_ref: SecretObjectReference,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentialsFile {
    pub secret_ref: SecretObjectReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    #[schemars(length(min = 1))]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<AwsCredentialsFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown")]
    pub oidc_exchange_token: Option<Value>,
}

/// Defines `AIGatewayRoute`, `AIServiceBackend` and `BackendSecurityPolicy`
/// of one API version.
macro_rules! api_version {
    ($module:ident, $version:literal) => {
        pub mod $module {
            use super::*;
            use kube::CustomResource;

            /// Routes requests by model to AIServiceBackends.
            #[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug)]
            #[kube(
                group = "aigateway.envoyproxy.io",
                version = $version,
                kind = "AIGatewayRoute",
                namespaced,
                status = "AIGatewayStatus",
                category = "aigw",
                printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
            )]
            #[serde(rename_all = "camelCase")]
            #[schemars(extend("x-kubernetes-validations" = [
                {"rule": "self.rules.all(r, !has(r.name) || self.rules.filter(o, has(o.name) && o.name == r.name).size() == 1)",
                 "message": "rule name must be unique within the route"}
            ]))]
            pub struct AIGatewayRouteSpec {
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 16))]
                pub parent_refs: Vec<ParentReference>,
                /// Deprecated: use parentRefs.
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 128))]
                pub target_refs: Vec<LocalPolicyTargetReference>,
                #[schemars(length(max = 15))]
                pub rules: Vec<RouteRule>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(schema_with = "preserve_unknown")]
                pub filter_config: Option<Value>,
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 36))]
                pub llm_request_costs: Vec<LlmRequestCost>,
            }

            /// An upstream model provider: its API schema and where it is.
            #[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug)]
            #[kube(
                group = "aigateway.envoyproxy.io",
                version = $version,
                kind = "AIServiceBackend",
                namespaced,
                status = "AIGatewayStatus",
                category = "aigw"
            )]
            #[serde(rename_all = "camelCase")]
            pub struct AIServiceBackendSpec {
                pub schema: VersionedAPISchema,
                pub backend_ref: BackendObjectReference,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub backend_security_policy_ref: Option<LocalPolicyTargetReference>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(schema_with = "preserve_unknown")]
                pub header_mutation: Option<Value>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(schema_with = "preserve_unknown")]
                pub body_mutation: Option<Value>,
            }

            /// How the gateway authenticates to AIServiceBackends.
            #[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug)]
            #[kube(
                group = "aigateway.envoyproxy.io",
                version = $version,
                kind = "BackendSecurityPolicy",
                namespaced,
                status = "AIGatewayStatus",
                category = "aigw"
            )]
            #[serde(rename_all = "camelCase")]
            #[schemars(extend("x-kubernetes-validations" = [
                {"rule": "self.type != 'APIKey' || has(self.apiKey)", "message": "apiKey is required when type is APIKey"},
                {"rule": "self.type != 'AWSCredentials' || has(self.awsCredentials)", "message": "awsCredentials is required when type is AWSCredentials"},
                {"rule": "self.type != 'AzureAPIKey' || has(self.azureAPIKey)", "message": "azureAPIKey is required when type is AzureAPIKey"},
                {"rule": "self.type != 'AnthropicAPIKey' || has(self.anthropicAPIKey)", "message": "anthropicAPIKey is required when type is AnthropicAPIKey"}
            ]))]
            pub struct BackendSecurityPolicySpec {
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                #[schemars(length(max = 16))]
                pub target_refs: Vec<LocalPolicyTargetReference>,
                #[serde(rename = "type")]
                pub policy_type: BackendSecurityPolicyType,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub api_key: Option<ApiKeySource>,
                #[serde(default, rename = "azureAPIKey", skip_serializing_if = "Option::is_none")]
                pub azure_api_key: Option<ApiKeySource>,
                #[serde(default, rename = "anthropicAPIKey", skip_serializing_if = "Option::is_none")]
                pub anthropic_api_key: Option<ApiKeySource>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub aws_credentials: Option<AwsCredentials>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(schema_with = "preserve_unknown")]
                pub azure_credentials: Option<Value>,
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(schema_with = "preserve_unknown")]
                pub gcp_credentials: Option<Value>,
            }
        }
    };
}

api_version!(v1alpha1, "v1alpha1");
api_version!(v1beta1, "v1beta1");

/// The version the API server stores.
pub const STORED_VERSION: &str = "v1alpha1";

/// `(file name, YAML)` of every CRD, as committed in deploy/crds/.
pub fn generate() -> Vec<(String, String)> {
    let pairs = [
        (
            v1alpha1::AIGatewayRoute::crd(),
            v1beta1::AIGatewayRoute::crd(),
        ),
        (
            v1alpha1::AIServiceBackend::crd(),
            v1beta1::AIServiceBackend::crd(),
        ),
        (
            v1alpha1::BackendSecurityPolicy::crd(),
            v1beta1::BackendSecurityPolicy::crd(),
        ),
    ];
    pairs
        .into_iter()
        .map(|(alpha, beta)| {
            let name = alpha.metadata.name.clone().unwrap_or_default();
            let merged = merge_crds(vec![alpha, beta], STORED_VERSION)
                .expect("the versions of one kind merge");
            let yaml = serde_yaml::to_string(&merged).expect("a CRD serializes");
            (
                format!("{name}.yaml"),
                format!("# Generated by `AIGW_UPDATE_CRDS=1 cargo test -p aigw crds`; do not edit.\n{yaml}"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
    }

    #[test]
    fn crds_match_the_committed_files() {
        let generated = generate();
        if std::env::var_os("AIGW_UPDATE_CRDS").is_some() {
            std::fs::create_dir_all(dir()).unwrap();
            for (name, yaml) in &generated {
                std::fs::write(dir().join(name), yaml).unwrap();
            }
        }
        for (name, yaml) in &generated {
            let path = dir().join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                committed == *yaml,
                "{} is out of date: run AIGW_UPDATE_CRDS=1 cargo test -p aigw crds",
                path.display()
            );
        }
    }

    #[test]
    fn crds_serve_both_versions_with_the_limits() {
        let route = &generate()[0].1;
        let crd: Value = serde_yaml::from_str(route).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let names: Vec<&str> = versions
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["v1alpha1", "v1beta1"]);
        for v in versions {
            assert_eq!(v["served"], true);
            assert_eq!(v["storage"], v["name"] == STORED_VERSION);
            let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert_eq!(spec["properties"]["rules"]["maxItems"], 15);
            let backend_ref =
                &spec["properties"]["rules"]["items"]["properties"]["backendRefs"]["items"];
            assert_eq!(backend_ref["properties"]["weight"]["default"], 1);
            assert!(v["subresources"]["status"].is_object());
        }
    }

    #[test]
    fn the_blueprint_deserializes_into_the_crd_types() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/blueprint");
        let mut seen = 0;
        for file in [
            "model-backends.yaml",
            "multi-model-routing/ai-gateway-route.yaml",
        ] {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = Value::deserialize(doc).unwrap();
                let result = match value["kind"].as_str() {
                    Some("AIGatewayRoute") => {
                        serde_json::from_value::<v1alpha1::AIGatewayRoute>(value.clone()).map(drop)
                    }
                    Some("AIServiceBackend") => {
                        serde_json::from_value::<v1alpha1::AIServiceBackend>(value.clone())
                            .map(drop)
                    }
                    Some("BackendSecurityPolicy") => {
                        serde_json::from_value::<v1alpha1::BackendSecurityPolicy>(value.clone())
                            .map(drop)
                    }
                    _ => continue,
                };
                result.unwrap_or_else(|e| panic!("{file}: {e}: {value}"));
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen}");
    }
}
