//! Reads multi-document YAML into typed resources, with a diagnostic naming
//! the file, document, resource and field for whatever cannot be read.

use crate::error::Diagnostic;
use crate::resources::{Named, Resources, SecretData, Source};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

const AI_GATEWAY: &[&str] = &[
    "aigateway.envoyproxy.io/v1alpha1",
    "aigateway.envoyproxy.io/v1beta1",
];
const ENVOY_GATEWAY: &[&str] = &["gateway.envoyproxy.io/v1alpha1"];
const GATEWAY_API: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
    "gateway.networking.k8s.io/v1alpha3",
    "gateway.networking.k8s.io/v1alpha2",
];

/// Parses the text of one file, adding what it holds to `resources`.
pub fn load_str(
    file: &str,
    text: &str,
    resources: &mut Resources,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = Source {
            file: file.to_string(),
            document: index + 1,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                let mut d = Diagnostic::error(format!("not valid YAML: {e}"));
                d.source = Some(source);
                diagnostics.push(d);
                // The YAML stream cannot be resynchronized after a syntax error.
                return;
            }
        };
        load_value(value, source, resources, diagnostics);
    }
}

fn load_value(
    value: serde_yaml::Value,
    source: Source,
    resources: &mut Resources,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let header: Header = match serde_yaml::from_value(value.clone()) {
        Ok(h) => h,
        Err(e) => {
            let mut d = Diagnostic::error(format!("not a Kubernetes object: {e}"));
            d.source = Some(source);
            diagnostics.push(d);
            return;
        }
    };
    let namespace = header
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let describe = format!("{} {}/{}", header.kind, namespace, header.metadata.name);
    let report = |d: Diagnostic| d.at(describe.clone(), &source);
    if header.kind.is_empty() || header.api_version.is_empty() {
        diagnostics.push(report(Diagnostic::error(
            "apiVersion and kind are required",
        )));
        return;
    }
    if header.metadata.name.is_empty() {
        diagnostics.push(report(
            Diagnostic::error("metadata.name is required").field("metadata.name"),
        ));
        return;
    }
    let api = header.api_version.as_str();
    let in_group = |versions: &[&str]| versions.contains(&api);
    macro_rules! typed {
        ($list:ident) => {{
            match spec_of(&value) {
                Ok(spec) => resources.$list.push(Named {
                    name: header.metadata.name.clone(),
                    namespace: namespace.clone(),
                    source: source.clone(),
                    spec,
                }),
                Err((field, message)) => {
                    diagnostics.push(report(Diagnostic::error(message).field(field)))
                }
            }
        }};
    }
    match (header.kind.as_str(), api) {
        ("AIGatewayRoute", _) if in_group(AI_GATEWAY) => typed!(ai_gateway_routes),
        ("AIServiceBackend", _) if in_group(AI_GATEWAY) => typed!(ai_service_backends),
        ("BackendSecurityPolicy", _) if in_group(AI_GATEWAY) => {
            typed!(backend_security_policies)
        }
        ("Backend", _) if in_group(ENVOY_GATEWAY) => typed!(backends),
        ("EnvoyProxy", _) if in_group(ENVOY_GATEWAY) => typed!(envoy_proxies),
        ("ClientTrafficPolicy", _) if in_group(ENVOY_GATEWAY) => {
            typed!(client_traffic_policies)
        }
        ("BackendTrafficPolicy", _) if in_group(ENVOY_GATEWAY) => {
            typed!(backend_traffic_policies)
        }
        ("SecurityPolicy", _) if in_group(ENVOY_GATEWAY) => typed!(security_policies),
        ("GatewayClass", _) if in_group(GATEWAY_API) => typed!(gateway_classes),
        ("Gateway", _) if in_group(GATEWAY_API) => typed!(gateways),
        ("BackendTLSPolicy", _) if in_group(GATEWAY_API) => typed!(backend_tls_policies),
        ("Secret", "v1") => match secret_of(&value) {
            Ok(data) => resources.secrets.push(Named {
                name: header.metadata.name.clone(),
                namespace,
                source: source.clone(),
                spec: data,
            }),
            Err((field, message)) => {
                diagnostics.push(report(Diagnostic::error(message).field(field)))
            }
        },
        ("ConfigMap", "v1") => match string_map(&value, "data") {
            Ok(values) => resources.config_maps.push(Named {
                name: header.metadata.name.clone(),
                namespace,
                source: source.clone(),
                spec: SecretData { values },
            }),
            Err((field, message)) => {
                diagnostics.push(report(Diagnostic::error(message).field(field)))
            }
        },
        ("ServiceAccount", "v1") => diagnostics.push(report(Diagnostic::note(
            "ServiceAccount has no effect on the gateway's configuration; ignored",
        ))),
        (kind, api) => diagnostics.push(report(Diagnostic::warning(format!(
            "{kind} of {api} is not a kind this gateway reads; ignored"
        )))),
    }
}

