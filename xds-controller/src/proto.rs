//! Turns the Envoy JSON the translator writes into protobuf `Any` values,
//! checked against Envoy's own schema (from the envoy-types descriptors).

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;
use std::sync::OnceLock;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).expect("the envoy-types descriptor set is valid")
    })
}

/// Encodes `json` as the message named by `type_url`.
pub fn to_any(type_url: &str, json: &Value) -> Result<prost_types_any::Any, String> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let descriptor = pool()
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type {name}"))?;
    let message =
        DynamicMessage::deserialize(descriptor, json).map_err(|e| format!("{name}: {e}"))?;
    Ok(prost_types_any::Any {
        type_url: type_url.to_string(),
        value: message.encode_to_vec(),
    })
}

/// The `Any` type the ADS messages carry.
pub mod prost_types_any {
    pub use envoy_types::pb::google::protobuf::Any;
}

/// The `name` field every xDS resource has.
pub fn resource_name(json: &Value) -> String {
    json.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_nested_any_and_rejects_unknown_fields() {
        let cluster = json!({
            "name": "c", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http_protocol_options": {}}
                }
            }
        });
        let any = to_any(CLUSTER, &cluster).unwrap();
        assert!(!any.value.is_empty());
        let wrong = json!({"name": "c", "connect_timeuot": "1s"});
        assert!(to_any(CLUSTER, &wrong)
            .unwrap_err()
            .contains("connect_timeuot"));
    }
}
