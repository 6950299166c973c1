//! `SecurityPolicy.extAuth` -> Envoy's `envoy.filters.http.ext_authz`. Pure.
//!
//! * `http`: the check is an HTTP request to the service at
//!   `path` + the client's path, with the client's method, `Host`, `Path`,
//!   `Content-Length`, `Authorization` and the `headersToExtAuth` headers.
//!   200 allows; any other status refuses with that status; 5xx or no answer
//!   is an error. `headersToBackend`: the service's response headers that are
//!   set on the request (overwriting the client's) before it goes on.
//! * `grpc`: `envoy.service.auth.v3.Authorization/Check`; the service sends
//!   every client header unless `headersToExtAuth` narrows them, and an OK
//!   answer's headers overwrite the client's.
//! * `bodyToExtAuth.maxRequestBytes`: the body (at most that many bytes, else
//!   413) goes with the check.
//! * `failOpen: true` lets a request through when the service cannot answer;
//!   otherwise it is refused with 503 (Envoy's own default would be 403; Envoy
//!   Gateway documents a 5xx so that clients see an outage, not a refusal).
//! * `timeout` (default 10 s) bounds each check.
//!
//! The service gets one cluster, `aigw/extauth/<namespace>/<policy>`, with an
//! endpoint per backendRef (`Service` with a port, or `Backend`), weighted;
//! TLS when the port is 443 or a BackendTLSPolicy targets the referent, like
//! the model backends (`backend::ref_endpoints`). gRPC speaks HTTP/2.

