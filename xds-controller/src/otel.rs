//! `aigw run --otlp-endpoint`: Envoy's OpenTelemetry tracer on every
//! listener, exporting OTLP/HTTP or OTLP/gRPC (`grpc://HOST:PORT`) to a
//! collector, with GenAI span attributes
//! taken from what the filter measured. Message content is never recorded:
//! the attributes are models, backend, provider and token counts.

use crate::translate::envoy::HCM_TYPE;
use serde_json::{json, Value};

pub const OTLP_CLUSTER: &str = "aigw_otlp";

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP (protobuf body POSTed to a path).
    Http,
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`
    /// over HTTP/2).
    Grpc,
}

/// A collector's OTLP endpoint: `http://host:port[/path]` or `host:port`
/// (OTLP/HTTP), or `grpc://host:port` (OTLP/gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// The traces path, `/v1/traces` unless given (OTLP/HTTP only).
    pub path: String,
}

pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let (protocol, rest) = match text.strip_prefix("grpc://") {
        Some(rest) => (Protocol::Grpc, rest),
        None => (Protocol::Http, text.strip_prefix("http://").unwrap_or(text)),
    };
    if rest.starts_with("https://") || rest.starts_with("grpcs://") {
        return Err(
            "--otlp-endpoint: TLS is not supported; use http://HOST:PORT or grpc://HOST:PORT"
                .into(),
        );
    }
    if rest.contains("://") {
        return Err(format!(
            "--otlp-endpoint {text:?}: expected http://HOST:PORT[/PATH] or grpc://HOST:PORT"
        ));
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
    if protocol == Protocol::Grpc && !(path.is_empty() || path == "/") {
        return Err(format!(
            "--otlp-endpoint {text:?}: an OTLP/gRPC endpoint has no path"
        ));
    }
    let path = if path.is_empty() || path == "/" {
        "/v1/traces".to_string()
    } else {
        path.to_string()
    };
    Ok(Endpoint {
        protocol,
        host: host.to_string(),
        port,
        path,
    })
}

/// The bootstrap cluster the tracer exports through (HTTP/2 for gRPC).
pub fn cluster(endpoint: &Endpoint) -> Value {
    let mut cluster = json!({
        "name": OTLP_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": OTLP_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}
        }}]}]},
    });
    if endpoint.protocol == Protocol::Grpc {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    cluster
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
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "service_name": "aigw",
    });
    match endpoint.protocol {
        Protocol::Http => {
            let uri = format!(
                "http://{}:{}{}",
                endpoint.host, endpoint.port, endpoint.path
            );
            config["http_service"] = json!({
                "http_uri": {"uri": uri, "cluster": OTLP_CLUSTER, "timeout": "2s"},
            });
        }
        Protocol::Grpc => {
            config["grpc_service"] = json!({
                "envoy_grpc": {"cluster_name": OTLP_CLUSTER, "authority": format!("{}:{}", endpoint.host, endpoint.port)},
                "timeout": "2s",
            });
        }
    }
    let tracing = json!({
        "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": config},
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
    crate::translate::envoy::publish_for(listener, &tracing);
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
        assert_eq!(e.protocol, Protocol::Http);
        let e = parse_endpoint("grpc://collector:4317").unwrap();
        assert_eq!(
            (e.protocol, e.host.as_str(), e.port),
            (Protocol::Grpc, "collector", 4317)
        );
        assert!(parse_endpoint("grpc://collector:4317/v1/traces").is_err());
        assert!(parse_endpoint("grpcs://x:1").is_err());
        assert!(parse_endpoint("ftp://x:1").is_err());
        assert!(parse_endpoint("https://x:1").is_err());
        assert!(parse_endpoint("nope").is_err());
        assert!(parse_endpoint(":80").is_err());
    }

    #[test]
    fn tracing_is_valid_envoy_and_records_no_content() {
        for (endpoint, service) in [
            ("127.0.0.1:4318", "http_service"),
            ("grpc://127.0.0.1:4317", "grpc_service"),
        ] {
            let mut listener = json!({
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"@type": HCM_TYPE, "stat_prefix": "x",
                        "route_config": {}, "http_filters": []},
                }]}],
            });
            let e = parse_endpoint(endpoint).unwrap();
            add_tracing(&mut listener, &e);
            crate::proto::to_any(crate::proto::LISTENER, &listener).expect("valid listener");
            crate::proto::to_any(crate::proto::CLUSTER, &cluster(&e)).expect("valid cluster");
            let text = listener.to_string();
            assert!(text.contains("envoy.tracers.opentelemetry"));
            assert!(text.contains(service), "{text}");
            assert!(!text.contains("REQ_BODY") && !text.contains("messages"));
            let http2 = cluster(&e).to_string().contains("http2_protocol_options");
            assert_eq!(http2, e.protocol == Protocol::Grpc);
        }
    }
}
