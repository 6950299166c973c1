//! Which rules the router role serves directly (`PluginConfig::direct`):
//! it writes the request for the rule's one backend itself, and the rule's
//! cluster runs no upstream role, which saves a wasm context and its
//! callbacks on every request (about a fifth of the filter's cost).
//!
//! A rule qualifies when a request for one of its models can only ever
//! reach it (so the router role, knowing the model, knows the backend),
//! when it has one backend (no other attempt needs the request translated
//! afresh), and when nothing after the router role reads what it rewrites:
//! no client authentication (JWT, API keys, external auth read the
//! client's headers and must not see the provider's credential) and no
//! rate limit on a header the gateway writes.

use aigw_filter::config::{DIRECT_HEADER, HANDOFF_HEADER};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One rule as served on a listener, in route order.
pub struct RuleOnListener<'a> {
    pub cluster: &'a str,
    /// The rule's backend when it has exactly one.
    pub backend: Option<&'a str>,
    /// Its route entries (Envoy JSON), in order.
    pub entries: &'a [Value],
}

/// What one listener allows: models served directly, and the clusters of
/// rules that cannot be.
#[derive(Debug, Default, PartialEq)]
pub struct ListenerDirect {
    /// model -> (backend, cluster)
    pub models: BTreeMap<String, (String, String)>,
    pub refused_clusters: BTreeSet<String>,
}

/// The listener's rules (in route order) that qualify. `allowed`: the
/// listener has no client authentication and no rate limit on a header
/// the gateway writes (see [`rate_limits_allow`]).
pub fn on_listener(rules: &[RuleOnListener], allowed: bool) -> ListenerDirect {
    let mut out = ListenerDirect::default();
    // Models an earlier entry may take, and whether one may take any.
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut any_claimed = false;
    for rule in rules {
        let mut models = Vec::new();
        let mut qualifies = allowed && rule.backend.is_some();
        for entry in rule.entries {
            match only_exact_model(entry) {
                Some(model) => {
                    if any_claimed || claimed.contains(&model) {
                        qualifies = false;
                    }
                    models.push(model);
                }
                None => {
                    qualifies = false;
                    match exact_model(entry) {
                        Some(model) => {
                            claimed.insert(model);
                        }
                        None => any_claimed = true,
                    }
                }
            }
        }
        claimed.extend(models.iter().cloned());
        match (qualifies, rule.backend) {
            (true, Some(backend)) => {
                for model in models {
                    out.models
                        .insert(model, (backend.to_string(), rule.cluster.to_string()));
                }
            }
            _ => {
                out.refused_clusters.insert(rule.cluster.to_string());
            }
        }
    }
    out
}

/// The model of an entry that matches on `x-ai-eg-model` exactly and on
/// nothing else.
fn only_exact_model(entry: &Value) -> Option<String> {
    let headers = entry["match"]["headers"].as_array()?;
    if headers.len() != 1 || entry["match"]["prefix"] != "/" {
        return None;
    }
    exact_model(entry)
}

fn exact_model(entry: &Value) -> Option<String> {
    entry["match"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == super::MODEL_HEADER)?["string_match"]["exact"]
        .as_str()
        .map(str::to_string)
}

/// Whether the rate limits of a listener's `entries` read only headers
/// the router role never writes: `x-` headers other than credentials.
pub fn rate_limits_allow(entries: &[Value]) -> bool {
    let mut names = Vec::new();
    for entry in entries {
        collect_header_names(&entry["typed_per_filter_config"], &mut names);
        collect_header_names(&entry["route"]["rate_limits"], &mut names);
    }
    names.iter().all(|n| {
        n.starts_with("x-")
            && *n != "x-api-key"
            && !n.starts_with("x-amz-")
            && *n != HANDOFF_HEADER
            && *n != DIRECT_HEADER
    })
}

