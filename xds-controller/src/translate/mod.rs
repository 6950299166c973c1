//! The pure translation from resources to what Envoy and the filter need:
//! listeners, routes, clusters and the credentials the filter will fetch.

pub mod auth;
pub mod backend;
pub mod direct;
pub mod envoy;
pub mod minted;
pub mod ratelimit;
pub mod resilience;

use crate::credentials::CredentialSet;
use crate::error::Diagnostic;
use crate::resources::{Named, Resources, RouteRule, TargetRef};
use aigw_filter::config::{CredentialSource, ModelMatch, ModelRoute, PluginConfig, Role};
use backend::ResolvedBackend;
use envoy::WasmCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const MODEL_HEADER: &str = "x-ai-eg-model";
/// Body limit when no ClientTrafficPolicy sets one.
const DEFAULT_BUFFER_LIMIT: u64 = 50 << 20;

/// Inputs that come from the environment rather than the resources.
#[derive(Debug, Clone)]
pub struct Options {
    pub wasm: WasmCode,
    pub listen_address: String,
    /// Gateway listener port -> port actually bound (standalone mode).
    pub port_map: BTreeMap<u16, u16>,
    /// `(host, port)` -> `(address, port)`, like curl's `--resolve`.
    pub resolve: BTreeMap<(String, u16), (String, u16)>,
    pub credential_source: CredentialSource,
    pub ca_file: String,
    /// JSON-lines access log file, if any.
    pub access_log: Option<String>,
    pub config_version: u64,
    pub created: u64,
    /// What Envoy does when the rate-limit service cannot answer.
    pub rate_limit: ratelimit::Settings,
    /// AWS credentials from the controller's environment, used by
    /// AWSCredentials policies that name no credentials file.
    pub aws_environment: Option<AwsEnvironment>,
    /// The router role serves single-backend rules directly where it can
    /// (`direct.rs`); off: every request goes through the upstream role.
    pub direct: bool,
    /// What the controller's environment says about minting credentials:
    /// expiring AWS credentials (web identity, container endpoint, used
    /// when `aws_environment` has no static keys) and endpoint overrides.
    pub mint: crate::mint::MintEnvironment,
}

#[cfg(test)]
impl Options {
    /// Options with fixed values, for translation tests.
    pub fn for_tests() -> Self {
        Options {
            wasm: WasmCode {
                path: "f.wasm".into(),
                env_keys: vec![],
            },
            listen_address: "127.0.0.1".into(),
            port_map: Default::default(),
            resolve: Default::default(),
            credential_source: CredentialSource {
                cluster: "c".into(),
                authority: "a".into(),
                path: "/p".into(),
                token_env: "T".into(),
                ttl_seconds: 30,
            },
            ca_file: "/ca.pem".into(),
            access_log: None,
            config_version: 1,
            created: 0,
            rate_limit: Default::default(),
            aws_environment: None,
            direct: true,
            mint: Default::default(),
        }
    }
}

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsEnvironment {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsEnvironment(<redacted>)")
    }
}

/// Everything the controller serves for one configuration.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    pub listeners: Vec<Value>,
    pub routes: Vec<Value>,
    pub clusters: Vec<Value>,
    pub credentials: CredentialSet,
    /// Credentials the controller mints and refreshes at run time, by id.
    pub minted: BTreeMap<String, crate::mint::MintSource>,
    /// `(listener address, port, models)` for the person starting the gateway.
    pub served: Vec<(String, u16, Vec<String>)>,
    pub diagnostics: Vec<Diagnostic>,
    /// Limits the rate-limit service enforces.
    pub rate_limits: crate::ratelimit::decision::RateLimitConfig,
}

fn attaches_to(
    refs: &[TargetRef],
    route_ns: &str,
    gateway: &Named<crate::resources::GatewaySpec>,
) -> bool {
    refs.iter().any(|r| {
        r.name == gateway.name
            && r.kind.as_deref().is_none_or(|k| k == "Gateway")
            && r.namespace.as_deref().unwrap_or(route_ns) == gateway.namespace
    })
}

/// Whether `route`, attached to `gateway`, is served on its listener
/// `listener`: a parentRef's `sectionName` narrows it to that listener.
pub fn serves_on_listener(
    route: &Named<crate::resources::AIGatewayRouteSpec>,
    gateway: &Named<crate::resources::GatewaySpec>,
    listener: &str,
) -> bool {
    let refs = if route.spec.parent_refs.is_empty() {
        &route.spec.target_refs
    } else {
        &route.spec.parent_refs
    };
    if refs.is_empty() {
        return route.namespace == gateway.namespace;
    }
    refs.iter().any(|r| {
        attaches_to(std::slice::from_ref(r), &route.namespace, gateway)
            && r.section_name.as_deref().is_none_or(|s| s == listener)
    })
}

