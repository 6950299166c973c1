//! Failover, retries, timeouts, passive health checks and circuit breakers:
//! BackendTrafficPolicy `retry`, `timeout`, `healthCheck.passive`,
//! `circuitBreaker` and the AIGatewayRoute rule's `timeouts` -> the Envoy
//! route's `timeout` / `retry_policy` and the rule cluster's
//! `outlier_detection` / `circuit_breakers`. Pure.
//!
//! Which policy applies: for each of the four fields, the most specific
//! BackendTrafficPolicy that sets it: one whose targetRef names the
//! AIGatewayRoute (kind `AIGatewayRoute` or `HTTPRoute`, same namespace),
//! else one that targets a Gateway the route is attached to.
//!
//! Defaults for AI routes (no `retry` in any policy that applies):
//! retry on `connect-failure`, `refused-stream`, `reset` and the statuses
//! 429, 500, 502, 503 and 504, as many times as the rule has fallback
//! priority groups (at least once), each retry going to the next priority
//! group (`previous_priorities`, one attempt per priority) and never to a
//! host already tried (`previous_hosts`). Request timeout 60 s. Up to 1024
//! retries in flight per cluster (Envoy's default of 3 would turn a
//! provider outage under load into client errors).
//!
//! Every attempt goes through the cluster's upstream HTTP filters, so the
//! wasm filter's upstream role rewrites the client's original request for
//! the backend each attempt lands on.

use crate::error::Diagnostic;
use crate::resources::{
    AIGatewayRouteSpec, BackendTrafficPolicySpec, GatewaySpec, Named, Resources, RetrySpec,
    RouteRule,
};
use serde_json::{json, Map, Value};

/// Request timeout of AI routes when neither the rule nor a policy sets one.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Statuses retried (on the next priority) when no policy says otherwise.
pub const DEFAULT_RETRIABLE_STATUS_CODES: [u16; 5] = [429, 500, 502, 503, 504];
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,reset,retriable-status-codes";
/// `healthCheck.passive` durations when the policy leaves them out (Envoy
/// Gateway's CRD defaults).
pub const DEFAULT_OUTLIER_INTERVAL_MS: u64 = 3_000;
pub const DEFAULT_BASE_EJECTION_TIME_MS: u64 = 30_000;
/// Concurrent retries per cluster when no circuitBreaker says otherwise.
pub const DEFAULT_MAX_PARALLEL_RETRIES: u32 = 1024;

const RETRY_TRIGGERS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// What one rule gets: route entry fields and cluster fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleResilience {
    /// Fields of the Envoy route's `route` action (`timeout`, `retry_policy`).
    pub route_action: Map<String, Value>,
    /// Fields merged into the rule's cluster.
    pub cluster: Map<String, Value>,
    /// Fields of the cluster's `common_http_protocol_options`.
    pub http_protocol: Map<String, Value>,
}

impl RuleResilience {
    /// Adds the route action fields to an Envoy route entry.
    pub fn apply_route(&self, entry: &mut Value) {
        if let Some(action) = entry.get_mut("route").and_then(Value::as_object_mut) {
            for (k, v) in &self.route_action {
                action.insert(k.clone(), v.clone());
            }
        }
    }