use super::Env;
use crate::resources::Resources;
use crate::translate::backend::{self, Endpoint};
use crate::translate::{envoy, resilience};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const EXT_AUTHZ_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub const EXT_AUTHZ_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const HTTP_OPTIONS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The status a client gets when the service cannot answer and the policy
/// does not fail open.
pub const STATUS_ON_ERROR: u16 = 503;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthSpec {
    #[serde(default)]
    pub grpc: Option<ServiceSpec>,
    #[serde(default)]
    pub http: Option<HttpServiceSpec>,
    #[serde(default)]
    pub headers_to_ext_auth: Vec<String>,
    #[serde(default)]
    pub body_to_ext_auth: Option<BodyToExtAuth>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: Option<bool>,
    #[serde(default)]
    pub recompute_route: Option<bool>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub backend_ref: Option<BackendRef>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpServiceSpec {
    #[serde(flatten)]
    pub service: ServiceSpec,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers_to_backend: Vec<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub weight: Option<u32>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct BodyToExtAuth {
    pub max_request_bytes: u32,
}

/// One policy's ext_authz filter.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuth {
    /// `ExtAuthz` (without `@type`).
    pub config: Value,
    /// Headers the service's answer sets (`headersToBackend`): identities,
    /// removed from every client request first.
    pub identity_headers: BTreeSet<String>,
    /// Client headers that carry the gateway credential: removed from the
    /// request sent to the provider.
    pub credential_headers: BTreeSet<String>,
}

/// Client headers the service may see that a provider also needs; they are
/// never treated as the gateway credential.
fn provider_needs(header: &str) -> bool {
    matches!(
        header,
        "content-type" | "content-length" | "accept" | "accept-encoding" | "user-agent" | "host"
    ) || header.starts_with(':')
        || header.starts_with("anthropic-")
        || header.starts_with("openai-")
        || header.starts_with("x-stainless-")
        || header.starts_with("x-ai-eg-")
}

fn exact_list(headers: impl IntoIterator<Item = String>) -> Value {
    let patterns: Vec<Value> = headers
        .into_iter()
        .map(|h| json!({"exact": h, "ignore_case": true}))
        .collect();
    json!({ "patterns": patterns })
}

type Refusal = (String, String);

/// Translates `spec.extAuth` of policy `namespace/name`; adds the service's
/// cluster to `clusters`. Errors are `(field, message)`.
pub fn translate(
    resources: &Resources,
    env: &Env,
    namespace: &str,
    name: &str,
    spec: &ExtAuthSpec,
    clusters: &mut BTreeMap<String, Value>,
) -> Result<ExtAuth, Refusal> {
    let (service, grpc, field) = match (&spec.grpc, &spec.http) {
        (Some(g), None) => (g, true, "spec.extAuth.grpc"),
        (None, Some(h)) => (&h.service, false, "spec.extAuth.http"),
        _ => {
            return Err((
                "spec.extAuth".into(),
                "exactly one of grpc and http must be given".into(),
            ))
        }
    };
    let timeout_ms = match &spec.timeout {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => resilience::parse_duration_ms(t)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                (
                    "spec.extAuth.timeout".to_string(),
                    format!("{t:?} is not a duration such as 500ms or 10s"),
                )
            })?,
    };
    let timeout = resilience::envoy_duration_ms(timeout_ms);
    let cluster_name = format!("aigw/extauth/{namespace}/{name}");
    let (cluster, authority) = cluster(
        resources,
        env,
        namespace,
        service,
        field,
        grpc,
        &cluster_name,
    )?;
    clusters.insert(cluster_name.clone(), cluster);

    let mut config = json!({
        "transport_api_version": "V3",
        "failure_mode_allow": spec.fail_open == Some(true),
        "status_on_error": {"code": "ServiceUnavailable"},
        "stat_prefix": format!("{namespace}_{name}"),
        "clear_route_cache": spec.recompute_route == Some(true),
    });
    let mut identity_headers = BTreeSet::new();
    // The HTTP check always carries Authorization (Envoy adds it); it is the
    // usual place of the client's gateway credential.
    let mut credential_headers = BTreeSet::from(["authorization".to_string()]);
    let headers_to_ext_auth: Vec<String> = spec
        .headers_to_ext_auth
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    for h in &headers_to_ext_auth {
        if !provider_needs(h) {
            credential_headers.insert(h.clone());
        }
    }
    if !headers_to_ext_auth.is_empty() {
        config["allowed_headers"] = exact_list(headers_to_ext_auth.iter().cloned());
    }
    if let Some(body) = &spec.body_to_ext_auth {
        if body.max_request_bytes == 0 {
            return Err((
                "spec.extAuth.bodyToExtAuth.maxRequestBytes".into(),
                "must be at least 1".into(),
            ));
        }
        config["with_request_body"] = json!({
            "max_request_bytes": body.max_request_bytes,
            "allow_partial_message": false,
        });
    }
    if grpc {
        config["grpc_service"] = json!({
            "envoy_grpc": {"cluster_name": cluster_name, "authority": authority},
            "timeout": timeout,
        });
    } else {
        let http = spec.http.as_ref().expect("http is set");
        let path = http.path.clone().unwrap_or_default();
        if !path.is_empty() && !path.starts_with('/') {
            return Err((
                "spec.extAuth.http.path".into(),
                format!("{path:?} must start with /"),
            ));
        }
        let path = path.trim_end_matches('/').to_string();
        let mut http_service = json!({
            "server_uri": {"uri": format!("http://{authority}"), "cluster": cluster_name, "timeout": timeout},
            "path_prefix": path,
            // A refusal's own headers that reach the client: not its
            // content-type / content-length (the gateway shapes the body).
            "authorization_response": {
                "allowed_client_headers": {"patterns": [
                    {"exact": "www-authenticate", "ignore_case": true},
                    {"exact": "retry-after", "ignore_case": true},
                    {"prefix": "x-", "ignore_case": true},
                ]},
            },
        });
        if !http.headers_to_backend.is_empty() {
            let headers: Vec<String> = http
                .headers_to_backend
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            identity_headers.extend(headers.iter().cloned());
            http_service["authorization_response"]["allowed_upstream_headers"] =
                exact_list(headers);
        }
        config["http_service"] = http_service;
    }
    Ok(ExtAuth {
        config,
        identity_headers,
        credential_headers,
    })
}