/// One routable rule: its Envoy cluster and what the filter needs to know.
struct TranslatedRule {
    cluster_name: String,
    models: Vec<ModelRoute>,
    routes: Vec<Value>,
    backends: Vec<ResolvedBackend>,
    resilience: resilience::RuleResilience,
}

pub fn translate(resources: &Resources, options: &Options) -> Translation {
    let mut out = Translation::default();
    out.rate_limits.domain = ratelimit::DOMAIN.to_string();
    let mut diagnostics = Vec::new();
    let mut rules_by_route: Vec<(
        &Named<crate::resources::AIGatewayRouteSpec>,
        Vec<TranslatedRule>,
    )> = Vec::new();
    for route in &resources.ai_gateway_routes {
        let mut rules = Vec::new();
        for (index, rule) in route.spec.rules.iter().enumerate() {
            if let Some(t) =
                translate_rule(resources, options, route, index, rule, &mut diagnostics)
            {
                rules.push(t);
            }
        }
        rules_by_route.push((route, rules));
    }
    let mut all_backends: BTreeMap<String, ResolvedBackend> = BTreeMap::new();
    // Rules that would get identical clusters share the first one's: fewer
    // clusters for Envoy to apply (about 0.4 ms each) and connection pools
    // shared by every route to the same providers.
    let mut served_by_content: BTreeMap<String, String> = BTreeMap::new();
    for (_, rules) in &mut rules_by_route {
        for rule in rules.iter_mut() {
            let mut c = cluster(options, &rule.cluster_name, &rule.backends);
            rule.resilience.apply_cluster(&mut c);
            let content = cluster_content(&c);
            match served_by_content.get(&content) {
                Some(shared) => rule.use_cluster(shared),
                None => {
                    served_by_content.insert(content, rule.cluster_name.clone());
                    out.clusters.push(c);
                }
            }
            for b in &rule.backends {
                all_backends
                    .entry(b.key.clone())
                    .or_insert_with(|| b.clone());
            }
        }
    }
    for backend in all_backends.values() {
        if let Some((id, value)) = &backend.credential {
            out.credentials
                .credentials
                .insert(id.clone(), value.clone());
        }
        if let Some((id, source)) = &backend.mint {
            out.minted.insert(id.clone(), source.clone());
        }
    }
    out.credentials.config_version = options.config_version;

    // Filled per listener; see `serve_directly`.
    let mut listeners_direct = Vec::new();
    let mut backend_hosts: BTreeMap<String, Option<String>> = BTreeMap::new();
    if resources.gateways.is_empty() && !resources.ai_gateway_routes.is_empty() {
        diagnostics.push(Diagnostic::error(
            "no Gateway is defined, so no listener serves the AIGatewayRoutes",
        ));
    }
    for gateway in &resources.gateways {
        let client = client_settings(resources, gateway, &mut diagnostics);
        let attached: Vec<(
            &Named<crate::resources::AIGatewayRouteSpec>,
            &TranslatedRule,
        )> = rules_by_route
            .iter()
            .filter(|(route, _)| {
                let refs = if route.spec.parent_refs.is_empty() {
                    &route.spec.target_refs
                } else {
                    &route.spec.parent_refs
                };
                refs.is_empty() && route.namespace == gateway.namespace
                    || attaches_to(refs, &route.namespace, gateway)
            })
            .flat_map(|(route, rules)| rules.iter().map(move |r| (*route, r)))
            .collect();
        let limits = ratelimit::for_gateway(
            &options.rate_limit,
            &resources.backend_traffic_policies,
            gateway,
            attached.iter().map(|(route, _)| *route),
            &mut diagnostics,
        );
        out.rate_limits.limits.extend(limits.limits.clone());
        let auth = auth::for_gateway(
            resources,
            &auth::Env {
                resolve: &options.resolve,
                ca_file: &options.ca_file,
            },
            gateway,
            attached.iter().map(|(route, _)| *route),
            &mut diagnostics,
        );
        for c in &auth.clusters {
            if !out.clusters.iter().any(|have| have["name"] == c["name"]) {
                out.clusters.push(c.clone());
            }
        }
        for listener in &gateway.spec.listeners {
            if listener.protocol != "HTTP" {
                diagnostics.push(
                    Diagnostic::error(format!(
                        "listener protocol {} is not supported yet; only HTTP",
                        listener.protocol
                    ))
                    .at(format!("Gateway {}", gateway.key()), &gateway.source)
                    .field(format!("spec.listeners[{}].protocol", listener.name)),
                );
                continue;
            }
            let name = format!("{}/{}/{}", gateway.namespace, gateway.name, listener.name);
            let port = options
                .port_map
                .get(&listener.port)
                .copied()
                .unwrap_or(listener.port);
            let mut models = Vec::new();
            let mut route_entries = Vec::new();
            let mut backends = BTreeMap::new();
            let mut cluster_backends = BTreeMap::new();
            let on_listener = attached
                .iter()
                .filter(|(route, _)| serves_on_listener(route, gateway, &listener.name));
            let mut rule_entries = Vec::new();
            for (route, rule) in on_listener {
                models.extend(rule.models.iter().cloned());
                let entries: Vec<Value> = rule
                    .routes
                    .iter()
                    .map(|e| auth.attach(&route.key(), limits.attach(&route.key(), e.clone())))
                    .collect();
                route_entries.extend(entries.iter().cloned());
                for b in &rule.backends {
                    backends.insert(b.target(), b.config.clone());
                }
                let mut targets = rule.backends.iter().map(ResolvedBackend::target);
                let mut single = None;
                if let Some(first) = targets.next() {
                    if targets.all(|t| t == first) {
                        cluster_backends.insert(rule.cluster_name.clone(), first.clone());
                        single = Some(first);
                    }
                }
                rule_entries.push((rule.cluster_name.as_str(), single, entries));
            }
            let rules_here: Vec<direct::RuleOnListener> = rule_entries
                .iter()
                .map(|(cluster, backend, entries)| direct::RuleOnListener {
                    cluster,
                    backend: backend.as_deref(),
                    entries,
                })
                .collect();
            let allowed =
                options.direct && auth.is_empty() && direct::rate_limits_allow(&route_entries);
            for (name, config) in &backends {
                backend_hosts.insert(name.clone(), config.host.clone());
            }
            listeners_direct.push((
                out.listeners.len(),
                direct::on_listener(&rules_here, allowed),
            ));
            // What the routes (rate-limit costs) and the access log read.
            let mut reads = serde_json::to_string(&route_entries).unwrap_or_default();
            if let Some(path) = &options.access_log {
                reads.push_str(&envoy::access_log(path).to_string());
            }
            let router_config = PluginConfig {
                role: Role::Router,
                config_version: options.config_version,
                created: options.created,
                models: models.clone(),
                max_request_bytes: client.buffer_limit,
                backends,
                cluster_backends,
                direct: BTreeMap::new(),
                credentials: None,
                reserve_output_tokens: options.rate_limit.reserve_output_tokens,
                published: Some(envoy::properties_read(&reads)),
            };
            let upstream_config = PluginConfig {
                role: Role::Upstream,
                models: Vec::new(),
                max_request_bytes: 0,
                credentials: Some(options.credential_source.clone()),
                reserve_output_tokens: None,
                published: None,
                ..router_config.clone()
            };
            let domains = match &listener.hostname {
                Some(h) => vec![h.clone(), format!("{h}:*")],
                None => vec!["*".to_string()],
            };
            out.routes.push(json!({
                "name": name,
                "virtual_hosts": [{"name": name, "domains": domains, "routes": route_entries}],
            }));
            let mut listener = listener_json(
                options,
                &name,
                port,
                &client,
                [&router_config, &upstream_config],
            );
            if !auth.is_empty() {
                auth.add_filters(&mut listener);
            }
            if !limits.is_empty() {
                ratelimit::add_filter(
                    &mut listener,
                    &options.rate_limit,
                    crate::bootstrap::RATELIMIT_CLUSTER,
                );
            }
            out.listeners.push(listener);
            let names = models
                .iter()
                .map(|m| match &m.matcher {
                    ModelMatch::Exact(id) => id.clone(),
                    ModelMatch::Prefix(p) if p.is_empty() => "* (any model)".into(),
                    ModelMatch::Prefix(p) => format!("{p}*"),
                    ModelMatch::Regex(r) => format!("/{r}/"),
                })
                .collect();
            out.served
                .push((options.listen_address.clone(), port, names));
        }
    }
    serve_directly(
        &mut out,
        &listeners_direct,
        &backend_hosts,
        &options.credential_source,
    );
    diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out.diagnostics = diagnostics;
    out
}

