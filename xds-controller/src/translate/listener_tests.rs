//! Listener settings from the Gateway's ClientTrafficPolicy.

use super::{translate, Options, Translation};
use serde_json::Value;

fn run(policy: &str) -> Translation {
    let text = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec: {{gatewayClassName: aigw, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: client}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
{policy}"#
    );
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    crate::load::load_str("test.yaml", &text, &mut resources, &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&resources, &Options::for_tests())
}

fn hcm(t: &Translation) -> &Value {
    &t.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]
}

#[test]
fn timeouts_reach_the_connection_manager() {
    let t = run(
        "  timeout: {http: {streamIdleTimeout: 2m30s, requestReceivedTimeout: 90s, idleTimeout: 500ms}}\n  connection: {bufferLimit: 2Mi}",
    );
    let h = hcm(&t);
    assert_eq!(h["stream_idle_timeout"], "150s");
    assert_eq!(h["request_timeout"], "90s");
    assert_eq!(h["common_http_protocol_options"]["idle_timeout"], "0.500s");
    assert_eq!(
        t.listeners[0]["per_connection_buffer_limit_bytes"],
        (2 << 20) + (1 << 20)
    );
}

#[test]
fn defaults_without_timeouts() {
    let t = run("  connection: {bufferLimit: 1Mi}");
    let h = hcm(&t);
    assert_eq!(h["stream_idle_timeout"], "300s");
    assert!(h.get("request_timeout").is_none());
    assert!(h.get("common_http_protocol_options").is_none());
}

#[test]
fn a_bad_duration_names_its_field_and_keeps_the_default() {
    let t = run("  timeout: {http: {streamIdleTimeout: soon}}");
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.message.contains("\"soon\""))
        .expect("a diagnostic");
    assert_eq!(
        d.field.as_deref(),
        Some("spec.timeout.http.streamIdleTimeout")
    );
    assert_eq!(hcm(&t)["stream_idle_timeout"], "300s");
}
