//! Builders for the Envoy JSON this gateway serves. Each returns the JSON
//! form of one Envoy proto; `proto.rs` checks and encodes it.

use aigw_filter::config::PluginConfig;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const UPSTREAM_CODEC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec";
const HTTP_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const CEL_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter";
const TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// The listener filter that runs the router role.
pub const ROUTER_FILTER: &str = "aigw.router";

/// Endpoint metadata namespace the filter reads the backend name from.
pub const METADATA_NAMESPACE: &str = "aigw";

/// How Envoy loads the filter. Identical everywhere so that the listener and
/// every cluster share one VM per worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmCode {
    pub path: String,
    /// Environment variables the VM may read (names only; values stay in
    /// Envoy's environment and out of /config_dump).
    pub env_keys: Vec<String>,
}

pub fn wasm_filter(name: &str, code: &WasmCode, config: &PluginConfig) -> Value {
    let vm_config = json!({
        "vm_id": "aigw",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": code.path}},
        "environment_variables": {"host_env_keys": code.env_keys},
    });
    json!({
        "name": name,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": name,
                "root_id": "aigw",
                "allow_on_headers_stop_iteration": true,
                "vm_config": vm_config,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": serde_json::to_string(config).unwrap_or_default(),
                },
            },
        },
    })
}

/// The filter properties (`wasm.<name>` filter state) that Envoy
/// configuration `text` reads: access-log and trace formats, rate-limit
/// costs, CEL. The router role publishes only these (a host call each).
pub fn properties_read(text: &str) -> BTreeSet<String> {
    let mut read = BTreeSet::new();
    for marker in ["FILTER_STATE(wasm.", "filter_state['wasm."] {
        for (at, _) in text.match_indices(marker) {
            let name: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                read.insert(name);
            }
        }
    }
    read
}

/// Adds what `reads` reads to the properties the router role of
/// `listener` publishes (for configuration added after translation).
pub fn publish_for(listener: &mut Value, reads: &Value) {
    let added = properties_read(&reads.to_string());
    change_router_config(listener, |config| {
        if let Some(published) = &mut config.published {
            published.extend(added.iter().cloned());
        }
    });
}

/// Changes the plugin configuration of `listener`'s router role.
pub fn change_router_config(listener: &mut Value, change: impl Fn(&mut PluginConfig)) {
    let Some(filters) = listener
        .pointer_mut("/filter_chains/0/filters/0/typed_config/http_filters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for filter in filters.iter_mut().filter(|f| f["name"] == ROUTER_FILTER) {
        let Some(value) = filter.pointer_mut("/typed_config/config/configuration/value") else {
            continue;
        };
        let Ok(mut config) = PluginConfig::parse(value.as_str().unwrap_or("").as_bytes()) else {
            continue;
        };
        change(&mut config);
        *value = json!(serde_json::to_string(&config).unwrap_or_default());
    }
}

#[cfg(test)]
pub fn router_filter() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}})
}

/// The router, running `upstream_filter` on every attempt of every cluster
/// it routes to (clusters name no upstream filters of their own). One
/// filter configuration per listener: Envoy reads and hashes the module for
/// every configuration it creates (about 2 ms), which as one per cluster
/// made 2000 routes take seconds to apply.
pub fn router_filter_with_upstream(upstream_filter: Value) -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": ROUTER_TYPE,
            "upstream_http_filters": [upstream_filter, upstream_codec()],
        },
    })
}

pub fn upstream_codec() -> Value {
    json!({"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": UPSTREAM_CODEC_TYPE}})
}

/// `typed_extension_protocol_options` of an AI cluster: with `by_alpn`,
/// HTTP/2 where the provider picks it over TLS, else HTTP/1.1.
pub fn upstream_http_options(by_alpn: bool) -> Value {
    let (key, protocol) = if by_alpn {
        (
            "auto_config",
            json!({"http_protocol_options": {}, "http2_protocol_options": {}}),
        )
    } else {
        ("explicit_http_config", json!({"http_protocol_options": {}}))
    };
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE,
            key: protocol,
        }
    })
}

