//! BackendTrafficPolicy `rateLimit` -> Envoy's ratelimit filter, the
//! per-route `rate_limits` that carry the descriptors, and the limits the
//! rate-limit service enforces. Pure.
//!
//! Each rule becomes a descriptor whose first entry is the rule's own key
//! (`rule-<namespace>/<policy>/<index>`), followed by one entry per header
//! selector. A rule gets a request-time entry (`hits_addend` from
//! `cost.request`, default 1; 0 only checks) and, with `cost.response`, a
//! second entry with `apply_on_stream_done` whose `hits_addend` reads the
//! token count the filter published in filter state (`wasm.<property>`).
//!
//! Envoy fails open by default when the service is unreachable
//! (`failure_mode_deny: false`); `Settings::failure_mode_deny` changes that.
//!
//! Reserve-then-settle (`Settings::reserve_output_tokens`): a rule whose
//! response cost is a token count reserves, at admission, the token
//! estimate the filter published (`wasm.llm_reserve_<kind>`) in a
//! descriptor ending in `aigw-reserve=<x-request-id>`, instead of its
//! request cost; its stream-done descriptor ends in
//! `aigw-settle=<x-request-id>` and settles the real count (see
//! `ratelimit::decision`). Envoy's hits_addend is unsigned, so the request id
//! lets the service find what it reserved and subtract it.

use crate::error::{AttachmentReason, AttachmentTarget, Diagnostic};
use crate::ratelimit::decision::{Limit, SourceCidr, RESERVE_KEY, SETTLE_KEY};
use crate::resources::{
    AIGatewayRouteSpec, BackendTrafficPolicySpec, CostFrom, CostSpecifier, GatewaySpec,
    HeaderSelectorType, LlmCostType, Named, RateLimitRule,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const FILTER_NAME: &str = "envoy.filters.http.ratelimit";
pub const DOMAIN: &str = "aigw";
/// The metadata namespace Envoy AI Gateway publishes token costs under.
pub const AI_GATEWAY_NAMESPACE: &str = "io.envoy.ai_gateway";
const FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit";
const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute";

/// How the gateway reacts when the rate-limit service cannot answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Refuse requests when the service is unreachable (default: allow).
    pub failure_mode_deny: bool,
    /// Reserve-then-settle for token costs; the value is the output tokens
    /// reserved for a request that names no max_tokens (the filter's
    /// `PluginConfig::reserve_output_tokens`). None: charge after the
    /// response, as Envoy AI Gateway does.
    pub reserve_output_tokens: Option<u64>,
}

/// The rate limits of the routes attached to one Gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayLimits {
    /// AIGatewayRoute `namespace/name` -> `RateLimitPerRoute.rate_limits`.
    pub per_route: BTreeMap<String, Vec<Value>>,
    /// Rule key -> limit, for the rate-limit service.
    pub limits: BTreeMap<String, Limit>,
}

impl GatewayLimits {
    pub fn is_empty(&self) -> bool {
        self.per_route.values().all(Vec::is_empty)
    }

    /// Adds the route's rate limits to one Envoy route entry.
    pub fn attach(&self, route_key: &str, mut entry: Value) -> Value {
        if let Some(limits) = self.per_route.get(route_key).filter(|l| !l.is_empty()) {
            entry["typed_per_filter_config"][FILTER_NAME] = json!({
                "@type": PER_ROUTE_TYPE,
                "rate_limits": limits,
            });
        }
        entry
    }
}

/// The filter property the wasm filter publishes a cost type under.
pub fn token_property(cost: LlmCostType) -> Option<&'static str> {
    Some(match cost {
        LlmCostType::InputToken => "llm_input_token",
        LlmCostType::OutputToken => "llm_output_token",
        LlmCostType::TotalToken => "llm_total_token",
        LlmCostType::CachedInputToken => "llm_cached_input_token",
        LlmCostType::CacheCreationInputToken => "llm_cache_creation_input_token",
        LlmCostType::ReasoningToken => "llm_reasoning_token",
        LlmCostType::Cel => return None,
    })
}

/// The HTTP filter, placed after the wasm router filter (which sets
/// x-ai-eg-model) and before the router.
pub fn filter(settings: &Settings, cluster: &str) -> Value {
    json!({
        "name": FILTER_NAME,
        "typed_config": {
            "@type": FILTER_TYPE,
            "domain": DOMAIN,
            "failure_mode_deny": settings.failure_mode_deny,
            "timeout": "1s",
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limited_status": {"code": "TooManyRequests"},
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                "transport_api_version": "V3",
            },
        },
    })
}