/// Gives the router role of each listener the models it serves directly,
/// and their clusters no upstream role. A cluster shared with a rule that
/// does not qualify (here or on another listener) keeps it.
fn serve_directly(
    out: &mut Translation,
    listeners: &[(usize, direct::ListenerDirect)],
    hosts: &BTreeMap<String, Option<String>>,
    credentials: &CredentialSource,
) {
    let refused: std::collections::BTreeSet<&String> = listeners
        .iter()
        .flat_map(|(_, d)| &d.refused_clusters)
        .collect();
    let mut clusters: BTreeMap<String, String> = BTreeMap::new();
    for (index, d) in listeners {
        let models: BTreeMap<String, String> = d
            .models
            .iter()
            .filter(|(_, (_, cluster))| !refused.contains(cluster))
            .map(|(model, (backend, cluster))| {
                clusters.insert(cluster.clone(), backend.clone());
                (model.clone(), backend.clone())
            })
            .collect();
        if models.is_empty() {
            continue;
        }
        if let Some(listener) = out.listeners.get_mut(*index) {
            envoy::change_router_config(listener, |config| {
                config.direct = models.clone();
                config.credentials = Some(credentials.clone());
            });
        }
    }
    for cluster in &mut out.clusters {
        let name = cluster["name"].as_str().unwrap_or_default().to_string();
        if let Some(backend) = clusters.get(&name) {
            direct::make_direct(cluster, &direct::cluster_name(&name, backend));
        }
    }
    let entries = out
        .routes
        .iter_mut()
        .flat_map(|r| r["virtual_hosts"].as_array_mut().into_iter().flatten())
        .flat_map(|vh| vh["routes"].as_array_mut().into_iter().flatten());
    for entry in entries {
        let cluster = entry["route"]["cluster"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(backend) = clusters.get(&cluster) {
            let host = hosts.get(backend).cloned().flatten();
            let name = direct::cluster_name(&cluster, backend);
            direct::mark_route(entry, backend, &name, host.as_deref());
        }
    }
}

/// What the Gateway's ClientTrafficPolicy sets for its listeners.
#[derive(Debug, Clone, PartialEq)]
struct ClientSettings {
    buffer_limit: u64,
    /// Envoy durations for the HCM: stream idle (always set; an AI stream
    /// can pause long between tokens), request received, connection idle.
    stream_idle_timeout: String,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
}

fn client_settings(
    resources: &Resources,
    gateway: &Named<crate::resources::GatewaySpec>,
    diagnostics: &mut Vec<Diagnostic>,
) -> ClientSettings {
    let mut settings = ClientSettings {
        buffer_limit: DEFAULT_BUFFER_LIMIT,
        stream_idle_timeout: "300s".into(),
        request_timeout: None,
        idle_timeout: None,
    };
    let policy = resources.client_traffic_policies.iter().find(|policy| {
        let mut targets = policy
            .spec
            .target_refs
            .iter()
            .chain(policy.spec.target_ref.iter());
        policy.namespace == gateway.namespace
            && targets
                .any(|t| t.name == gateway.name && t.kind.as_deref().is_none_or(|k| k == "Gateway"))
    });
    let Some(policy) = policy else {
        return settings;
    };
    let mut report = |message: String, field: &str| {
        diagnostics.push(
            Diagnostic::error(message)
                .at(
                    format!("ClientTrafficPolicy {}", policy.key()),
                    &policy.source,
                )
                .field(field),
        )
    };
    if let Some(limit) = policy
        .spec
        .connection
        .as_ref()
        .and_then(|c| c.buffer_limit.as_ref())
    {
        match limit.bytes() {
            Ok(bytes) => settings.buffer_limit = bytes,
            Err(e) => report(e, "spec.connection.bufferLimit"),
        }
    }
    let http = policy.spec.timeout.as_ref().and_then(|t| t.http.as_ref());
    let mut duration = |value: Option<&String>, field: &str| {
        let text = value?;
        match resilience::parse_duration_ms(text) {
            Some(ms) => Some(resilience::envoy_duration_ms(ms)),
            None => {
                report(
                    format!("{text:?} is not a duration such as 30s or 5m"),
                    &format!("spec.timeout.http.{field}"),
                );
                None
            }
        }
    };
    if let Some(http) = http {
        if let Some(d) = duration(http.stream_idle_timeout.as_ref(), "streamIdleTimeout") {
            settings.stream_idle_timeout = d;
        }
        settings.request_timeout = duration(
            http.request_received_timeout.as_ref(),
            "requestReceivedTimeout",
        );
        settings.idle_timeout = duration(http.idle_timeout.as_ref(), "idleTimeout");
    }
    settings
}

impl TranslatedRule {
    fn use_cluster(&mut self, name: &str) {
        self.cluster_name = name.to_string();
        for entry in &mut self.routes {
            entry["route"]["cluster"] = json!(name);
        }
    }
}

/// A cluster without its name: equal for rules that can share it.
fn cluster_content(cluster: &Value) -> String {
    let mut c = cluster.clone();
    c["name"] = Value::Null;
    c["load_assignment"]["cluster_name"] = Value::Null;
    c.to_string()
}

fn translate_rule(
    resources: &Resources,
    options: &Options,
    route: &Named<crate::resources::AIGatewayRouteSpec>,
    index: usize,
    rule: &RouteRule,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<TranslatedRule> {
    let here = |d: Diagnostic| d.at(format!("AIGatewayRoute {}", route.key()), &route.source);
    let cluster_name = format!("aigw/{}/{}/rule/{index}", route.namespace, route.name);
    let mut backends = Vec::new();
    for (j, r) in rule.backend_refs.iter().enumerate() {
        let namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| route.namespace.clone());
        match backend::resolve(resources, options, &namespace, &r.name) {
            Ok(mut b) => {
                diagnostics.append(&mut b.warnings);
                b.config.model_name_override = r.model_name_override.clone();
                b.weight = r.weight.unwrap_or(1);
                b.priority = r.priority.unwrap_or(0);
                backends.push(b);
            }
            Err(d) => {
                let d = if d.resource.is_none() {
                    here(d.field(format!("spec.rules[{index}].backendRefs[{j}].name")))
                } else {
                    d
                };
                diagnostics.push(d);
            }
        }
    }
    if backends.is_empty() {
        diagnostics.push(here(
            Diagnostic::error("rule has no usable backend; it is not served")
                .field(format!("spec.rules[{index}]")),
        ));
        return None;
    }
    let mut priorities: Vec<u32> = backends.iter().map(|b| b.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let resilience =
        resilience::for_rule(resources, route, index, rule, priorities.len(), diagnostics)?;
    let owned_by = route.name.clone();
    let mut models = Vec::new();
    let mut routes = Vec::new();
    let matches: Vec<_> = if rule.matches.is_empty() {
        vec![Default::default()]
    } else {
        rule.matches.clone()
    };
    for (m_index, m) in matches.iter().enumerate() {
        let mut headers = Vec::new();
        let mut model = None;
        for (h_index, h) in m.headers.iter().enumerate() {
            let kind = h.match_type.as_deref().unwrap_or("Exact");
            let (string_match, model_match) = match kind {
                "Exact" => (
                    json!({"exact": h.value}),
                    ModelMatch::Exact(h.value.clone()),
                ),
                "RegularExpression" => (
                    json!({"safe_regex": {"regex": h.value}}),
                    ModelMatch::Regex(h.value.clone()),
                ),
                other => {
                    diagnostics.push(here(
                        Diagnostic::error(format!("header match type {other} is not supported; use Exact or RegularExpression"))
                            .field(format!("spec.rules[{index}].matches[{m_index}].headers[{h_index}].type")),
                    ));
                    return None;
                }
            };
            if h.name.eq_ignore_ascii_case(MODEL_HEADER) {
                model = Some(model_match);
            }
            headers
                .push(json!({"name": h.name.to_ascii_lowercase(), "string_match": string_match}));
        }
        models.push(ModelRoute {
            matcher: model.unwrap_or(ModelMatch::Prefix(String::new())),
            owned_by: owned_by.clone(),
        });
        let mut entry = json!({
            "name": format!("{}/{}/rule/{index}/match/{m_index}", route.namespace, route.name),
            "match": {"prefix": "/", "headers": headers},
            "route": {"cluster": cluster_name},
        });
        resilience.apply_route(&mut entry);
        routes.push(entry);
    }
    Some(TranslatedRule {
        cluster_name,
        models,
        routes,
        backends,
        resilience,
    })
}

fn listener_json(
    options: &Options,
    name: &str,
    port: u16,
    client: &ClientSettings,
    [router, upstream]: [&PluginConfig; 2],
) -> Value {
    let buffer_limit = client.buffer_limit;
    // Envoy's own buffer limit sits above the filter's so that the filter,
    // which answers in the client's API shape, sees an oversized body first.
    let envoy_limit = buffer_limit
        .saturating_add(1 << 20)
        .min(u64::from(u32::MAX));
    let mut listener = json!({
        "name": name,
        "address": {"socket_address": {"address": options.listen_address, "port_value": port}},
        "per_connection_buffer_limit_bytes": envoy_limit,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": envoy::HCM_TYPE,
                "stat_prefix": name.replace('/', "_"),
                "rds": {"route_config_name": name, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [
                    envoy::wasm_filter(envoy::ROUTER_FILTER, &options.wasm, router),
                    envoy::router_filter_with_upstream(
                        envoy::wasm_filter("aigw.upstream", &options.wasm, upstream),
                    ),
                ],
                "local_reply_config": envoy::local_reply_config(buffer_limit),
                "access_log": options.access_log.iter().map(|p| envoy::access_log(p)).collect::<Vec<_>>(),
                "stream_idle_timeout": client.stream_idle_timeout,
            },
        }]}],
    });
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(t) = &client.request_timeout {
        hcm["request_timeout"] = json!(t);
    }
    if let Some(t) = &client.idle_timeout {
        hcm["common_http_protocol_options"] = json!({"idle_timeout": t});
    }
    listener
}