/// An upstream TLS transport socket with SNI and certificate validation.
/// `ca` is a PEM bundle; without it, the file of system (and extra) CAs.
/// With `offer_http2`, ALPN offers HTTP/2 first: only for clusters whose
/// protocol options follow ALPN ([`upstream_http_options`]).
pub fn upstream_tls(
    sni: &str,
    ca_file: &str,
    ca: Option<&str>,
    subject_alt_names: &[(&str, String)],
    offer_http2: bool,
) -> Value {
    let alpn = if offer_http2 {
        json!(["h2", "http/1.1"])
    } else {
        json!(["http/1.1"])
    };
    let trusted_ca = match ca {
        Some(pem) => json!({"inline_string": pem}),
        None => json!({"filename": ca_file}),
    };
    let sans: Vec<Value> = subject_alt_names
        .iter()
        .map(|(kind, name)| json!({"san_type": kind, "matcher": {"exact": name}}))
        .collect();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TLS_TYPE,
            "sni": sni,
            "common_tls_context": {
                "alpn_protocols": alpn,
                "validation_context": {
                    "trusted_ca": trusted_ca,
                    "match_typed_subject_alt_names": sans,
                },
            },
        },
    })
}

/// An OpenAI- or Anthropic-shaped JSON body for a reply Envoy makes itself
/// (no route, upstream unreachable, body too large, timeout).
fn local_reply_body(anthropic: bool, message: &str, kind: &str, code: &str) -> String {
    if anthropic {
        let anthropic_kind = match code {
            "request_too_large" => "request_too_large",
            "model_not_found" => "not_found_error",
            "rate_limit_exceeded" => "rate_limit_error",
            "invalid_api_key" => "authentication_error",
            "permission_denied" => "permission_error",
            // Anthropic's own type for "too busy, retry later" (its 529).
            "upstream_overloaded" => "overloaded_error",
            "upstream_timeout" | "upstream_unavailable" => "api_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": anthropic_kind, "message": message}}).to_string()
    } else {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
    }
}