fn collect_header_names(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "header_name" {
                    out.extend(v.as_str().map(str::to_ascii_lowercase));
                }
                if key == "headers" {
                    for h in v.as_array().into_iter().flatten() {
                        out.extend(h["name"].as_str().map(str::to_ascii_lowercase));
                    }
                }
                collect_header_names(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_header_names(v, out)),
        _ => {}
    }
}

/// A directly served rule's route entry. It takes only requests the
/// router role wrote for `backend` (they name it in `DIRECT_HEADER`,
/// removed here before they go out) and sends them to `cluster`, named
/// after that backend too ([`cluster_name`]). While Envoy applies a new
/// configuration (clusters first; connections opened before keep the old
/// listener until they drain), a request that a router role handed on to
/// the upstream role, or wrote for another backend, must not reach a
/// cluster that runs no upstream role: it would go out untranslated with
/// the client's own credential, or with another provider's. It gets no
/// route (404), or a cluster that is gone (503), instead. The route sets
/// `:authority` (`host`, the backend's), since the router role must not:
/// the client's names the virtual host.
pub fn mark_route(entry: &mut Value, backend: &str, cluster: &str, host: Option<&str>) {
    if let Some(headers) = entry["match"]["headers"].as_array_mut() {
        headers.push(json!({"name": DIRECT_HEADER, "string_match": {"exact": backend}}));
    }
    match entry["request_headers_to_remove"].as_array_mut() {
        Some(names) => names.push(json!(DIRECT_HEADER)),
        None => entry["request_headers_to_remove"] = json!([DIRECT_HEADER]),
    }
    entry["route"]["cluster"] = json!(cluster);
    if let Some(host) = host {
        entry["route"]["host_rewrite_literal"] = json!(host);
    }
}

/// A directly served rule's cluster: named after its backend, so that a
/// route of an older configuration never reaches it (see [`mark_route`]).
pub fn cluster_name(cluster: &str, backend: &str) -> String {
    format!("{cluster}/direct/{backend}")
}

