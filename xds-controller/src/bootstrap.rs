//! The Envoy bootstrap: where the ADS server and the credential service are.

use serde_json::{json, Value};

pub const XDS_CLUSTER: &str = "aigw_xds";
pub const CONTROLLER_CLUSTER: &str = "aigw_controller";
/// The rate-limit service (gRPC) the ratelimit filter calls.
pub const RATELIMIT_CLUSTER: &str = "aigw_ratelimit";

fn static_cluster(name: &str, address: &str, port: u16, http2: bool) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": address, "port_value": port}}
        }}]}]},
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    cluster
}

pub struct BootstrapPorts {
    pub admin: u16,
    pub xds: u16,
    pub credentials: u16,
    pub ratelimit: u16,
}

pub fn bootstrap(node_id: &str, controller_address: &str, ports: &BootstrapPorts) -> Value {
    json!({
        "node": {"id": node_id, "cluster": "aigw"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports.admin}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "stats_config": stats_config(),
        "static_resources": {"clusters": [
            static_cluster(XDS_CLUSTER, controller_address, ports.xds, true),
            static_cluster(CONTROLLER_CLUSTER, controller_address, ports.credentials, false),
            static_cluster(RATELIMIT_CLUSTER, controller_address, ports.ratelimit, true),
        ]},
    })
}

/// Turns the labels the filter encodes in its metric names into Prometheus
/// labels (see `aigw_filter::metrics`), with buckets that suit tokens and
/// milliseconds.
pub fn stats_config() -> Value {
    use aigw_filter::metrics::{tag_regex, TAGS, TOKEN_USAGE};
    let tags: Vec<Value> = TAGS
        .iter()
        .map(|(key, label)| json!({"tag_name": label, "regex": tag_regex(key)}))
        .collect();
    let tokens: Vec<u64> = (0..14).map(|i| 1u64 << (2 * i)).collect();
    let ms = [
        1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000,
    ];
    json!({
        "stats_tags": tags,
        "histogram_bucket_settings": [
            {"match": {"contains": format!("{TOKEN_USAGE};")}, "buckets": tokens},
            {"match": {"contains": "_milliseconds;"}, "buckets": ms},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_with_stats_tags_is_valid_envoy() {
        let ports = BootstrapPorts {
            admin: 9901,
            xds: 1,
            credentials: 2,
            ratelimit: 3,
        };
        let b = bootstrap("n", "127.0.0.1", &ports);
        crate::proto::to_any(
            "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
            &b,
        )
        .expect("a valid Envoy bootstrap");
        let tags = b["stats_config"]["stats_tags"].as_array().unwrap();
        assert_eq!(tags.len(), aigw_filter::metrics::TAGS.len());
        assert_eq!(tags[0]["regex"], r"^wasmcustom\..*?(;op=([^;]*))");
    }

    #[test]
    fn kubernetes_bootstrap_has_the_same_stats_config() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/envoy.yaml"))
                .unwrap();
        let config_map = serde_yaml::Deserializer::from_str(&text)
            .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "aigw-envoy-bootstrap")
            .unwrap();
        let b: Value =
            serde_json::from_str(config_map["data"]["bootstrap.json"].as_str().unwrap()).unwrap();
        assert_eq!(b["stats_config"], stats_config());
    }

    #[test]
    fn grafana_dashboard_uses_the_exported_names() {
        use aigw_filter::metrics::*;
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/aigw-dashboard.json"
        ))
        .unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        let counters = [REQUESTS_TOTAL, TOKENS_TOTAL];
        let histograms = [
            TOKEN_USAGE,
            REQUEST_DURATION,
            TIME_TO_FIRST_TOKEN,
            TIME_PER_OUTPUT_TOKEN,
        ];
        let labels: Vec<&str> = TAGS.iter().map(|t| t.1).collect();
        let mut used = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                for word in words.filter(|w| w.starts_with("aigw_") || w.starts_with("gen_ai_")) {
                    let known = counters.contains(&word)
                        || labels.contains(&word)
                        || ["_bucket", "_count", "_sum"].iter().any(|s| {
                            word.strip_suffix(s)
                                .is_some_and(|b| histograms.contains(&b))
                        });
                    assert!(known, "{word} in {expr}");
                    used += 1;
                }
            }
        }
        assert!(used > 20);
    }
}