    /// Adds the cluster fields to an Envoy cluster.
    pub fn apply_cluster(&self, cluster: &mut Value) {
        if let Some(object) = cluster.as_object_mut() {
            for (k, v) in &self.cluster {
                object.insert(k.clone(), v.clone());
            }
        }
        if !self.http_protocol.is_empty() {
            if let Some(options) = cluster
                .pointer_mut("/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
                .and_then(Value::as_object_mut)
            {
                options.insert(
                    "common_http_protocol_options".into(),
                    Value::Object(self.http_protocol.clone()),
                );
            }
        }
    }
}

/// Gateway API / Envoy Gateway durations: `100ms`, `30s`, `2m`, `1h30m`.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i || i - start > 9 {
            return None;
        }
        let n: u64 = text[start..i].parse().ok()?;
        let unit_ms = if text[i..].starts_with("ms") {
            i += 2;
            1
        } else {
            let unit = *bytes.get(i)?;
            i += 1;
            match unit {
                b'h' => 3_600_000,
                b'm' => 60_000,
                b's' => 1000,
                _ => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

/// An Envoy (protobuf JSON) duration.
pub fn envoy_duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn route_gateways<'a>(
    resources: &'a Resources,
    route: &Named<AIGatewayRouteSpec>,
) -> Vec<&'a Named<GatewaySpec>> {
    let refs = if route.spec.parent_refs.is_empty() {
        &route.spec.target_refs
    } else {
        &route.spec.parent_refs
    };
    resources
        .gateways
        .iter()
        .filter(|g| {
            if refs.is_empty() {
                return g.namespace == route.namespace;
            }
            refs.iter().any(|r| {
                r.name == g.name
                    && r.kind.as_deref().is_none_or(|k| k == "Gateway")
                    && r.namespace.as_deref().unwrap_or(&route.namespace) == g.namespace
            })
        })
        .collect()
}

/// Policies that apply to `route`, most specific first.
pub fn policies_for_route<'a>(
    resources: &'a Resources,
    route: &Named<AIGatewayRouteSpec>,
) -> Vec<&'a Named<BackendTrafficPolicySpec>> {
    let targets = |p: &Named<BackendTrafficPolicySpec>| {
        p.spec
            .target_refs
            .iter()
            .chain(p.spec.target_ref.iter())
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut out: Vec<&Named<BackendTrafficPolicySpec>> = resources
        .backend_traffic_policies
        .iter()
        .filter(|p| {
            p.namespace == route.namespace
                && targets(p).iter().any(|t| {
                    t.name == route.name
                        && matches!(t.kind.as_deref(), Some("AIGatewayRoute" | "HTTPRoute"))
                })
        })
        .collect();
    let gateways = route_gateways(resources, route);
    for p in &resources.backend_traffic_policies {
        let on_gateway = gateways.iter().any(|g| {
            p.namespace == g.namespace
                && targets(p)
                    .iter()
                    .any(|t| t.name == g.name && t.kind.as_deref().is_none_or(|k| k == "Gateway"))
        });
        if on_gateway && !out.iter().any(|o| std::ptr::eq(*o, p)) {
            out.push(p);
        }
    }
    out
}

struct Ctx<'a> {
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn duration(
        &mut self,
        policy: &Named<BackendTrafficPolicySpec>,
        field: &str,
        text: &str,
    ) -> Option<u64> {
        let parsed = parse_duration_ms(text);
        if parsed.is_none() {
            self.diagnostics.push(
                Diagnostic::error(format!(
                    "{text:?} is not a duration such as 100ms, 30s or 2m; the field is ignored"
                ))
                .at(
                    format!("BackendTrafficPolicy {}", policy.key()),
                    &policy.source,
                )
                .field(field.to_string()),
            );
        }
        parsed
    }
}