/// Inserts the filter into a listener's HTTP connection manager, before
/// the router.
pub fn add_filter(listener: &mut Value, settings: &Settings, cluster: &str) {
    let Some(chains) = listener["filter_chains"].as_array_mut() else {
        return;
    };
    for chain in chains {
        let Some(filters) = chain["filters"].as_array_mut() else {
            continue;
        };
        for network_filter in filters {
            let Some(http) = network_filter["typed_config"]["http_filters"].as_array_mut() else {
                continue;
            };
            let at = http
                .iter()
                .position(|f| f["name"] == "envoy.filters.http.router")
                .unwrap_or(http.len());
            http.insert(at, filter(settings, cluster));
        }
    }
}

fn targets_gateway(policy: &Named<BackendTrafficPolicySpec>, gateway: &Named<GatewaySpec>) -> bool {
    policy.namespace == gateway.namespace
        && policy
            .spec
            .target_refs
            .iter()
            .chain(policy.spec.target_ref.iter())
            .any(|t| t.name == gateway.name && t.kind.as_deref().is_none_or(|k| k == "Gateway"))
}

fn targets_route(
    policy: &Named<BackendTrafficPolicySpec>,
    route: &Named<AIGatewayRouteSpec>,
) -> bool {
    policy.namespace == route.namespace
        && policy
            .spec
            .target_refs
            .iter()
            .chain(policy.spec.target_ref.iter())
            .any(|t| {
                t.name == route.name
                    && matches!(t.kind.as_deref(), Some("HTTPRoute" | "AIGatewayRoute"))
            })
}

/// A `sourceCIDR` selector (`{type: Exact|Distinct, value: <cidr>}`) as a
/// `masked_remote_address` action and the range the service checks: Exact
/// masks client addresses to the range's prefix (one counter for the
/// range), Distinct keeps them whole (one counter per client address).
fn source_action(selector: &Value) -> Result<(Value, SourceCidr), Diagnostic> {
    let text = selector
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(|| Diagnostic::error("value (a CIDR such as 10.0.0.0/8) is required"))?;
    let range = SourceCidr::parse(text)
        .ok_or_else(|| Diagnostic::error(format!("{text:?} is not a CIDR such as 10.0.0.0/8")))?;
    let mask = match selector.get("type").and_then(Value::as_str) {
        None | Some("Exact") => range.prefix,
        Some("Distinct") => range.host_bits(),
        Some(other) => {
            return Err(Diagnostic::error(format!(
                "type {other:?} is not one of Exact, Distinct"
            )))
        }
    };
    let field = if range.network.is_ipv4() {
        "v4_prefix_mask_len"
    } else {
        "v6_prefix_mask_len"
    };
    Ok((json!({"masked_remote_address": {field: mask}}), range))
}

/// Descriptor actions of one rule, and its sourceCIDR range if any.
fn rule_actions(
    id: &str,
    rule: &RateLimitRule,
) -> Result<(Vec<Value>, Option<SourceCidr>), Diagnostic> {
    let mut actions = vec![json!({"generic_key": {"descriptor_key": id, "descriptor_value": "1"}})];
    let mut source = None;
    for (s, selector) in rule.client_selectors.iter().enumerate() {
        if let Some(cidr) = &selector.source_cidr {
            let field = format!("clientSelectors[{s}].sourceCIDR");
            if source.is_some() {
                return Err(Diagnostic::error(
                    "a rule selects by at most one sourceCIDR; the rule is not enforced",
                )
                .field(field));
            }
            let (action, range) = source_action(cidr).map_err(|d| d.field(field))?;
            actions.push(action);
            source = Some(range);
        }
        for (h, header) in selector.headers.iter().enumerate() {
            let field = format!("clientSelectors[{s}].headers[{h}]");
            let name = header.name.to_ascii_lowercase();
            let invert = header.invert.unwrap_or(false);
            let matcher = match (header.match_type, header.value.as_deref()) {
                (HeaderSelectorType::Distinct, _) if invert => {
                    return Err(
                        Diagnostic::error("invert cannot be combined with type Distinct")
                            .field(field),
                    );
                }
                (HeaderSelectorType::Distinct, _) => {
                    actions.push(
                        json!({"request_headers": {"header_name": name, "descriptor_key": name}}),
                    );
                    continue;
                }
                (_, None) => {
                    return Err(Diagnostic::error(
                        "value is required for Exact and RegularExpression",
                    )
                    .field(field));
                }
                (HeaderSelectorType::Exact, Some(v)) => json!({"exact": v}),
                (HeaderSelectorType::RegularExpression, Some(v)) => {
                    json!({"safe_regex": {"regex": v}})
                }
            };
            actions.push(json!({"header_value_match": {
                "descriptor_key": name,
                "descriptor_value": header.value.clone().unwrap_or_default(),
                "expect_match": !invert,
                "headers": [{"name": name, "string_match": matcher}],
            }}));
        }
    }
    Ok((actions, source))
}

