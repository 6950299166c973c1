//! `aigw run --otlp-endpoint`: Envoy's OpenTelemetry tracer on every
//! listener, exporting OTLP/HTTP to a collector, with GenAI span attributes
//! taken from what the filter measured. Message content is never recorded:
//! the attributes are models, backend, provider and token counts.

use crate::translate::envoy::HCM_TYPE;
use serde_json::{json, Value};

pub const OTLP_CLUSTER: &str = "aigw_otlp";

/// A collector's OTLP/HTTP endpoint: `http://host:port[/path]` or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The traces path, `/v1/traces` unless given.
    pub path: String,
}

pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let rest = text.strip_prefix("http://").unwrap_or(text);
    if rest.starts_with("https://") {
        return Err("--otlp-endpoint: https is not supported; use http://HOST:PORT".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("--otlp-endpoint {text:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--otlp-endpoint {text:?}: bad port"))?;
    if host.is_empty() {
        return Err(format!("--otlp-endpoint {text:?}: expected HOST:PORT"));
    }
    let path = if path.is_empty() || path == "/" {
        "/v1/traces".to_string()
    } else {
        path.to_string()
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
        path,
    })
}

/// The bootstrap cluster the tracer exports through.
pub fn cluster(endpoint: &Endpoint) -> Value {
    json!({
        "name": OTLP_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}
        }}]}]},
    })
}

/// GenAI span attributes (OpenTelemetry names) from the filter's state.
fn custom_tags() -> Vec<Value> {
    let state = |name: &str| format!("%FILTER_STATE(wasm.{name}:PLAIN)%");
    let mut tags =
        vec![json!({"tag": "gen_ai.request.model", "request_header": {"name": "x-ai-eg-model"}})];
    for (tag, name) in [
        ("gen_ai.response.model", "response_model"),
        ("gen_ai.provider.name", "provider"),
        ("aigw.backend", "backend"),
        ("gen_ai.usage.input_tokens", "llm_input_token"),
        ("gen_ai.usage.output_tokens", "llm_output_token"),
    ] {
        tags.push(json!({"tag": tag, "value": state(name)}));
    }
    tags
}

/// Adds tracing to every HTTP connection manager of `listener`.
pub fn add_tracing(listener: &mut Value, endpoint: &Endpoint) {
    let uri = format!(
        "http://{}:{}{}",
        endpoint.host, endpoint.port, endpoint.path
    );
    let tracing = json!({
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "http_service": {
                    "http_uri": {"uri": uri, "cluster": OTLP_CLUSTER, "timeout": "2s"},
                },
                "service_name": "aigw",
            },
        },
        "custom_tags": custom_tags(),
    });
    let Some(chains) = listener["filter_chains"].as_array_mut() else {
        return;
    };
    for chain in chains {
        let Some(filters) = chain["filters"].as_array_mut() else {
            continue;
        };
        for filter in filters {
            let config = &mut filter["typed_config"];
            if config["@type"] == HCM_TYPE {
                config["tracing"] = tracing.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = parse_endpoint("http://collector:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("collector", 4318, "/v1/traces")
        );
        let e = parse_endpoint("127.0.0.1:9/otlp/v1/traces").unwrap();
        assert_eq!((e.port, e.path.as_str()), (9, "/otlp/v1/traces"));
        assert!(parse_endpoint("https://x:1").is_err());
        assert!(parse_endpoint("nope").is_err());
        assert!(parse_endpoint(":80").is_err());
    }

    #[test]
    fn tracing_is_valid_envoy_and_records_no_content() {
        let mut listener = json!({
            "name": "l",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {"@type": HCM_TYPE, "stat_prefix": "x",
                    "route_config": {}, "http_filters": []},
            }]}],
        });
        let e = parse_endpoint("127.0.0.1:4318").unwrap();
        add_tracing(&mut listener, &e);
        crate::proto::to_any(crate::proto::LISTENER, &listener).expect("valid listener");
        let text = listener.to_string();
        assert!(text.contains("envoy.tracers.opentelemetry"));
        assert!(!text.contains("REQ_BODY") && !text.contains("messages"));
    }
}