fn retry_policy(
    ctx: &mut Ctx,
    policy: Option<(&Named<BackendTrafficPolicySpec>, &RetrySpec)>,
    priority_groups: usize,
    per_try_timeout_ms: Option<u64>,
) -> Value {
    let fallbacks = u32::try_from(priority_groups.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .max(1);
    let spec = policy.map(|(_, s)| s.clone()).unwrap_or_default();
    let mut retry_on: Vec<String> = Vec::new();
    let mut codes: Vec<u16> = DEFAULT_RETRIABLE_STATUS_CODES.to_vec();
    if let (Some((p, _)), Some(on)) = (policy, spec.retry_on.as_ref()) {
        for (i, t) in on.triggers.iter().enumerate() {
            if RETRY_TRIGGERS.contains(&t.as_str()) {
                if !retry_on.contains(t) {
                    retry_on.push(t.clone());
                }
            } else {
                ctx.diagnostics.push(
                    Diagnostic::warning(format!(
                        "retry trigger {t:?} is not known; expected one of {}",
                        RETRY_TRIGGERS.join(", ")
                    ))
                    .at(format!("BackendTrafficPolicy {}", p.key()), &p.source)
                    .field(format!("spec.retry.retryOn.triggers[{i}]")),
                );
            }
        }
        if !on.http_status_codes.is_empty() {
            codes = on.http_status_codes.clone();
            if !retry_on.iter().any(|t| t == "retriable-status-codes") {
                retry_on.push("retriable-status-codes".into());
            }
        } else if !retry_on.iter().any(|t| t == "retriable-status-codes") {
            codes.clear();
        }
    }
    if retry_on.is_empty() {
        retry_on = DEFAULT_RETRY_ON.split(',').map(str::to_string).collect();
    }
    let mut out = json!({
        "retry_on": retry_on.join(","),
        "num_retries": spec.num_retries.unwrap_or(fallbacks),
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": spec.num_attempts_per_priority.unwrap_or(1).max(1),
            },
        },
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
            },
        }],
        "host_selection_retry_max_attempts": 5,
    });
    if !codes.is_empty() {
        out["retriable_status_codes"] = json!(codes);
    }
    let per_retry = spec.per_retry.clone().unwrap_or_default();
    let mut per_try = per_try_timeout_ms;
    if let (Some((p, _)), Some(t)) = (policy, per_retry.timeout.as_deref()) {
        per_try = ctx
            .duration(p, "spec.retry.perRetry.timeout", t)
            .or(per_try);
    }
    if let Some(ms) = per_try.filter(|ms| *ms > 0) {
        out["per_try_timeout"] = json!(envoy_duration_ms(ms));
    }
    if let (Some((p, _)), Some(back_off)) = (policy, per_retry.back_off.as_ref()) {
        let base = back_off
            .base_interval
            .as_deref()
            .and_then(|t| ctx.duration(p, "spec.retry.perRetry.backOff.baseInterval", t))
            .filter(|ms| *ms > 0);
        let max = back_off
            .max_interval
            .as_deref()
            .and_then(|t| ctx.duration(p, "spec.retry.perRetry.backOff.maxInterval", t))
            .filter(|ms| *ms > 0);
        if let Some(base) = base {
            let mut b = json!({"base_interval": envoy_duration_ms(base)});
            if let Some(max) = max {
                b["max_interval"] = json!(envoy_duration_ms(max.max(base)));
            }
            out["retry_back_off"] = b;
        }
    }
    out
}