/// A directly served rule's cluster runs no upstream filter (a cluster's
/// own `http_filters` replace the router's `upstream_http_filters`).
pub fn make_direct(cluster: &mut Value, name: &str) {
    cluster["name"] = json!(name);
    cluster["load_assignment"]["cluster_name"] = json!(name);
    let options = &mut cluster["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    options["http_filters"] = json!([super::envoy::upstream_codec()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(headers: Value) -> Value {
        json!({"match": {"prefix": "/", "headers": headers}, "route": {"cluster": "x"}})
    }

    fn model(m: &str) -> Value {
        entry(json!([{"name": "x-ai-eg-model", "string_match": {"exact": m}}]))
    }

    fn rule<'a>(
        cluster: &'a str,
        backend: Option<&'a str>,
        entries: &'a [Value],
    ) -> RuleOnListener<'a> {
        RuleOnListener {
            cluster,
            backend,
            entries,
        }
    }

    fn served(out: &ListenerDirect) -> Vec<(&str, &str)> {
        out.models
            .iter()
            .map(|(m, (b, _))| (m.as_str(), b.as_str()))
            .collect()
    }

    #[test]
    fn single_backend_exact_model_rules_are_served_directly() {
        let a = [model("a"), model("a2")];
        let b = [model("b")];
        let out = on_listener(
            &[rule("c1", Some("ns/a"), &a), rule("c2", Some("ns/b"), &b)],
            true,
        );
        assert_eq!(served(&out), [("a", "ns/a"), ("a2", "ns/a"), ("b", "ns/b")]);
        assert!(out.refused_clusters.is_empty());
        let none = on_listener(&[rule("c1", Some("ns/a"), &a)], false);
        assert!(none.models.is_empty());
        assert_eq!(none.refused_clusters, BTreeSet::from(["c1".to_string()]));
    }

    #[test]
    fn rules_another_route_may_take_are_not() {
        let regex = [entry(
            json!([{"name": "x-ai-eg-model", "string_match": {"safe_regex": {"regex": ".*"}}}]),
        )];
        let with_user = [entry(json!([
            {"name": "x-ai-eg-model", "string_match": {"exact": "m"}},
            {"name": "x-user", "string_match": {"exact": "vip"}},
        ]))];
        let m = [model("m")];
        let other = [model("other")];
        // A header condition before: requests for m may go to either rule.
        let out = on_listener(
            &[
                rule("vip", Some("b1"), &with_user),
                rule("all", Some("b2"), &m),
                rule("o", Some("b3"), &other),
            ],
            true,
        );
        assert_eq!(served(&out), [("other", "b3")]);
        assert_eq!(
            out.refused_clusters,
            BTreeSet::from(["vip".to_string(), "all".to_string()])
        );
        // A regex (or no model at all) before takes any model.
        let out = on_listener(
            &[rule("re", Some("b1"), &regex), rule("m", Some("b2"), &m)],
            true,
        );
        assert!(out.models.is_empty());
        // Several backends: every attempt is translated by the upstream role.
        let out = on_listener(&[rule("two", None, &m), rule("m2", Some("b"), &m)], true);
        assert!(out.models.is_empty(), "{out:?}");
        // The same model twice: only the first rule is ever used; the
        // second never qualifies.
        let out = on_listener(
            &[
                rule("first", Some("b1"), &m),
                rule("second", Some("b2"), &m),
            ],
            true,
        );
        assert_eq!(served(&out), [("m", "b1")]);
        assert_eq!(out.refused_clusters, BTreeSet::from(["second".to_string()]));
    }

    #[test]
    fn rate_limits_on_headers_the_gateway_writes_refuse_direct() {
        let limited = |name: &str| {
            vec![
                json!({"typed_per_filter_config": {"envoy.filters.http.ratelimit": {"rate_limits": [
                {"actions": [{"request_headers": {"header_name": name, "descriptor_key": name}}]}]}}}),
            ]
        };
        assert!(rate_limits_allow(&limited("x-user-id")));
        assert!(
            rate_limits_allow(&[model("m")]),
            "the model match is not a rate limit"
        );
        for name in [
            "authorization",
            "x-api-key",
            "api-key",
            "content-length",
            "x-amz-date",
            ":path",
        ] {
            assert!(!rate_limits_allow(&limited(name)), "{name}");
        }
        let matched = vec![
            json!({"route": {"rate_limits": [{"actions": [{"header_value_match": {
            "descriptor_value": "v", "headers": [{"name": "Authorization", "string_match": {"exact": "v"}}]}}]}]}}),
        ];
        assert!(!rate_limits_allow(&matched));
    }

    #[test]
    fn a_direct_cluster_and_its_route_take_only_requests_written_for_its_backend() {
        let mut cluster = json!({"name": "c", "load_assignment": {"cluster_name": "c"},
            "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"explicit_http_config": {"http_protocol_options": {}}}}});
        let name = cluster_name("c", "ns/b");
        make_direct(&mut cluster, &name);
        assert_eq!(cluster["name"], "c/direct/ns/b");
        assert_eq!(cluster["load_assignment"]["cluster_name"], "c/direct/ns/b");
        let options = &cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(
            options["http_filters"][0]["name"],
            "envoy.filters.http.upstream_codec"
        );
        assert_eq!(
            options["explicit_http_config"],
            json!({"http_protocol_options": {}})
        );

        let mut entry = model("m");
        mark_route(&mut entry, "ns/b", &name, Some("llm.example"));
        assert_eq!(
            entry["match"]["headers"][1],
            json!({"name": "x-aigw-direct", "string_match": {"exact": "ns/b"}})
        );
        assert_eq!(entry["request_headers_to_remove"], json!(["x-aigw-direct"]));
        assert_eq!(entry["route"]["cluster"], "c/direct/ns/b");
        assert_eq!(entry["route"]["host_rewrite_literal"], "llm.example");
        let mut entry = model("m");
        mark_route(&mut entry, "ns/b", &name, None);
        assert!(entry["route"].get("host_rewrite_literal").is_none());
    }
}
