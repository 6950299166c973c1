//! AIServiceBackend: the API schema and an Envoy Gateway Backend to send to.

use super::{Checker, Reason};
use serde_json::{Map, Value};

/// `spec.schema.name`, in the CRD's order; `AWSAnthropic` (Claude on
/// Bedrock through InvokeModel) is one this gateway serves too.
pub const SCHEMA_NAMES: &[&str] = &[
    "OpenAI",
    "Cohere",
    "AWSBedrock",
    "AzureOpenAI",
    "GCPVertexAI",
    "GCPAnthropic",
    "Anthropic",
    "AWSAnthropic",
];

pub(super) fn check(spec: &Map<String, Value>, checker: &mut Checker) {
    if let Some(schema) = checker.required_object(spec, "schema", "spec.schema") {
        checker.enumeration(schema, "name", "spec.schema.name", SCHEMA_NAMES, true);
        checker.string(schema.get("version"), "spec.schema.version");
        checker.string(schema.get("prefix"), "spec.schema.prefix");
    }
    if let Some(reference) = checker.required_object(spec, "backendRef", "spec.backendRef") {
        checker.min_length(reference, "name", "spec.backendRef.name", 1, true);
        let group = checker
            .string(reference.get("group"), "spec.backendRef.group")
            .unwrap_or("");
        // Gateway API's BackendObjectReference defaults kind to Service.
        let kind = checker
            .string(reference.get("kind"), "spec.backendRef.kind")
            .unwrap_or("Service");
        if kind != "Backend" || group != "gateway.envoyproxy.io" {
            checker.rule_on_object(
                "spec.backendRef",
                "BackendRef must be a Backend resource of Envoy Gateway",
            );
        }
        if let Some(port) = reference.get("port").filter(|p| !p.is_null()) {
            let path = "spec.backendRef.port";
            let detail = match port.as_i64() {
                None => Some(format!(
                    "{path} in body must be of type integer: {}",
                    super::quote(super::type_name(port))
                )),
                Some(p) if p < 1 => Some(format!(
                    "{path} in body should be greater than or equal to 1"
                )),
                Some(p) if p > 65535 => Some(format!(
                    "{path} in body should be less than or equal to 65535"
                )),
                Some(_) => None,
            };
            if let Some(detail) = detail {
                checker.push(
                    path,
                    Reason::Invalid {
                        value: port.to_string(),
                        detail,
                    },
                );
            }
        }
    }
}