/// Local reply mappers: Envoy's own error replies in the client's API shape.
pub fn local_reply_config(max_request_bytes: u64) -> Value {
    let too_large =
        format!("request body is larger than the gateway's limit of {max_request_bytes} bytes");
    let status = |code: u32| json!({"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": format!("aigw.local_reply.{code}")}}}});
    // A TLS failure is a connection failure (UF) too; these come first so the
    // client learns it is the provider's certificate, not its availability.
    let tls_failure = |expression: &str| {
        json!({"and_filter": {"filters": [
            {"response_flag_filter": {"flags": ["UF"]}},
            {"extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {"@type": CEL_FILTER_TYPE, "expression": expression},
            }},
        ]}})
    };
    // Replies of the ext_authz filter (UAEX) that are not 401/403: the
    // service could not answer (its status_on_error), or refused with
    // another status (kept).
    let ext_authz = |status_filter: Value| {
        json!({"and_filter": {"filters": [
            {"response_flag_filter": {"flags": ["UAEX"]}},
            status_filter,
        ]}})
    };
    let cases: [(Value, &str, &str, &str); 13] = [
        // Refusals of the auth filters (translate/auth.rs). Their message
        // names no key and no client.
        (
            status(401),
            "authentication failed: the request carries no valid credential for this gateway",
            "invalid_request_error",
            "invalid_api_key",
        ),
        (
            status(403),
            "permission denied: this client may not use this route",
            "invalid_request_error",
            "permission_denied",
        ),
        (
            ext_authz(status(super::auth::ext_auth::STATUS_ON_ERROR.into())),
            "the gateway's authorization service could not be reached; the request was not checked",
            "upstream_error",
            "auth_service_unavailable",
        ),
        (
            ext_authz(json!({"not_health_check_filter": {}})),
            "the gateway's authorization service refused this request",
            "invalid_request_error",
            "permission_denied",
        ),
        // The rate-limit service failed and `--rate-limit-fail-closed`
        // refuses the request (Envoy's default: an empty 500).
        (
            json!({"response_flag_filter": {"flags": ["RLSE"]}}),
            "the gateway's rate-limit service is unavailable and this gateway does not serve unchecked requests; retry later",
            "upstream_error",
            "rate_limit_service_unavailable",
        ),
        (
            json!({"response_flag_filter": {"flags": ["RL"]}}),
            "rate limit exceeded: this client's request or token budget is used up; retry later",
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        (
            json!({"status_code_filter": {"comparison": {"op": "EQ", "value": {"default_value": 413, "runtime_key": "aigw.local_reply.413"}}}}),
            too_large.as_str(),
            "invalid_request_error",
            "request_too_large",
        ),
        (
            json!({"response_flag_filter": {"flags": ["NR"]}}),
            "no route serves this model",
            "invalid_request_error",
            "model_not_found",
        ),
        (
            json!({"response_flag_filter": {"flags": ["UT", "SI"]}}),
            "the model provider did not answer in time",
            "upstream_error",
            "upstream_timeout",
        ),
        (
            tls_failure("upstream.transport_failure_reason.contains('CERTIFICATE_VERIFY_FAILED')"),
            "the model provider's TLS certificate did not validate (untrusted issuer or a name other than the configured hostname); nothing was sent to it",
            "upstream_error",
            "upstream_tls_error",
        ),
        (
            tls_failure("upstream.transport_failure_reason.contains('TLS_error')"),
            "the TLS handshake with the model provider failed; nothing was sent to it",
            "upstream_error",
            "upstream_tls_error",
        ),
        // A BackendTrafficPolicy circuitBreaker limit was reached (Envoy's
        // pending or request overflow): the providers may be fine, the
        // gateway refused to send them more. Before the generic case, which
        // would blame the providers' reachability.
        (
            json!({"response_flag_filter": {"flags": ["UO"]}}),
            "too many requests are in flight to this model's providers: the gateway's circuit breaker (BackendTrafficPolicy circuitBreaker) refused this one; retry later",
            "upstream_error",
            "upstream_overloaded",
        ),
        (
            json!({"response_flag_filter": {"flags": ["UF", "UH", "URX", "UC", "NC"]}}),
            "no model provider is reachable for this request",
            "upstream_error",
            "upstream_unavailable",
        ),
    ];
    let mut mappers = Vec::new();
    for anthropic in [true, false] {
        for (filter, message, kind, code) in &cases {
            let path_filter = if anthropic {
                json!({"or_filter": {"filters": [anthropic_path(false), anthropic_client(true)]}})
            } else {
                json!({"and_filter": {"filters": [anthropic_path(true), anthropic_client(false)]}})
            };
            let mut mapper = json!({
                "filter": {"and_filter": {"filters": [filter, path_filter]}},
                "body_format_override": {
                    "text_format_source": {"inline_string": local_reply_body(anthropic, message, kind, code)},
                    "content_type": "application/json",
                },
            });
            if *code == "upstream_tls_error" {
                mapper["status_code"] = json!(502);
            }
            if *code == "rate_limit_service_unavailable" {
                mapper["status_code"] = json!(503);
            }
            mappers.push(mapper);
        }
    }
    // Headers too large for the codec: no request (and no path) exists to
    // tell the client's API by, so OpenAI's shape.
    let too_large_headers = local_reply_body(
        false,
        "request headers are larger than the gateway's limit",
        "invalid_request_error",
        "request_headers_too_large",
    );
    mappers.push(json!({
        "filter": status(431),
        "body_format_override": {
            "text_format_source": {"inline_string": too_large_headers},
            "content_type": "application/json",
        },
    }));
    json!({"mappers": mappers})
}

/// Whether the client called `/anthropic/...`, from the path as it came. The
/// upstream role may have rewritten it for the provider since.
fn anthropic_path(invert: bool) -> Value {
    json!({"header_filter": {"header": {
        "name": ":path",
        "string_match": {"prefix": "/anthropic/"},
        "invert_match": invert,
    }}})
}

