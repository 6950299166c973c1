//! Upstream TLS from Backend ports and BackendTLSPolicy: SNI, names the
//! certificate must carry, CA certificates, and HTTP/2 by ALPN.

use super::{translate, Options, Translation};
use serde_json::Value;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

fn run(extra: &str) -> Translation {
    let text = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec: {{gatewayClassName: aigw, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: tls}}
spec: {{endpoints: [{{fqdn: {{hostname: llm.example.com, port: 443}}}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: plain}}
spec: {{endpoints: [{{ip: {{address: 10.0.0.1, port: 8000}}}}]}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: tls}}
spec: {{schema: {{name: OpenAI}}, backendRef: {{name: tls, kind: Backend, group: gateway.envoyproxy.io}}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: plain}}
spec: {{schema: {{name: OpenAI}}, backendRef: {{name: plain, kind: Backend, group: gateway.envoyproxy.io}}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: route}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{headers: [{{name: x-ai-eg-model, value: a}}]}}]
    backendRefs: [{{name: tls}}]
  - matches: [{{headers: [{{name: x-ai-eg-model, value: b}}]}}]
    backendRefs: [{{name: tls}}, {{name: plain, priority: 1}}]
{extra}"#
    );
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    crate::load::load_str("test.yaml", &text, &mut resources, &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&resources, &Options::for_tests())
}

fn policy(validation: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tls}}
spec:
  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: tls}}]
  validation: {validation}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca}}
data: {{ca.crt: "{}"}}
"#,
        CA.replace('\n', "\\n")
    )
}

fn tls_context(cluster: &Value) -> &Value {
    &cluster["transport_socket_matches"][0]["transport_socket"]["typed_config"]
}

fn protocol_options(cluster: &Value) -> &Value {
    &cluster["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
}

#[test]
fn port_443_is_tls_with_http2_offered_when_every_endpoint_is_tls() {
    let t = run("");
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let only_tls = &t.clusters[0];
    let context = tls_context(only_tls);
    assert_eq!(context["sni"], "llm.example.com");
    let common = &context["common_tls_context"];
    assert_eq!(
        common["alpn_protocols"],
        serde_json::json!(["h2", "http/1.1"])
    );
    assert_eq!(
        common["validation_context"]["trusted_ca"]["filename"],
        "/ca.pem"
    );
    assert_eq!(
        common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
        "llm.example.com"
    );
    assert!(protocol_options(only_tls)["auto_config"].is_object());
    assert_eq!(
        only_tls["transport_socket"], only_tls["transport_socket_matches"][0]["transport_socket"],
        "the default socket must support ALPN too"
    );

    let mixed = &t.clusters[1];
    assert_eq!(
        tls_context(mixed)["common_tls_context"]["alpn_protocols"],
        serde_json::json!(["http/1.1"])
    );
    assert!(protocol_options(mixed)["explicit_http_config"].is_object());
    assert!(mixed.get("transport_socket").is_none());
}

#[test]
fn ca_certificate_refs_and_subject_alt_names() {
    let t = run(&policy(
        "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: sni.example.com, \
         subjectAltNames: [{type: Hostname, hostname: a.example.com}, {type: URI, uri: 'spiffe://x/y'}]}",
    ));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let context = tls_context(&t.clusters[0]);
    assert_eq!(context["sni"], "sni.example.com");
    let validation = &context["common_tls_context"]["validation_context"];
    assert_eq!(
        validation["trusted_ca"]["inline_string"]
            .as_str()
            .unwrap()
            .trim(),
        CA
    );
    let sans: Vec<(&str, &str)> = validation["match_typed_subject_alt_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["san_type"].as_str().unwrap(),
                m["matcher"]["exact"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(sans, [("DNS", "a.example.com"), ("URI", "spiffe://x/y")]);
}

#[test]
fn bad_policies_name_the_field() {
    let cases = [
        (
            "{caCertificateRefs: [{kind: ConfigMap, name: missing}]}",
            "spec.validation.caCertificateRefs[0].name",
            "ConfigMap default/missing does not exist",
        ),
        (
            "{wellKnownCACertificates: System, caCertificateRefs: [{name: ca}]}",
            "spec.validation",
            "exactly one of",
        ),
        (
            "{wellKnownCACertificates: Mozilla}",
            "spec.validation.wellKnownCACertificates",
            "not known",
        ),
        (
            "{wellKnownCACertificates: System, subjectAltNames: [{type: IP, hostname: x}]}",
            "spec.validation.subjectAltNames[0]",
            "not Hostname or URI",
        ),
        (
            "{caCertificateRefs: [{kind: Service, name: ca}]}",
            "spec.validation.caCertificateRefs[0].kind",
            "not ConfigMap or Secret",
        ),
    ];
    for (validation, field, message) in cases {
        let t = run(&policy(validation));
        let d = t
            .diagnostics
            .iter()
            .find(|d| d.message.contains(message))
            .unwrap_or_else(|| panic!("{validation}: {:?}", t.diagnostics));
        assert_eq!(d.field.as_deref(), Some(field), "{validation}");
    }
}