/// Deserializes `spec`, reporting the failing field's path.
fn spec_of<T: DeserializeOwned + Default>(
    value: &serde_yaml::Value,
) -> Result<T, (String, String)> {
    let Some(spec) = value.get("spec") else {
        return Ok(T::default());
    };
    let deserializer = spec.clone();
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        (field, e.into_inner().to_string())
    })
}

fn secret_of(value: &serde_yaml::Value) -> Result<SecretData, (String, String)> {
    use base64::Engine;
    let mut values = BTreeMap::new();
    for (key, encoded) in string_map(value, "data")? {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                (
                    format!("data.{key}"),
                    "is not base64-encoded UTF-8".to_string(),
                )
            })?;
        values.insert(key, decoded);
    }
    values.extend(string_map(value, "stringData")?);
    Ok(SecretData { values })
}

/// The string-to-string map under `key`, empty when absent.
fn string_map(
    value: &serde_yaml::Value,
    key: &str,
) -> Result<BTreeMap<String, String>, (String, String)> {
    match value.get(key) {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_yaml::from_value(v.clone())
            .map_err(|e| (key.to_string(), format!("must map keys to strings: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Severity;

    #[test]
    fn reads_kinds_and_reports_fields() {
        let text = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: a}
spec:
  schema: {name: OpenAI}
  backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r, namespace: team}
spec:
  rules:
  - backendRefs:
    - name: a
      weight: "heavy"
---
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {apiKey: c2stMTIz}
stringData: {other: plain}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
"#;
        let mut r = Resources::default();
        let mut d = Vec::new();
        load_str("f.yaml", text, &mut r, &mut d);
        assert_eq!(r.ai_service_backends.len(), 1);
        assert_eq!(r.ai_service_backends[0].namespace, "default");
        assert!(r.ai_gateway_routes.is_empty());
        assert_eq!(r.secrets[0].spec.values["apiKey"], "sk-123");
        assert_eq!(r.secrets[0].spec.values["other"], "plain");
        let error = d.iter().find(|d| d.severity == Severity::Error).unwrap();
        assert_eq!(
            error.field.as_deref(),
            Some("spec.rules[0].backendRefs[0].weight")
        );
        assert_eq!(error.resource.as_deref(), Some("AIGatewayRoute team/r"));
        assert_eq!(error.source.as_ref().unwrap().document, 2);
        assert!(d
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("Widget")));
    }

    #[test]
    fn yaml_syntax_error_names_the_file() {
        let mut r = Resources::default();
        let mut d = Vec::new();
        load_str("bad.yaml", "kind: [", &mut r, &mut d);
        assert_eq!(d.len(), 1);
        assert!(d[0].to_string().contains("bad.yaml"));
    }

    #[test]
    fn seed_blueprint_loads_without_errors() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/blueprint");
        let mut r = Resources::default();
        let mut d = Vec::new();
        for file in [
            "gateway.yaml",
            "model-backends.yaml",
            "multi-model-routing/ai-gateway-route.yaml",
        ] {
            let path = format!("{dir}/{file}");
            let text = std::fs::read_to_string(&path).expect("the seed blueprint in ../shared");
            load_str(&path, &text, &mut r, &mut d);
        }
        assert!(!crate::error::has_errors(&d), "{d:?}");
        assert_eq!(r.gateways.len(), 1);
        assert_eq!(r.backends.len(), 3);
        assert_eq!(r.ai_service_backends.len(), 3);
        assert_eq!(r.ai_gateway_routes[0].spec.rules.len(), 3);
        assert_eq!(r.backend_tls_policies.len(), 1);
    }
}