/// What the entry charged when the response is complete adds.
enum ResponseCost {
    Number(u64),
    /// A token count the filter publishes as `wasm.<property>`.
    Tokens(&'static str),
}

impl ResponseCost {
    fn hits(&self) -> Value {
        match self {
            ResponseCost::Number(n) => json!({"number": n}),
            ResponseCost::Tokens(p) => json!({"format": format!("%FILTER_STATE(wasm.{p}:PLAIN)%")}),
        }
    }
}

/// The descriptor entry that ties a reservation to its settlement.
fn request_id_action(marker: &str) -> Value {
    json!({"request_headers": {"header_name": "x-request-id", "descriptor_key": marker}})
}

/// The filter property holding the reservation for a token property.
pub fn reserve_property(token_property: &str) -> String {
    token_property.replacen("llm_", "llm_reserve_", 1)
}

/// The cost the entry charged when the response is complete adds.
fn response_cost(
    cost: &CostSpecifier,
    route: &Named<AIGatewayRouteSpec>,
) -> Result<ResponseCost, Diagnostic> {
    if cost.from == CostFrom::Number {
        return Ok(ResponseCost::Number(cost.number.unwrap_or(1)));
    }
    let Some(metadata) = &cost.metadata else {
        return Err(Diagnostic::error(
            "from: Metadata needs metadata.namespace and metadata.key",
        ));
    };
    if metadata.namespace != AI_GATEWAY_NAMESPACE {
        return Err(Diagnostic::error(format!(
            "metadata namespace {:?} is not supported; only {AI_GATEWAY_NAMESPACE} (the token costs of llmRequestCosts)",
            metadata.namespace
        )));
    }
    let Some(cost) = route
        .spec
        .llm_request_costs
        .iter()
        .find(|c| c.metadata_key == metadata.key)
    else {
        return Err(Diagnostic::error(format!(
            "AIGatewayRoute {} declares no llmRequestCosts entry with metadataKey {:?}; the response cost is not charged on it",
            route.key(),
            metadata.key
        )));
    };
    match token_property(cost.cost_type) {
        Some(property) => Ok(ResponseCost::Tokens(property)),
        None => Err(Diagnostic::error(format!(
            "AIGatewayRoute {}: llmRequestCosts type CEL (metadataKey {:?}, expression {:?}) is not supported yet; the response cost is not charged",
            route.key(),
            metadata.key,
            cost.cel_expression.as_deref().unwrap_or_default()
        ))),
    }
}

/// Which policy's `rateLimit` applies to which route, as Envoy Gateway
/// resolves it: one policy per target; a policy on the route wins over one
/// on its Gateway (which is then reported as overridden there, a note); of
/// two policies on the same target the first by namespace/name wins (Envoy
/// Gateway takes the oldest; files carry no creation time) and the other
/// is reported as conflicted. Policies in namespace/name order, each with
/// the routes it applies to.
fn resolve<'p, 'r>(
    policies: &'p [Named<BackendTrafficPolicySpec>],
    gateway: &Named<GatewaySpec>,
    routes: &[&'r Named<AIGatewayRouteSpec>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(
    &'p Named<BackendTrafficPolicySpec>,
    Vec<&'r Named<AIGatewayRouteSpec>>,
)> {
    let mut limiting: Vec<&Named<BackendTrafficPolicySpec>> = policies
        .iter()
        .filter(|p| p.spec.rate_limit.is_some())
        .collect();
    limiting.sort_by_key(|p| (p.namespace.clone(), p.name.clone()));
    let conflict = |loser: &Named<BackendTrafficPolicySpec>,
                    winner: &Named<BackendTrafficPolicySpec>,
                    on: AttachmentTarget| {
        let target = match &on {
            AttachmentTarget::Gateway(key) => format!("Gateway {key}"),
            AttachmentTarget::Route(key) => format!("route {key}"),
        };
        Diagnostic::error(format!(
            "Conflicted: BackendTrafficPolicy {} also sets rateLimit on {target} and wins (one policy per target, the first by namespace/name); this policy's rateLimit is not applied to it",
            winner.key()
        ))
        .field("spec.targetRefs")
        .attachment(AttachmentReason::Conflicted, on)
        .at(format!("BackendTrafficPolicy {}", loser.key()), &loser.source)
    };
    let on_gateway: Vec<_> = limiting
        .iter()
        .copied()
        .filter(|p| targets_gateway(p, gateway))
        .collect();
    for loser in on_gateway.iter().skip(1) {
        diagnostics.push(conflict(
            loser,
            on_gateway[0],
            AttachmentTarget::Gateway(gateway.key()),
        ));
    }
    let mut assigned: Vec<(
        &Named<BackendTrafficPolicySpec>,
        Vec<&Named<AIGatewayRouteSpec>>,
    )> = limiting.iter().map(|p| (*p, Vec::new())).collect();
    let mut give = |policy: &Named<BackendTrafficPolicySpec>, route| {
        if let Some((_, routes)) = assigned.iter_mut().find(|(p, _)| std::ptr::eq(*p, policy)) {
            routes.push(route);
        }
    };
    for route in routes {
        let on_route: Vec<_> = limiting
            .iter()
            .copied()
            .filter(|p| targets_route(p, route))
            .collect();
        for loser in on_route.iter().skip(1) {
            diagnostics.push(conflict(
                loser,
                on_route[0],
                AttachmentTarget::Route(route.key()),
            ));
        }
        match (on_route.first(), on_gateway.first()) {
            (Some(own), Some(gw)) => {
                diagnostics.push(
                    Diagnostic::note(format!(
                        "rateLimit overridden on route {} by BackendTrafficPolicy {}, which targets the route itself",
                        route.key(),
                        own.key()
                    ))
                    .attachment(
                        AttachmentReason::Overridden,
                        AttachmentTarget::Route(route.key()),
                    )
                    .at(format!("BackendTrafficPolicy {}", gw.key()), &gw.source),
                );
                give(own, *route);
            }
            (Some(p), None) | (None, Some(p)) => give(p, *route),
            (None, None) => {}
        }
    }
    assigned.retain(|(_, routes)| !routes.is_empty());
    assigned
}

/// The rate limits the policies put on `routes`, all attached to `gateway`.
pub fn for_gateway<'a>(
    settings: &Settings,
    policies: &[Named<BackendTrafficPolicySpec>],
    gateway: &Named<GatewaySpec>,
    routes: impl IntoIterator<Item = &'a Named<AIGatewayRouteSpec>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> GatewayLimits {
    let mut out = GatewayLimits::default();
    let mut routes: Vec<&Named<AIGatewayRouteSpec>> = routes.into_iter().collect();
    routes.dedup_by_key(|r| r.key());
    for (policy, hit) in resolve(policies, gateway, &routes, diagnostics) {
        let Some(rate_limit) = &policy.spec.rate_limit else {
            continue;
        };
        let here = |d: Diagnostic| {
            d.at(
                format!("BackendTrafficPolicy {}", policy.key()),
                &policy.source,
            )
        };
        let kind = rate_limit.limit_type.as_deref().unwrap_or("Global");
        if kind != "Global" || rate_limit.local.is_some() {
            diagnostics.push(here(
                Diagnostic::error(format!(
                    "rateLimit type {kind} is not supported yet; only Global"
                ))
                .field("spec.rateLimit.type"),
            ));
            continue;
        }
        let Some(global) = &rate_limit.global else {
            diagnostics.push(here(
                Diagnostic::error("type Global needs rateLimit.global").field("spec.rateLimit"),
            ));
            continue;
        };
        for (i, rule) in global.rules.iter().enumerate() {
            let field = format!("spec.rateLimit.global.rules[{i}]");
            let id = format!("rule-{}/{}/{i}", policy.namespace, policy.name);
            let (actions, source) = match rule_actions(&id, rule) {
                Ok(a) => a,
                Err(mut d) => {
                    d.field = Some(format!("{field}.{}", d.field.unwrap_or_default()));
                    diagnostics.push(here(d));
                    continue;
                }
            };
            let cost = rule.cost.clone().unwrap_or_default();
            let request_hits = match &cost.request {
                None => 1,
                Some(c) if c.from == CostFrom::Number => c.number.unwrap_or(1),
                Some(_) => {
                    diagnostics.push(here(
                        Diagnostic::error(
                            "a request cost from Metadata is not supported; use from: Number",
                        )
                        .field(format!("{field}.cost.request.from")),
                    ));
                    continue;
                }
            };
            out.limits.insert(
                id.clone(),
                Limit {
                    shadow: rule.shadow_mode.unwrap_or(false),
                    source,
                    ..Limit::new(rule.limit.requests, rule.limit.unit)
                },
            );
            for route in &hit {
                let entries = out.per_route.entry(route.key()).or_default();
                let response = cost.response.as_ref().map(|r| response_cost(r, route));
                match response {
                    Some(Ok(ResponseCost::Tokens(property)))
                        if settings.reserve_output_tokens.is_some() =>
                    {
                        let with = |marker: &str| {
                            let mut a = actions.clone();
                            a.push(request_id_action(marker));
                            a
                        };
                        let reserve = reserve_property(property);
                        entries.push(json!({
                            "actions": with(RESERVE_KEY),
                            "hits_addend": {"format": format!("%FILTER_STATE(wasm.{reserve}:PLAIN)%")},
                        }));
                        entries.push(json!({
                            "actions": with(SETTLE_KEY),
                            "apply_on_stream_done": true,
                            "hits_addend": ResponseCost::Tokens(property).hits(),
                        }));
                    }
                    response => {
                        entries.push(
                            json!({"actions": actions, "hits_addend": {"number": request_hits}}),
                        );
                        match response {
                            Some(Ok(cost)) => entries.push(json!({
                                "actions": actions,
                                "apply_on_stream_done": true,
                                "hits_addend": cost.hits(),
                            })),
                            Some(Err(d)) => {
                                diagnostics.push(here(d.field(format!("{field}.cost.response"))))
                            }
                            None => {}
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    const BLUEPRINT: &str = "../../shared/blueprint";

    fn load(texts: &[(&str, String)]) -> (Resources, Vec<Diagnostic>) {
        let mut resources = Resources::default();
        let mut diagnostics = Vec::new();
        for (name, text) in texts {
            crate::load::load_str(name, text, &mut resources, &mut diagnostics);
        }
        (resources, diagnostics)
    }

    fn blueprint(file: &str) -> (&str, String) {
        let path = format!("{}/{BLUEPRINT}/{file}", env!("CARGO_MANIFEST_DIR"));
        (
            "blueprint",
            std::fs::read_to_string(path).expect("the shared blueprint"),
        )
    }

    fn translate(resources: &Resources) -> (GatewayLimits, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let limits = for_gateway(
            &Settings::default(),
            &resources.backend_traffic_policies,
            &resources.gateways[0],
            resources.ai_gateway_routes.iter(),
            &mut diagnostics,
        );
        (limits, diagnostics)
    }

    #[test]
    fn blueprint_token_limits() {
        let (resources, load_errors) = load(&[
            blueprint("gateway.yaml"),
            blueprint("rate-limiting/ai-gateway-route.yaml"),
            blueprint("rate-limiting/backend-traffic-policy.yaml"),
        ]);
        assert!(!crate::error::has_errors(&load_errors), "{load_errors:?}");
        let (limits, diagnostics) = translate(&resources);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let id = |i: usize| format!("rule-default/rate-limit-policy/{i}");
        let want: Vec<(String, u64)> = vec![(id(0), 10), (id(1), 20), (id(2), 25)];
        let got: Vec<(String, u64)> = limits
            .limits
            .iter()
            .map(|(k, l)| (k.clone(), l.requests))
            .collect();
        assert_eq!(got, want);
        assert!(limits
            .limits
            .values()
            .all(|l| l.unit == crate::resources::RateLimitUnit::Hour));
        let entries = &limits.per_route["default/ai-gateway-route"];
        assert_eq!(entries.len(), 6);
        let actions = json!([
            {"generic_key": {"descriptor_key": id(0), "descriptor_value": "1"}},
            {"request_headers": {"header_name": "x-user-id", "descriptor_key": "x-user-id"}},
        ]);
        assert_eq!(
            entries[0],
            json!({"actions": actions, "hits_addend": {"number": 0}})
        );
        assert_eq!(
            entries[1],
            json!({"actions": actions, "apply_on_stream_done": true,
                   "hits_addend": {"format": "%FILTER_STATE(wasm.llm_input_token:PLAIN)%"}})
        );
        assert_eq!(
            entries[3]["hits_addend"]["format"],
            "%FILTER_STATE(wasm.llm_output_token:PLAIN)%"
        );
        assert_eq!(
            entries[5]["hits_addend"]["format"],
            "%FILTER_STATE(wasm.llm_total_token:PLAIN)%"
        );

        // What Envoy receives passes Envoy's schema.
        let route = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            limits.attach("default/ai-gateway-route", json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}))
        ]}]});
        crate::proto::to_any(crate::proto::ROUTE, &route).unwrap();
        let mut listener = json!({"name": "l", "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {"@type": crate::translate::envoy::HCM_TYPE, "stat_prefix": "l",
                "route_config": {}, "http_filters": [crate::translate::envoy::router_filter()]},
        }]}]});
        add_filter(&mut listener, &Settings::default(), "aigw_ratelimit");
        let filters = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(filters[0]["name"], FILTER_NAME);
        assert_eq!(filters[1]["name"], "envoy.filters.http.router");
        crate::proto::to_any(crate::proto::LISTENER, &listener).unwrap();
    }

    #[test]
    fn reserve_mode_reserves_at_admission_and_settles_by_request_id() {
        let (resources, _) = load(&[
            blueprint("gateway.yaml"),
            blueprint("rate-limiting/ai-gateway-route.yaml"),
            blueprint("rate-limiting/backend-traffic-policy.yaml"),
        ]);
        let settings = Settings {
            reserve_output_tokens: Some(256),
            ..Default::default()
        };
        let mut diagnostics = Vec::new();
        let limits = for_gateway(
            &settings,
            &resources.backend_traffic_policies,
            &resources.gateways[0],
            resources.ai_gateway_routes.iter(),
            &mut diagnostics,
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let entries = &limits.per_route["default/ai-gateway-route"];
        assert_eq!(entries.len(), 6, "a reserve and a settle entry per rule");
        let actions = |marker: &str| {
            json!([
                {"generic_key": {"descriptor_key": "rule-default/rate-limit-policy/0", "descriptor_value": "1"}},
                {"request_headers": {"header_name": "x-user-id", "descriptor_key": "x-user-id"}},
                {"request_headers": {"header_name": "x-request-id", "descriptor_key": marker}},
            ])
        };
        assert_eq!(
            entries[0],
            json!({"actions": actions("aigw-reserve"),
                   "hits_addend": {"format": "%FILTER_STATE(wasm.llm_reserve_input_token:PLAIN)%"}})
        );
        assert_eq!(
            entries[1],
            json!({"actions": actions("aigw-settle"), "apply_on_stream_done": true,
                   "hits_addend": {"format": "%FILTER_STATE(wasm.llm_input_token:PLAIN)%"}})
        );
        assert_eq!(
            entries[4]["hits_addend"]["format"],
            "%FILTER_STATE(wasm.llm_reserve_total_token:PLAIN)%"
        );
        let route = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            limits.attach("default/ai-gateway-route", json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}))
        ]}]});
        crate::proto::to_any(crate::proto::ROUTE, &route).unwrap();
        // Request costs stay plain: a request-count rule is unchanged.
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route_yaml("[]")),
            (
                "p",
                policy(
                    "{kind: Gateway, name: gw}",
                    "{limit: {requests: 5, unit: Hour}}",
                ),
            ),
        ]);
        let mut diagnostics = Vec::new();
        let limits = for_gateway(
            &settings,
            &resources.backend_traffic_policies,
            &resources.gateways[0],
            resources.ai_gateway_routes.iter(),
            &mut diagnostics,
        );
        assert_eq!(limits.per_route["default/r"].len(), 1);
        assert_eq!(
            limits.per_route["default/r"][0]["hits_addend"],
            json!({"number": 1})
        );
    }

    fn route_yaml(costs: &str) -> String {
        route(costs)
    }

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {listeners: [{name: http, port: 80, protocol: HTTP}]}\n";

    fn route(costs: &str) -> String {
        format!("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: b}}]}}]\n  llmRequestCosts: {costs}\n")
    }

    fn policy(target: &str, rule: &str) -> String {
        format!("apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{target}]\n  rateLimit:\n    type: Global\n    global:\n      rules: [{rule}]\n")
    }

    #[test]
    fn custom_metadata_key_maps_by_type_and_model_selector() {
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route("[{metadataKey: my_tokens, type: OutputToken}]")),
            ("p", policy(
                "{kind: HTTPRoute, name: r}",
                "{clientSelectors: [{headers: [{name: x-user-id, type: Distinct}, {name: x-ai-eg-model, value: m1}]}], limit: {requests: 5, unit: Minute}, cost: {response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: my_tokens}}}}",
            )),
        ]);
        let (limits, diagnostics) = translate(&resources);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let entries = &limits.per_route["default/r"];
        assert_eq!(
            entries[0]["hits_addend"],
            json!({"number": 1}),
            "request cost defaults to 1"
        );
        assert_eq!(
            entries[1]["hits_addend"]["format"],
            "%FILTER_STATE(wasm.llm_output_token:PLAIN)%"
        );
        assert_eq!(
            entries[0]["actions"][2],
            json!({"header_value_match": {"descriptor_key": "x-ai-eg-model", "descriptor_value": "m1",
                "expect_match": true, "headers": [{"name": "x-ai-eg-model", "string_match": {"exact": "m1"}}]}})
        );
    }

    #[test]
    fn unsupported_costs_are_named() {
        let rule = |key: &str| {
            format!("{{limit: {{requests: 5, unit: Hour}}, cost: {{request: {{from: Number, number: 0}}, response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: {key}}}}}}}}}")
        };
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            (
                "r",
                route("[{metadataKey: cel_cost, type: CEL, celExpression: '1'}]"),
            ),
            (
                "p",
                policy(
                    "{kind: Gateway, name: gw}",
                    &format!("{}, {}", rule("cel_cost"), rule("undeclared")),
                ),
            ),
        ]);
        let (limits, diagnostics) = translate(&resources);
        let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("CEL") && text[0].contains("not supported yet"),
            "{text:?}"
        );
        assert!(
            text[1].contains("no llmRequestCosts entry with metadataKey \"undeclared\""),
            "{text:?}"
        );
        assert!(
            text[1].contains("spec.rateLimit.global.rules[1].cost.response"),
            "{text:?}"
        );
        // The request-time checks stay.
        assert_eq!(limits.per_route["default/r"].len(), 2);
    }

    #[test]
    fn policies_for_other_targets_do_nothing() {
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route("[]")),
            (
                "p",
                policy(
                    "{kind: Gateway, name: other}",
                    "{limit: {requests: 5, unit: Hour}}",
                ),
            ),
        ]);
        let (limits, diagnostics) = translate(&resources);
        assert!(limits.is_empty() && diagnostics.is_empty());
    }

    fn policy_named(name: &str, target: &str, rule: &str) -> String {
        policy(target, rule).replace(
            "metadata: {name: p}",
            &format!("metadata: {{name: {name}}}"),
        )
    }

    #[test]
    fn source_cidr_selectors() {
        let rule = |cidr: &str| {
            format!("{{clientSelectors: [{{sourceCIDR: {cidr}}}], limit: {{requests: 5, unit: Minute}}}}")
        };
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route("[]")),
            ("p", policy("{kind: Gateway, name: gw}", &[
                rule("{type: Exact, value: 10.0.0.0/8}"),
                rule("{type: Distinct, value: 127.0.0.0/8}"),
                rule("{value: '2001:db8::/32'}"),
                rule("{type: Exact, value: 10.0.0.0/33}"),
                rule("{type: Sometimes, value: 10.0.0.0/8}"),
                "{clientSelectors: [{sourceCIDR: {value: 10.0.0.0/8}}, {sourceCIDR: {value: 11.0.0.0/8}}], limit: {requests: 5, unit: Minute}}".to_string(),
            ].join(", "))),
        ]);
        let (limits, diagnostics) = translate(&resources);
        let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text[0].contains("rules[3].clientSelectors[0].sourceCIDR")
                && text[0].contains("is not a CIDR"),
            "{text:?}"
        );
        assert!(
            text[1].contains("\"Sometimes\" is not one of Exact, Distinct"),
            "{text:?}"
        );
        assert!(
            text[2].contains("rules[5].clientSelectors[1].sourceCIDR")
                && text[2].contains("at most one"),
            "{text:?}"
        );
        let entries = &limits.per_route["default/r"];
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0]["actions"][1],
            json!({"masked_remote_address": {"v4_prefix_mask_len": 8}})
        );
        assert_eq!(
            entries[1]["actions"][1],
            json!({"masked_remote_address": {"v4_prefix_mask_len": 32}})
        );
        assert_eq!(
            entries[2]["actions"][1],
            json!({"masked_remote_address": {"v6_prefix_mask_len": 32}})
        );
        let source = |i: usize| {
            limits.limits[&format!("rule-default/p/{i}")]
                .source
                .unwrap()
        };
        assert_eq!(source(0), SourceCidr::parse("10.0.0.0/8").unwrap());
        assert_eq!(source(1), SourceCidr::parse("127.0.0.0/8").unwrap());
        assert_eq!(source(2).prefix, 32);
        let route = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            limits.attach("default/r", json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}))
        ]}]});
        crate::proto::to_any(crate::proto::ROUTE, &route).unwrap();
    }

    #[test]
    fn shadow_mode_reaches_the_service() {
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route("[]")),
            ("p", policy("{kind: Gateway, name: gw}",
                "{limit: {requests: 5, unit: Minute}, shadowMode: true}, {limit: {requests: 5, unit: Minute}}")),
        ]);
        let (limits, diagnostics) = translate(&resources);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert!(limits.limits["rule-default/p/0"].shadow);
        assert!(!limits.limits["rule-default/p/1"].shadow);
        assert_eq!(
            limits.per_route["default/r"].len(),
            2,
            "shadow rules are still counted"
        );
    }

    #[test]
    fn conflicting_policies_one_wins_per_target() {
        let rule = "{limit: {requests: 5, unit: Minute}}";
        let second_route = route("[]").replace("{name: r}", "{name: r2}");
        let (resources, _) = load(&[
            ("g", GATEWAY.into()),
            ("r", route("[]")),
            ("r2", second_route),
            ("a", policy_named("b-gw", "{kind: Gateway, name: gw}", rule)),
            ("b", policy_named("a-gw", "{kind: Gateway, name: gw}", rule)),
            (
                "c",
                policy_named("z-route", "{kind: AIGatewayRoute, name: r}", rule),
            ),
            (
                "d",
                policy_named("y-route", "{kind: AIGatewayRoute, name: r}", rule),
            ),
        ]);
        let (limits, diagnostics) = translate(&resources);
        let text: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        let errors: Vec<&String> = text.iter().filter(|t| t.starts_with("error")).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(errors[0].contains("BackendTrafficPolicy default/b-gw: spec.targetRefs: Conflicted: BackendTrafficPolicy default/a-gw also sets rateLimit on Gateway default/gw and wins"), "{text:?}");
        assert!(errors[1].contains("BackendTrafficPolicy default/z-route: spec.targetRefs: Conflicted: BackendTrafficPolicy default/y-route also sets rateLimit on route default/r"), "{text:?}");
        assert!(
            text.iter().any(|t| t.starts_with("note")
                && t.contains("default/a-gw")
                && t.contains(
                    "overridden on route default/r by BackendTrafficPolicy default/y-route"
                )),
            "{text:?}"
        );
        let first_key = |route: &str| {
            limits.per_route[route][0]["actions"][0]["generic_key"]["descriptor_key"].clone()
        };
        assert_eq!(
            limits.per_route["default/r"].len(),
            1,
            "only the route's own policy"
        );
        assert_eq!(first_key("default/r"), "rule-default/y-route/0");
        assert_eq!(limits.per_route["default/r2"].len(), 1);
        assert_eq!(first_key("default/r2"), "rule-default/a-gw/0");
        let rules: Vec<&String> = limits.limits.keys().collect();
        assert_eq!(rules, ["rule-default/a-gw/0", "rule-default/y-route/0"]);
    }
}