/// The resilience settings of rule `index` of `route`. `None` (with a
/// diagnostic) when the rule's own timeouts are invalid.
pub fn for_rule(
    resources: &Resources,
    route: &Named<AIGatewayRouteSpec>,
    index: usize,
    rule: &RouteRule,
    priority_groups: usize,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RuleResilience> {
    let policies = policies_for_route(resources, route);
    let mut ctx = Ctx { diagnostics };
    let mut out = RuleResilience::default();
    let here = |d: Diagnostic| d.at(format!("AIGatewayRoute {}", route.key()), &route.source);

    // Rule timeouts first, then the policy's, then the default.
    let rule_timeout = |text: Option<&String>, field: &str, ctx: &mut Ctx| match text {
        None => Ok(None),
        Some(t) => match parse_duration_ms(t) {
            Some(ms) => Ok(Some(ms)),
            None => {
                ctx.diagnostics.push(here(
                    Diagnostic::error(format!("{t:?} is not a duration such as 30s or 2m"))
                        .field(format!("spec.rules[{index}].timeouts.{field}")),
                ));
                Err(())
            }
        },
    };
    let timeouts = rule.timeouts.as_ref();
    let request = rule_timeout(
        timeouts.and_then(|t| t.request.as_ref()),
        "request",
        &mut ctx,
    )
    .ok()?;
    let backend_request = rule_timeout(
        timeouts.and_then(|t| t.backend_request.as_ref()),
        "backendRequest",
        &mut ctx,
    )
    .ok()?;
    let policy_timeout = policies.iter().find_map(|p| {
        p.spec
            .timeout
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.request_timeout.as_deref())
            .map(|t| (*p, t))
    });
    let policy_request =
        policy_timeout.and_then(|(p, t)| ctx.duration(p, "spec.timeout.http.requestTimeout", t));
    let request_ms = request
        .or(policy_request)
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    out.route_action
        .insert("timeout".into(), json!(envoy_duration_ms(request_ms)));

    let retry = policies
        .iter()
        .find_map(|p| p.spec.retry.as_ref().map(|r| (*p, r)));
    out.route_action.insert(
        "retry_policy".into(),
        retry_policy(&mut ctx, retry, priority_groups, backend_request),
    );

    let tcp_connect = policies.iter().find_map(|p| {
        p.spec
            .timeout
            .as_ref()
            .and_then(|t| t.tcp.as_ref())
            .and_then(|t| t.connect_timeout.as_deref())
            .map(|t| (*p, t))
    });
    if let Some(ms) = tcp_connect
        .and_then(|(p, t)| ctx.duration(p, "spec.timeout.tcp.connectTimeout", t))
        .filter(|ms| *ms > 0)
    {
        out.cluster
            .insert("connect_timeout".into(), json!(envoy_duration_ms(ms)));
    }
    let idle = policies.iter().find_map(|p| {
        p.spec
            .timeout
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.connection_idle_timeout.as_deref())
            .map(|t| (*p, t))
    });
    if let Some(ms) =
        idle.and_then(|(p, t)| ctx.duration(p, "spec.timeout.http.connectionIdleTimeout", t))
    {
        out.http_protocol
            .insert("idle_timeout".into(), json!(envoy_duration_ms(ms)));
    }

    let passive = policies.iter().find_map(|p| {
        p.spec
            .health_check
            .as_ref()
            .and_then(|h| h.passive.as_ref())
            .map(|h| (*p, h))
    });
    if let Some((p, h)) = passive {
        let mut od = Map::new();
        if let Some(n) = h.consecutive_5xx_errors {
            od.insert("consecutive_5xx".into(), json!(n));
        }
        if let Some(n) = h.consecutive_gateway_errors {
            od.insert("consecutive_gateway_failure".into(), json!(n));
            od.insert("enforcing_consecutive_gateway_failure".into(), json!(100));
        }
        if let Some(n) = h.consecutive_local_origin_failures {
            od.insert("consecutive_local_origin_failure".into(), json!(n));
        }
        if let Some(split) = h.split_external_local_origin_errors {
            od.insert("split_external_local_origin_errors".into(), json!(split));
        }
        let field = "spec.healthCheck.passive";
        // Envoy Gateway always sets both durations, from its CRD defaults
        // when the user did not. Read from files no API server applies
        // those, and Envoy's own interval default (10 s) is not Envoy
        // Gateway's (3 s).
        let interval = h
            .interval
            .as_deref()
            .and_then(|t| ctx.duration(p, &format!("{field}.interval"), t))
            .filter(|ms| *ms > 0)
            .unwrap_or(DEFAULT_OUTLIER_INTERVAL_MS);
        od.insert("interval".into(), json!(envoy_duration_ms(interval)));
        let base = h
            .base_ejection_time
            .as_deref()
            .and_then(|t| ctx.duration(p, &format!("{field}.baseEjectionTime"), t))
            .filter(|ms| *ms > 0)
            .unwrap_or(DEFAULT_BASE_EJECTION_TIME_MS);
        od.insert("base_ejection_time".into(), json!(envoy_duration_ms(base)));
        // 0 means "not set" to Envoy Gateway (Envoy's default, 10 %), not
        // "never eject" (Envoy ejects one host whatever the percentage).
        if let Some(n) = h.max_ejection_percent.filter(|n| *n > 0) {
            od.insert("max_ejection_percent".into(), json!(n.min(100)));
        }
        out.cluster
            .insert("outlier_detection".into(), Value::Object(od));
        // Envoy merges health changes that come within 1 s of a cluster's
        // previous update and hands them to the workers up to 1 s later
        // (`update_merge_window`), so an ejection right after start-up (the
        // STRICT_DNS resolutions) or after another ejection left the host
        // in rotation that long. A rule has a handful of endpoints: nothing
        // to save by merging.
        out.cluster.insert(
            "common_lb_config".into(),
            json!({"update_merge_window": "0s"}),
        );
    }

    let breaker = policies
        .iter()
        .find_map(|p| p.spec.circuit_breaker.as_ref());
    let mut thresholds = Map::new();
    thresholds.insert("priority".into(), json!("DEFAULT"));
    thresholds.insert("max_retries".into(), json!(DEFAULT_MAX_PARALLEL_RETRIES));
    if let Some(b) = breaker {
        for (key, value) in [
            ("max_connections", b.max_connections),
            ("max_pending_requests", b.max_pending_requests),
            ("max_requests", b.max_parallel_requests),
            ("max_retries", b.max_parallel_retries),
        ] {
            if let Some(v) = value {
                thresholds.insert(key.into(), json!(v));
            }
        }
        if let Some(n) = b.max_requests_per_connection {
            out.http_protocol
                .insert("max_requests_per_connection".into(), json!(n));
        }
    }
    out.cluster.insert(
        "circuit_breakers".into(),
        json!({"thresholds": [Value::Object(thresholds)]}),
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RouteTimeouts, TargetRef};

    fn named<T>(name: &str, spec: T) -> Named<T> {
        Named {
            name: name.into(),
            namespace: "default".into(),
            source: Default::default(),
            spec,
        }
    }

    fn route() -> Named<AIGatewayRouteSpec> {
        named(
            "route",
            AIGatewayRouteSpec {
                parent_refs: vec![TargetRef {
                    name: "gw".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    }

    fn policy(yaml: &str) -> Named<BackendTrafficPolicySpec> {
        named("btp", serde_yaml::from_str(yaml).unwrap())
    }

    fn resources(policies: Vec<Named<BackendTrafficPolicySpec>>) -> Resources {
        Resources {
            gateways: vec![named("gw", GatewaySpec::default())],
            backend_traffic_policies: policies,
            ..Default::default()
        }
    }

    fn run(r: &Resources, rule: &RouteRule, groups: usize) -> (RuleResilience, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let out = for_rule(r, &route(), 0, rule, groups, &mut d).unwrap();
        (out, d)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("100ms"), Some(100));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("2s500ms"), Some(2500));
        for bad in ["", "10", "s", "1.5s", "10x", "-1s", "9999999999s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        assert_eq!(envoy_duration_ms(60_000), "60s");
        assert_eq!(envoy_duration_ms(250), "0.250s");
    }

    #[test]
    fn defaults_fail_over_to_each_priority() {
        let (out, d) = run(&resources(vec![]), &RouteRule::default(), 3);
        assert!(d.is_empty());
        assert_eq!(out.route_action["timeout"], "60s");
        let retry = &out.route_action["retry_policy"];
        assert_eq!(retry["retry_on"], DEFAULT_RETRY_ON);
        assert_eq!(retry["num_retries"], 2);
        assert_eq!(
            retry["retriable_status_codes"],
            json!([429, 500, 502, 503, 504])
        );
        assert_eq!(
            retry["retry_priority"]["name"],
            "envoy.retry_priorities.previous_priorities"
        );
        assert_eq!(
            retry["retry_priority"]["typed_config"]["update_frequency"],
            1
        );
        assert_eq!(
            retry["retry_host_predicate"][0]["name"],
            "envoy.retry_host_predicates.previous_hosts"
        );
        assert!(retry.get("per_try_timeout").is_none());
        assert_eq!(
            out.cluster["circuit_breakers"]["thresholds"][0]["max_retries"],
            1024
        );
        assert!(!out.cluster.contains_key("outlier_detection"));
        assert!(!out.cluster.contains_key("common_lb_config"));
        // A single priority still gets one retry (on another host or the same).
        let (out, _) = run(&resources(vec![]), &RouteRule::default(), 1);
        assert_eq!(out.route_action["retry_policy"]["num_retries"], 1);
    }

    #[test]
    fn policy_on_gateway_translates_every_field() {
        let p = policy(
            r#"
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
retry:
  numRetries: 4
  numAttemptsPerPriority: 2
  retryOn:
    triggers: [connect-failure, retriable-status-codes, reset, bogus]
    httpStatusCodes: [500, 429]
  perRetry:
    timeout: 250ms
    backOff: {baseInterval: 100ms, maxInterval: 10s}
timeout:
  http: {requestTimeout: 2m, connectionIdleTimeout: 30s}
  tcp: {connectTimeout: 3s}
healthCheck:
  passive:
    consecutive5XxErrors: 3
    consecutiveGatewayErrors: 2
    interval: 5s
    baseEjectionTime: 30s
    maxEjectionPercent: 100
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 1
circuitBreaker:
  maxConnections: 10
  maxPendingRequests: 11
  maxParallelRequests: 12
  maxParallelRetries: 13
  maxRequestsPerConnection: 14
"#,
        );
        let (out, d) = run(&resources(vec![p]), &RouteRule::default(), 2);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].to_string().contains("bogus"), "{}", d[0]);
        assert_eq!(out.route_action["timeout"], "120s");
        let retry = &out.route_action["retry_policy"];
        assert_eq!(
            retry["retry_on"],
            "connect-failure,retriable-status-codes,reset"
        );
        assert_eq!(retry["num_retries"], 4);
        assert_eq!(retry["retriable_status_codes"], json!([500, 429]));
        assert_eq!(retry["per_try_timeout"], "0.250s");
        assert_eq!(
            retry["retry_back_off"],
            json!({"base_interval": "0.100s", "max_interval": "10s"})
        );
        assert_eq!(
            retry["retry_priority"]["typed_config"]["update_frequency"],
            2
        );
        assert_eq!(out.cluster["connect_timeout"], "3s");
        assert_eq!(
            out.cluster["outlier_detection"],
            json!({
                "consecutive_5xx": 3,
                "consecutive_gateway_failure": 2,
                "enforcing_consecutive_gateway_failure": 100,
                "consecutive_local_origin_failure": 1,
                "split_external_local_origin_errors": true,
                "interval": "5s",
                "base_ejection_time": "30s",
                "max_ejection_percent": 100,
            })
        );
        assert_eq!(
            out.cluster["circuit_breakers"],
            json!({"thresholds": [{"priority": "DEFAULT", "max_connections": 10,
                "max_pending_requests": 11, "max_requests": 12, "max_retries": 13}]})
        );
        assert_eq!(
            Value::Object(out.http_protocol.clone()),
            json!({"idle_timeout": "30s", "max_requests_per_connection": 14})
        );
        let mut cluster = json!({"name": "c", "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"http_filters": []}}});
        out.apply_cluster(&mut cluster);
        assert_eq!(cluster["connect_timeout"], "3s");
        assert_eq!(
            cluster["typed_extension_protocol_options"]
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["common_http_protocol_options"]["idle_timeout"],
            "30s"
        );
        let mut entry = json!({"route": {"cluster": "c"}});
        out.apply_route(&mut entry);
        assert_eq!(entry["route"]["cluster"], "c");
        assert_eq!(entry["route"]["retry_policy"]["num_retries"], 4);
    }

    #[test]
    fn passive_health_check_gets_envoy_gateways_defaults() {
        let p = policy(
            "targetRefs: [{kind: HTTPRoute, name: route}]\nhealthCheck: {passive: {consecutive5XxErrors: 2, maxEjectionPercent: 0}}",
        );
        let (out, d) = run(&resources(vec![p]), &RouteRule::default(), 2);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            out.cluster["outlier_detection"],
            json!({"consecutive_5xx": 2, "interval": "3s", "base_ejection_time": "30s"})
        );
        assert_eq!(
            out.cluster["common_lb_config"],
            json!({"update_merge_window": "0s"})
        );
        let p = policy(
            "targetRefs: [{kind: HTTPRoute, name: route}]\nhealthCheck: {passive: {interval: soon, baseEjectionTime: 2s}}",
        );
        let (out, d) = run(&resources(vec![p]), &RouteRule::default(), 2);
        assert!(d[0].to_string().contains("passive.interval"), "{}", d[0]);
        assert_eq!(
            out.cluster["outlier_detection"],
            json!({"interval": "3s", "base_ejection_time": "2s"})
        );
    }

    #[test]
    fn route_policy_wins_per_field_and_rule_timeouts_win() {
        let on_route = policy(
            "targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: route}]\nretry: {numRetries: 7}",
        );
        let mut on_gateway = policy(
            "targetRefs: [{kind: Gateway, name: gw}]\nretry: {numRetries: 1}\ntimeout: {http: {requestTimeout: 5s}}",
        );
        on_gateway.name = "gw-policy".into();
        let elsewhere =
            policy("targetRefs: [{kind: Gateway, name: other}]\nretry: {numRetries: 9}");
        let r = resources(vec![on_gateway, elsewhere, on_route]);
        let (out, _) = run(&r, &RouteRule::default(), 2);
        assert_eq!(out.route_action["retry_policy"]["num_retries"], 7);
        assert_eq!(out.route_action["timeout"], "5s");
        // Only the codes the user gave are retried; with no codes and an
        // explicit trigger list, none are.
        let rule = RouteRule {
            timeouts: Some(RouteTimeouts {
                request: Some("90s".into()),
                backend_request: Some("1500ms".into()),
            }),
            ..Default::default()
        };
        let (out, _) = run(&r, &rule, 2);
        assert_eq!(out.route_action["timeout"], "90s");
        assert_eq!(
            out.route_action["retry_policy"]["per_try_timeout"],
            "1.500s"
        );
        let only_connect =
            policy("targetRefs: [{kind: Gateway, name: gw}]\nretry: {retryOn: {triggers: [connect-failure]}}");
        let (out, _) = run(&resources(vec![only_connect]), &RouteRule::default(), 2);
        let retry = &out.route_action["retry_policy"];
        assert_eq!(retry["retry_on"], "connect-failure");
        assert!(retry.get("retriable_status_codes").is_none());
    }

    #[test]
    fn bad_durations_are_reported() {
        let rule = RouteRule {
            timeouts: Some(RouteTimeouts {
                request: Some("soon".into()),
                backend_request: None,
            }),
            ..Default::default()
        };
        let mut d = Vec::new();
        assert!(for_rule(&resources(vec![]), &route(), 0, &rule, 1, &mut d).is_none());
        assert!(d[0].to_string().contains("timeouts.request"), "{}", d[0]);
        let p = policy(
            "targetRefs: [{kind: Gateway, name: gw}]\ntimeout: {http: {requestTimeout: later}}",
        );
        let (out, d) = run(&resources(vec![p]), &RouteRule::default(), 1);
        assert_eq!(out.route_action["timeout"], "60s");
        assert!(d[0].to_string().contains("requestTimeout"), "{}", d[0]);
    }
}