/// The service's cluster and the authority to call it by.
fn cluster(
    resources: &Resources,
    env: &Env,
    namespace: &str,
    service: &ServiceSpec,
    field: &str,
    grpc: bool,
    name: &str,
) -> Result<(Value, String), Refusal> {
    let refs: Vec<(String, &BackendRef)> =
        match (&service.backend_ref, service.backend_refs.is_empty()) {
            (Some(r), true) => vec![(format!("{field}.backendRef"), r)],
            (None, false) => service
                .backend_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("{field}.backendRefs[{i}]"), r))
                .collect(),
            (Some(_), false) => {
                return Err((
                    field.to_string(),
                    "give backendRef or backendRefs, not both".into(),
                ))
            }
            (None, true) => {
                return Err((
                    field.to_string(),
                    "names no authorization service (backendRefs)".into(),
                ))
            }
        };
    let mut lb_endpoints = Vec::new();
    let mut tls_matches: Vec<Value> = Vec::new();
    let mut authority = None;
    let mut all_tls = true;
    for (ref_field, r) in refs {
        let kind = r.kind.as_deref().unwrap_or("Service");
        let group = r.group.as_deref().unwrap_or("");
        let group_ok = match kind {
            "Service" => group.is_empty() || group == "core",
            "Backend" => group == "gateway.envoyproxy.io",
            _ => false,
        };
        if !group_ok {
            return Err((
                ref_field,
                format!("kind {kind} in group {group:?} is not supported; name a Service (with a port) or a gateway.envoyproxy.io Backend"),
            ));
        }
        let ns = r.namespace.as_deref().unwrap_or(namespace);
        let (endpoints, host) =
            backend::ref_endpoints(resources, env.resolve, ns, kind, &r.name, r.port).map_err(
                |d| {
                    let sub = d
                        .field
                        .as_deref()
                        .and_then(|f| f.strip_prefix("spec.backendRef"))
                        .unwrap_or("");
                    (format!("{ref_field}{sub}"), d.message)
                },
            )?;
        if authority.is_none() {
            let port = r
                .port
                .or_else(|| endpoint_port(resources, ns, kind, &r.name))
                .unwrap_or(80);
            authority = host.map(|h| format!("{h}:{port}"));
        }
        for (i, Endpoint { address, port, tls }) in endpoints.into_iter().enumerate() {
            let mut endpoint = json!({
                "endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}},
                "load_balancing_weight": r.weight.unwrap_or(1).max(1),
            });
            match tls {
                Some(tls) => {
                    let match_name = format!("{ns}/{}/{i}:{}", r.name, tls.sni);
                    endpoint["metadata"] = json!({"filter_metadata": {
                        "envoy.transport_socket_match": {"aigw_tls": match_name},
                    }});
                    tls_matches.push(json!({
                        "name": match_name,
                        "match": {"aigw_tls": match_name},
                        "transport_socket": envoy::upstream_tls(
                            &tls.sni,
                            env.ca_file,
                            tls.ca_pem.as_deref(),
                            &tls.subject_alt_names,
                            grpc,
                        ),
                    }));
                }
                None => all_tls = false,
            }
            lb_endpoints.push(endpoint);
        }
    }
    let protocol = if grpc {
        json!({"http2_protocol_options": {}})
    } else {
        json!({"http_protocol_options": {}})
    };
    let mut cluster = json!({
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": protocol,
            },
        },
    });
    if all_tls {
        if let Some(first) = tls_matches.first() {
            cluster["transport_socket"] = first["transport_socket"].clone();
        }
    }
    if !tls_matches.is_empty() {
        cluster["transport_socket_matches"] = Value::Array(tls_matches);
    }
    Ok((cluster, authority.unwrap_or_else(|| "ext-authz".into())))
}

/// The first endpoint's port of a Backend (a backendRef to one has no port).
fn endpoint_port(resources: &Resources, namespace: &str, kind: &str, name: &str) -> Option<u16> {
    if kind != "Backend" {
        return None;
    }
    let backend = resources
        .backends
        .iter()
        .find(|b| b.namespace == namespace && b.name == name)?;
    let e = backend.spec.endpoints.first()?;
    e.fqdn
        .as_ref()
        .map(|f| f.port)
        .or_else(|| e.ip.as_ref().map(|i| i.port))
}