/// One cluster per rule: one priority group per distinct backendRef
/// priority, weights on the endpoints, in their metadata the key of their
/// backend's configuration and the rule's backends (the scope of the
/// upstream role's cool-down check).
fn cluster(options: &Options, name: &str, backends: &[ResolvedBackend]) -> Value {
    let mut peers: Vec<&str> = backends.iter().map(|b| b.key.as_str()).collect();
    peers.sort_unstable();
    peers.dedup();
    let peers = peers.join(",");
    let mut priorities: Vec<u32> = backends.iter().map(|b| b.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    // HTTP/2 by ALPN needs every transport socket of the cluster to speak
    // TLS; a cluster that mixes in plaintext endpoints stays on HTTP/1.1.
    let all_tls = backends
        .iter()
        .flat_map(|b| &b.endpoints)
        .all(|e| e.tls.is_some());
    let mut groups = Vec::new();
    let mut tls_matches = Vec::new();
    for (rank, priority) in priorities.iter().enumerate() {
        let mut lb_endpoints = Vec::new();
        for b in backends.iter().filter(|b| b.priority == *priority) {
            for e in &b.endpoints {
                let mut metadata =
                    json!({envoy::METADATA_NAMESPACE: {"backend": b.target(), "peers": peers}});
                if let Some(tls) = &e.tls {
                    let match_name = format!("{}:{}", b.key, tls.sni);
                    metadata["envoy.transport_socket_match"] = json!({"aigw_tls": match_name});
                    tls_matches.push(json!({
                        "name": match_name,
                        "match": {"aigw_tls": match_name},
                        "transport_socket": envoy::upstream_tls(
                            &tls.sni,
                            &options.ca_file,
                            tls.ca_pem.as_deref(),
                            &tls.subject_alt_names,
                            all_tls,
                        ),
                    }));
                }
                lb_endpoints.push(json!({
                    "endpoint": {
                        "address": {"socket_address": {"address": e.address, "port_value": e.port}},
                        "hostname": b.config.host.clone().unwrap_or_default(),
                    },
                    "load_balancing_weight": b.weight.max(1),
                    "metadata": {"filter_metadata": metadata},
                }));
            }
        }
        groups.push(json!({"priority": rank, "lb_endpoints": lb_endpoints}));
    }
    tls_matches.dedup();
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": groups},
        "typed_extension_protocol_options": envoy::upstream_http_options(all_tls),
    });
    // Addresses only need no resolver, and outlier detection ejects
    // STATIC hosts reliably (test_health.py).
    let all_addresses = backends
        .iter()
        .flat_map(|b| &b.endpoints)
        .all(|e| e.address.parse::<std::net::IpAddr>().is_ok());
    if !all_addresses {
        cluster["type"] = json!("STRICT_DNS");
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(first) = tls_matches.first().filter(|_| all_tls) {
        // Never used (every endpoint matches), but the default socket must
        // support ALPN too.
        cluster["transport_socket"] = first["transport_socket"].clone();
    }
    if !tls_matches.is_empty() {
        cluster["transport_socket_matches"] = Value::Array(tls_matches);
    }
    cluster
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mint_tests;

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod listener_tests;