/// Whether the router role recorded an Anthropic client (filter state
/// `wasm.client_api`), which holds after the path was rewritten.
fn anthropic_client(is: bool) -> Value {
    let test =
        "'wasm.client_api' in filter_state && filter_state['wasm.client_api'] == b'anthropic'";
    let expression = if is {
        test.to_string()
    } else {
        format!("!({test})")
    };
    json!({"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {"@type": CEL_FILTER_TYPE, "expression": expression},
    }})
}

/// A JSON-lines access log with the request's model, backend and usage.
pub fn access_log(path: &str) -> Value {
    let token = |name: &str| format!("%FILTER_STATE(wasm.{name}:PLAIN)%");
    json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": {
                "start_time": "%START_TIME%",
                "method": "%REQ(:METHOD)%",
                "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                "status": "%RESPONSE_CODE%",
                "duration_ms": "%DURATION%",
                "request_model": "%REQ(X-AI-EG-MODEL)%",
                "upstream_host": "%UPSTREAM_HOST%",
                "upstream_cluster": "%UPSTREAM_CLUSTER%",
                "response_flags": "%RESPONSE_FLAGS%",
                "user_id": "%REQ(X-USER-ID)%",
                "input_tokens": token("llm_input_token"),
                "output_tokens": token("llm_output_token"),
                "total_tokens": token("llm_total_token"),
                "cached_input_tokens": token("llm_cached_input_token"),
                "reasoning_tokens": token("llm_reasoning_token"),
                "cache_creation_input_tokens": token("llm_cache_creation_input_token"),
                "response_model": token("response_model"),
                "backend": token("backend"),
                "provider": token("provider"),
                "time_to_first_token_ms": token("ttft_ms"),
            }},
        },
    })
}

#[cfg(test)]
mod local_reply_tests {
    use super::*;

    /// The body a mapper gives, parsed, for every mapper whose filter
    /// mentions `flag`.
    fn bodies_for_flag(flag: &str) -> Vec<Value> {
        let config = local_reply_config(1024);
        config["mappers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["filter"].to_string().contains(&format!("\"{flag}\"")))
            .map(|m| {
                let text = m["body_format_override"]["text_format_source"]["inline_string"]
                    .as_str()
                    .unwrap();
                serde_json::from_str(text).unwrap()
            })
            .collect()
    }

    #[test]
    fn circuit_breaker_overflow_has_its_own_message_in_both_shapes() {
        let bodies = bodies_for_flag("UO");
        // One mapper per client API shape, and no generic mapper claims UO.
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        let anthropic = bodies.iter().find(|b| b["type"] == "error").unwrap();
        assert_eq!(anthropic["error"]["type"], "overloaded_error");
        let openai = bodies.iter().find(|b| b.get("type").is_none()).unwrap();
        assert_eq!(openai["error"]["code"], "upstream_overloaded");
        for body in [&anthropic["error"]["message"], &openai["error"]["message"]] {
            assert!(body.as_str().unwrap().contains("circuit breaker"), "{body}");
        }
        // Unreachable providers keep the generic message.
        let unreachable = bodies_for_flag("URX");
        assert!(unreachable
            .iter()
            .any(|b| b["error"]["code"] == "upstream_unavailable"));
    }
}

#[cfg(test)]
mod properties_read_tests {
    use super::*;

    #[test]
    fn formats_and_cel_name_the_properties_they_read() {
        let text = r#"{"a": "%FILTER_STATE(wasm.llm_input_token:PLAIN)%",
            "b": "%FILTER_STATE(wasm.backend)% %FILTER_STATE(other.x)%",
            "c": "'wasm.client_api' in filter_state && filter_state['wasm.client_api'] == b'x'",
            "d": "FILTER_STATE(wasm.)"}"#;
        let read: Vec<String> = properties_read(text).into_iter().collect();
        assert_eq!(read, ["backend", "client_api", "llm_input_token"]);
        assert!(properties_read("{}").is_empty());
    }
}
