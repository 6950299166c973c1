//! Clusters and the upstream role's shared configuration.

use super::{translate, Options, Translation};
use aigw_filter::config::PluginConfig;
use serde_json::{json, Value};

fn run(text: &str) -> Translation {
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    crate::load::load_str("test.yaml", text, &mut resources, &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&resources, &Options::for_tests())
}

const TWO_RULES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec: {gatewayClassName: aigw, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: host}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 8000}}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: a}
spec: {schema: {name: OpenAI}, backendRef: {name: host, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: b}
spec: {schema: {name: OpenAI}, backendRef: {name: host, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: small}]}]
    backendRefs: [{name: a, modelNameOverride: gpt-4o-mini}]
  - matches: [{headers: [{name: x-ai-eg-model, value: big}]}]
    backendRefs: [{name: a}, {name: b, priority: 1}]
"#;

fn plugin_config(filter: &Value) -> PluginConfig {
    let text = filter["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("a wasm filter configuration");
    PluginConfig::parse(text.as_bytes()).unwrap()
}

/// The router's and the upstream role's configurations of the listener.
fn listener_configs(t: &Translation) -> (PluginConfig, PluginConfig) {
    let filters = &t.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    let router = plugin_config(&filters[0]);
    let envoy_router = filters.as_array().unwrap().last().unwrap();
    assert_eq!(envoy_router["name"], "envoy.filters.http.router");
    let upstream_filters = &envoy_router["typed_config"]["upstream_http_filters"];
    assert_eq!(
        upstream_filters[1]["name"],
        "envoy.filters.http.upstream_codec"
    );
    (router, plugin_config(&upstream_filters[0]))
}

fn endpoint_metadata(cluster: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in cluster["load_assignment"]["endpoints"].as_array().unwrap() {
        for e in group["lb_endpoints"].as_array().unwrap() {
            let m = &e["metadata"]["filter_metadata"]["aigw"];
            out.push((
                m["backend"].as_str().unwrap().to_string(),
                m["peers"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn route_clusters(t: &Translation) -> Vec<String> {
    t.routes[0]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"]["cluster"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_backend_with_two_model_overrides_in_one_rule() {
    // Falling back to a cheaper model of the same provider: each endpoint
    // names its own configuration, so each attempt sends its own model.
    let t = run(&TWO_RULES.replace(
        "[{name: a}, {name: b, priority: 1}]",
        "[{name: a, modelNameOverride: gpt-4o}, {name: a, modelNameOverride: gpt-4o-mini, priority: 1}]",
    ));
    assert_eq!(
        endpoint_metadata(&t.clusters[1]),
        [
            ("default/a#gpt-4o".into(), "default/a".into()),
            ("default/a#gpt-4o-mini".into(), "default/a".into())
        ]
    );
    let (_, upstream) = listener_configs(&t);
    for (key, model) in [
        ("default/a#gpt-4o", "gpt-4o"),
        ("default/a#gpt-4o-mini", "gpt-4o-mini"),
    ] {
        assert_eq!(
            upstream.backends[key].model_name_override.as_deref(),
            Some(model)
        );
    }
}

#[test]
fn the_upstream_role_is_configured_once_per_listener() {
    let t = run(TWO_RULES);
    assert_eq!(t.clusters.len(), 2);
    assert_eq!(
        endpoint_metadata(&t.clusters[0]),
        [("default/a#gpt-4o-mini".into(), "default/a".into())]
    );
    assert_eq!(
        endpoint_metadata(&t.clusters[1]),
        [
            ("default/a".into(), "default/a,default/b".into()),
            ("default/b".into(), "default/a,default/b".into())
        ]
    );
    // The rule with several backends runs the router's upstream filters;
    // the single-backend one is served directly (see `direct.rs`), so
    // its cluster runs none.
    let filters = |cluster: &Value| {
        cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .get("http_filters")
            .cloned()
    };
    assert_eq!(
        filters(&t.clusters[0]).unwrap()[0]["name"],
        "envoy.filters.http.upstream_codec"
    );
    assert!(filters(&t.clusters[1]).is_none());
    let (router, upstream) = listener_configs(&t);
    // The single-backend cluster names its backend; the other one's
    // endpoints do, each in its metadata.
    for config in [&router, &upstream] {
        assert_eq!(
            config.cluster_backends.iter().collect::<Vec<_>>(),
            [(
                &"aigw/default/r/rule/0".to_string(),
                &"default/a#gpt-4o-mini".to_string()
            )]
        );
    }
    let keys = ["default/a", "default/a#gpt-4o-mini", "default/b"];
    assert_eq!(upstream.backends.keys().collect::<Vec<_>>(), keys);
    assert_eq!(router.backends.keys().collect::<Vec<_>>(), keys);
    assert_eq!(
        upstream.credentials, router.credentials,
        "the router writes direct requests"
    );
    assert_eq!(
        router.direct.iter().collect::<Vec<_>>(),
        [(&"small".to_string(), &"default/a#gpt-4o-mini".to_string())]
    );
    assert!(upstream.direct.is_empty());
    assert_eq!(
        upstream.backends["default/a#gpt-4o-mini"]
            .model_name_override
            .as_deref(),
        Some("gpt-4o-mini")
    );
    for listener in &t.listeners {
        crate::proto::to_any(crate::proto::LISTENER, listener).expect("a valid Envoy listener");
    }
}

#[test]
fn direct_serving_follows_the_listener_and_can_be_turned_off() {
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    let hosted = TWO_RULES.replace(
        "{endpoints: [{ip: {address: 127.0.0.1, port: 8000}}]}",
        "{endpoints: [{fqdn: {hostname: llm.example, port: 443}}]}",
    );
    crate::load::load_str("test.yaml", &hosted, &mut resources, &mut diagnostics);
    let t = translate(&resources, &Options::for_tests());
    let routes = &t.routes[0]["virtual_hosts"][0]["routes"];
    // The route sets the provider's host for the rule served directly, and
    // takes only requests the router role wrote for its backend, to a
    // cluster named after it.
    assert_eq!(routes[0]["route"]["host_rewrite_literal"], "llm.example");
    assert_eq!(
        routes[0]["match"]["headers"][1],
        json!({"name": "x-aigw-direct", "string_match": {"exact": "default/a#gpt-4o-mini"}})
    );
    assert_eq!(
        routes[0]["route"]["cluster"],
        "aigw/default/r/rule/0/direct/default/a#gpt-4o-mini"
    );
    assert!(t
        .clusters
        .iter()
        .any(|c| c["name"] == routes[0]["route"]["cluster"]));
    assert!(routes[1]["route"].get("host_rewrite_literal").is_none());
    assert_eq!(routes[1]["match"]["headers"].as_array().unwrap().len(), 1);
    let off = translate(
        &resources,
        &Options {
            direct: false,
            ..Options::for_tests()
        },
    );
    let (router, _) = listener_configs(&off);
    assert!(router.direct.is_empty() && router.credentials.is_none());
    assert!(off
        .clusters
        .iter()
        .all(|c| !c.to_string().contains("upstream_codec")));
    let routes = &off.routes[0]["virtual_hosts"][0]["routes"];
    assert!(routes[0]["route"].get("host_rewrite_literal").is_none());
}

#[test]
fn rules_with_the_same_backends_share_a_cluster() {
    let mut text = TWO_RULES.to_string();
    for model in ["big-2", "big-3"] {
        text.push_str(&format!(
            "  - matches: [{{headers: [{{name: x-ai-eg-model, value: {model}}}]}}]\n    backendRefs: [{{name: a}}, {{name: b, priority: 1}}]\n"
        ));
    }
    // Same backends in another order of priority: not the same cluster.
    text.push_str("  - matches: [{headers: [{name: x-ai-eg-model, value: other}]}]\n    backendRefs: [{name: b}, {name: a, priority: 1}]\n");
    let t = run(&text);
    let names: Vec<&str> = t
        .clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // (Rule 0, one backend, is served directly: its cluster is named
    // after that backend.)
    let direct = "aigw/default/r/rule/0/direct/default/a#gpt-4o-mini";
    assert_eq!(
        names,
        [direct, "aigw/default/r/rule/1", "aigw/default/r/rule/4"]
    );
    assert_eq!(
        route_clusters(&t),
        [
            direct,
            "aigw/default/r/rule/1",
            "aigw/default/r/rule/1",
            "aigw/default/r/rule/1",
            "aigw/default/r/rule/4"
        ]
    );
}

#[test]
fn a_traffic_policy_on_one_route_keeps_its_cluster_apart() {
    let mut text = TWO_RULES.to_string();
    text.push_str(
        r#"---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: s}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: big-2}]}]
    backendRefs: [{name: a}, {name: b, priority: 1}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: s}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: s}]
  circuitBreaker: {maxParallelRequests: 7}
"#,
    );
    let t = run(&text);
    assert_eq!(t.clusters.len(), 3);
    assert_eq!(t.clusters[2]["name"], "aigw/default/s/rule/0");
    assert_eq!(
        route_clusters(&t).last().map(String::as_str),
        Some("aigw/default/s/rule/0")
    );
}

#[test]
fn addresses_make_static_clusters_and_hostnames_dns_ones() {
    let t = run(TWO_RULES);
    assert_eq!(t.clusters[0]["type"], "STATIC");
    assert!(t.clusters[0].get("dns_lookup_family").is_none());
    let t = run(&TWO_RULES.replace(
        "{ip: {address: 127.0.0.1, port: 8000}}",
        "{fqdn: {hostname: llm.internal, port: 8000}}",
    ));
    assert_eq!(t.clusters[0]["type"], "STRICT_DNS");
    assert_eq!(t.clusters[0]["dns_lookup_family"], "V4_PREFERRED");
    for cluster in &t.clusters {
        crate::proto::to_any(crate::proto::CLUSTER, cluster).expect("a valid Envoy cluster");
    }
}

/// The properties the router role publishes, as the served listener says.
fn published(t: &Translation) -> Vec<String> {
    let (router, upstream) = listener_configs(t);
    assert_eq!(upstream.published, None, "the upstream role publishes none");
    router.published.expect("a list").into_iter().collect()
}

#[test]
fn the_router_role_publishes_only_what_envoy_reads() {
    // Nothing reads the request's facts: none is published.
    assert!(published(&run(TWO_RULES)).is_empty());

    // The access log reads them all.
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    crate::load::load_str("test.yaml", TWO_RULES, &mut resources, &mut diagnostics);
    let options = Options {
        access_log: Some("/dev/stdout".into()),
        ..Options::for_tests()
    };
    let logged = published(&translate(&resources, &options));
    for name in [
        "llm_input_token",
        "llm_reasoning_token",
        "backend",
        "provider",
        "ttft_ms",
    ] {
        assert!(logged.iter().any(|p| p == name), "{name}: {logged:?}");
    }

    // A rate limit charging output tokens reads those only.
    let limited = format!(
        "{TWO_RULES}---\n{}",
        r#"apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  rateLimit:
    type: Global
    global:
      rules:
      - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
        limit: {requests: 100, unit: Hour}
        cost:
          request: {from: Number, number: 0}
          response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: out}}
"#
    )
    .replace(
        "  parentRefs: [{name: gw}]\n",
        "  parentRefs: [{name: gw}]\n  llmRequestCosts: [{metadataKey: out, type: OutputToken}]\n",
    );
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    crate::load::load_str("test.yaml", &limited, &mut resources, &mut diagnostics);
    let mut t = translate(&resources, &Options::for_tests());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(published(&t), ["llm_output_token"]);

    // Tracing adds what its span tags read.
    let endpoint = crate::otel::parse_endpoint("127.0.0.1:4318").unwrap();
    crate::otel::add_tracing(&mut t.listeners[0], &endpoint);
    assert_eq!(
        published(&t),
        [
            "backend",
            "llm_input_token",
            "llm_output_token",
            "provider",
            "response_model"
        ]
    );
    crate::proto::to_any(crate::proto::LISTENER, &t.listeners[0]).expect("a valid listener");
}

#[test]
fn a_parent_ref_section_name_serves_the_route_on_that_listener_only() {
    let text = TWO_RULES
        .replace(
            "listeners: [{name: http, port: 80, protocol: HTTP}]",
            "listeners: [{name: http, port: 80, protocol: HTTP}, {name: extra, port: 81, protocol: HTTP}]",
        )
        .replace(
            "parentRefs: [{name: gw}]",
            "parentRefs: [{name: gw, sectionName: extra}]",
        );
    let t = run(&text);
    let served: Vec<(String, usize)> = t
        .routes
        .iter()
        .map(|r| {
            let routes = r["virtual_hosts"][0]["routes"].as_array().unwrap();
            (r["name"].as_str().unwrap().to_string(), routes.len())
        })
        .collect();
    assert_eq!(
        served,
        [
            ("default/gw/http".to_string(), 0),
            ("default/gw/extra".to_string(), 2)
        ]
    );
}
