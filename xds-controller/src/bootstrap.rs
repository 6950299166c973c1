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
