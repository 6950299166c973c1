//! Status of Envoy Gateway's BackendTrafficPolicy and SecurityPolicy, the
//! way Envoy Gateway writes it (Gateway API PolicyStatus): one
//! `status.ancestors[]` entry per Gateway the policy reaches (the Gateway it
//! targets, or the parent Gateways of the route it targets), each with our
//! `controllerName` and an `Accepted` condition:
//!
//! | case | Accepted | reason |
//! |---|---|---|
//! | applied | True | Accepted ("Policy has been accepted.") |
//! | another policy of the kind wins on the same target | False | Conflicted |
//! | the policy has errors | False | Invalid |
//! | the target does not exist | False | TargetNotFound |
//!
//! and, on a Gateway ancestor whose routes have their own policy,
//! `Overridden` True (reason Overridden) naming those routes.
//!
//! One deliberate difference: Envoy Gateway writes no ancestor at all for a
//! target that does not exist (the policy shows no status); aigw writes an
//! entry whose ancestorRef is the missing target itself with reason
//! TargetNotFound (a Gateway API reason), so `kubectl get -o yaml` says why
//! the policy does nothing.

use super::status::{join, Decided};
use crate::error::{AttachmentReason, AttachmentTarget, Diagnostic, Severity};
use crate::resources::{AIGatewayRouteSpec, Named, Resources, TargetRef};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The controllerName Envoy Gateway uses (aigw serves the same
/// GatewayClasses); `aigw controller --controller-name` changes it.
pub const DEFAULT_CONTROLLER_NAME: &str = "gateway.envoyproxy.io/gatewayclass-controller";

/// Gateway API allows at most 16 ancestors per policy.
pub const MAX_ANCESTORS: usize = 16;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `status.ancestors[].ancestorRef`
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AncestorRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl AncestorRef {
    fn gateway(namespace: &str, name: &str) -> AncestorRef {
        AncestorRef {
            group: GATEWAY_GROUP.into(),
            kind: "Gateway".into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "namespace": self.namespace, "name": self.name})
    }

    /// Whether an ancestorRef as written in a status is this one.
    pub fn matches(&self, value: &Value) -> bool {
        let text = |field: &str| value.get(field).and_then(Value::as_str);
        text("name") == Some(&self.name)
            && text("kind").unwrap_or("Gateway") == self.kind
            && text("group").unwrap_or(GATEWAY_GROUP) == self.group
            && text("namespace").is_none_or(|ns| ns == self.namespace)
    }
}

/// One ancestor's conditions, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorStatus {
    pub ancestor: AncestorRef,
    pub conditions: Vec<Decided>,
}

/// The targets a policy object names (`spec.targetRefs` and the deprecated
/// `spec.targetRef`), read from the raw object so that a policy that failed
/// to load still gets a status.
pub fn targets_of(object: &Value) -> Vec<TargetRef> {
    let spec = object.get("spec");
    let refs = spec
        .and_then(|s| s.get("targetRefs"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(spec.and_then(|s| s.get("targetRef")));
    refs.filter_map(|r| serde_json::from_value(r.clone()).ok())
        .collect()
}

/// The Gateways a route attaches to, as the translation attaches it:
/// its parentRefs (or v1alpha1 targetRefs); with neither, every Gateway of
/// its namespace.
fn route_gateways(route: &Named<AIGatewayRouteSpec>, resources: &Resources) -> Vec<AncestorRef> {
    let refs = if route.spec.parent_refs.is_empty() {
        &route.spec.target_refs
    } else {
        &route.spec.parent_refs
    };
    if refs.is_empty() {
        return resources
            .gateways
            .iter()
            .filter(|g| g.namespace == route.namespace)
            .map(|g| AncestorRef::gateway(&g.namespace, &g.name))
            .collect();
    }
    refs.iter()
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "Gateway"))
        .map(|r| AncestorRef::gateway(r.namespace.as_deref().unwrap_or(&route.namespace), &r.name))
        .collect()
}

/// `BackendTrafficPolicies`, `SecurityPolicies`
fn plural(kind: &str) -> String {
    match kind.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{kind}s"),
    }
}

fn accepted(status: bool, reason: &'static str, message: String) -> Decided {
    Decided {
        type_: "Accepted",
        status,
        reason,
        message,
    }
}

/// The ancestors and conditions of one policy of `kind` in `namespace`
/// with these targets, given what the translation said about it.
pub fn decide(
    kind: &str,
    namespace: &str,
    targets: &[TargetRef],
    resources: &Resources,
    diagnostics: &[&Diagnostic],
) -> Vec<AncestorStatus> {
    let plain = |severity| -> Vec<&Diagnostic> {
        diagnostics
            .iter()
            .copied()
            .filter(|d| d.severity == severity && d.attachment.is_none())
            .collect()
    };
    let (errors, warnings) = (plain(Severity::Error), plain(Severity::Warning));
    let conflict = |target: &AttachmentTarget| {
        diagnostics.iter().find(|d| {
            d.attachment
                .as_ref()
                .is_some_and(|a| a.reason == AttachmentReason::Conflicted && a.target == *target)
        })
    };
    let overridden: Vec<&str> = diagnostics
        .iter()
        .filter_map(|d| match &d.attachment {
            Some(a) if a.reason == AttachmentReason::Overridden => match &a.target {
                AttachmentTarget::Route(key) => Some(key.as_str()),
                AttachmentTarget::Gateway(_) => None,
            },
            _ => None,
        })
        .collect();
    let applied = |target: &AttachmentTarget| -> Decided {
        if let Some(d) = conflict(target) {
            let message = d.message.strip_prefix("Conflicted: ").unwrap_or(&d.message);
            accepted(false, "Conflicted", message.to_string())
        } else if !errors.is_empty() {
            accepted(false, "Invalid", join(&errors))
        } else if warnings.is_empty() {
            accepted(true, "Accepted", "Policy has been accepted.".into())
        } else {
            accepted(
                true,
                "Accepted",
                format!(
                    "Policy has been accepted, with warnings: {}",
                    join(&warnings)
                ),
            )
        }
    };

    let mut out: BTreeMap<AncestorRef, Vec<Decided>> = BTreeMap::new();
    // Two targets can reach one Gateway: keep the worse verdict there.
    let mut put = |ancestor: AncestorRef, conditions: Vec<Decided>| {
        let worse = |c: &Vec<Decided>| c.first().is_some_and(|a| !a.status);
        match out.get(&ancestor) {
            Some(existing) if worse(existing) || !worse(&conditions) => {}
            _ => {
                out.insert(ancestor, conditions);
            }
        }
    };
    for target in targets {
        let key = format!("{namespace}/{}", target.name);
        match target.kind.as_deref() {
            None | Some("Gateway") => {
                let ancestor = AncestorRef::gateway(namespace, &target.name);
                let exists = resources
                    .gateways
                    .iter()
                    .any(|g| g.namespace == namespace && g.name == target.name);
                if !exists {
                    put(
                        ancestor,
                        vec![accepted(
                            false,
                            "TargetNotFound",
                            format!("Gateway {key} does not exist"),
                        )],
                    );
                    continue;
                }
                let mut conditions = vec![applied(&AttachmentTarget::Gateway(key.clone()))];
                let routes: Vec<&str> = overridden
                    .iter()
                    .copied()
                    .filter(|route| {
                        resources.ai_gateway_routes.iter().any(|r| {
                            r.key() == *route && route_gateways(r, resources).contains(&ancestor)
                        })
                    })
                    .collect();
                if !routes.is_empty() {
                    conditions.push(Decided {
                        type_: "Overridden",
                        status: true,
                        reason: "Overridden",
                        message: format!(
                            "This policy is being overridden by other {} for these routes: [{}]",
                            plural(kind),
                            routes.join(", ")
                        ),
                    });
                }
                put(ancestor, conditions);
            }
            Some(route_kind @ ("HTTPRoute" | "AIGatewayRoute")) => {
                let route = resources
                    .ai_gateway_routes
                    .iter()
                    .find(|r| r.namespace == namespace && r.name == target.name);
                let Some(route) = route else {
                    put(
                        AncestorRef {
                            group: target.group.clone().unwrap_or_else(|| {
                                if route_kind == "HTTPRoute" {
                                    GATEWAY_GROUP.into()
                                } else {
                                    super::AI_GATEWAY_GROUP.into()
                                }
                            }),
                            kind: route_kind.into(),
                            namespace: namespace.into(),
                            name: target.name.clone(),
                        },
                        vec![accepted(
                            false,
                            "TargetNotFound",
                            format!("{route_kind} {key} does not exist (aigw reads AIGatewayRoutes; their HTTPRoutes have the same name)"),
                        )],
                    );
                    continue;
                };
                let decided = applied(&AttachmentTarget::Route(key.clone()));
                for ancestor in route_gateways(route, resources) {
                    put(ancestor, vec![decided.clone()]);
                }
            }
            Some(other) => put(
                AncestorRef {
                    group: target.group.clone().unwrap_or_default(),
                    kind: other.into(),
                    namespace: namespace.into(),
                    name: target.name.clone(),
                },
                vec![accepted(
                    false,
                    "Invalid",
                    format!("aigw applies {kind} to Gateway, HTTPRoute and AIGatewayRoute targets; a {other} target is ignored"),
                )],
            ),
        }
    }
    out.into_iter()
        .take(MAX_ANCESTORS)
        .map(|(ancestor, conditions)| AncestorStatus {
            ancestor,
            conditions,
        })
        .collect()
}

/// The full `status.ancestors` to write: entries of other controllers kept
/// as they are, ours replaced by `decided` (transition times kept where a
/// condition's status did not change).
pub fn ancestors(
    decided: &[AncestorStatus],
    controller: &str,
    generation: Option<i64>,
    previous: &[Value],
    now: &str,
) -> Vec<Value> {
    let ours =
        |entry: &&Value| entry.get("controllerName").and_then(Value::as_str) == Some(controller);
    let mut out: Vec<Value> = previous.iter().filter(|e| !ours(e)).cloned().collect();
    for status in decided {
        let before = previous
            .iter()
            .filter(ours)
            .find(|e| {
                e.get("ancestorRef")
                    .is_some_and(|r| status.ancestor.matches(r))
            })
            .and_then(|e| e.get("conditions"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        out.push(json!({
            "ancestorRef": status.ancestor.to_json(),
            "controllerName": controller,
            "conditions": super::status::conditions(&status.conditions, generation, before, now),
        }));
    }
    out.truncate(MAX_ANCESTORS);
    out
}

/// Our entries of a `status.ancestors` without timestamps: what decides
/// whether a write is needed.
pub fn essence(ancestors: &[Value], controller: &str) -> Vec<Value> {
    ancestors
        .iter()
        .filter(|e| e.get("controllerName").and_then(Value::as_str) == Some(controller))
        .map(|e| {
            let mut e = e.clone();
            if let Some(conditions) = e.get_mut("conditions").and_then(Value::as_array_mut) {
                for c in conditions {
                    if let Some(map) = c.as_object_mut() {
                        map.remove("lastTransitionTime");
                    }
                }
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str =
        "rateLimit: {type: Global, global: {rules: [{limit: {requests: 5, unit: Minute}}]}}";

    fn btp(name: &str, target: &str, rest: &str) -> String {
        format!("apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{target}]\n  {rest}\n")
    }

    fn sp(name: &str) -> String {
        format!("apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{credentialRefs: [{{name: keys}}], extractFrom: [{{headers: [x-api-key]}}]}}\n")
    }

    /// Loads every document as the Kubernetes source does (one "file" per
    /// object), translates, and decides each policy's ancestors.
    fn statuses(docs: &[String]) -> BTreeMap<String, Vec<(String, bool, &'static str, String)>> {
        let crate::kube_source::LoadedObjects {
            resources,
            diagnostics,
            objects,
            ..
        } = crate::kube_source::load_objects(docs, Some("default"));
        let policies = objects
            .into_iter()
            .filter(|(kind, ..)| kind.ends_with("Policy"));
        policies
            .map(|(kind, name, file, value)| {
                let mine: Vec<&Diagnostic> = diagnostics
                    .iter()
                    .filter(|d| d.source.as_ref().is_some_and(|s| s.file == file))
                    .collect();
                let decided = decide(&kind, "default", &targets_of(&value), &resources, &mine);
                let flat = decided
                    .into_iter()
                    .flat_map(|a| {
                        let ancestor = format!(
                            "{} {}/{}",
                            a.ancestor.kind, a.ancestor.namespace, a.ancestor.name
                        );
                        a.conditions.into_iter().map(move |c| {
                            (
                                format!("{ancestor} {}", c.type_),
                                c.status,
                                c.reason,
                                c.message,
                            )
                        })
                    })
                    .collect();
                (name, flat)
            })
            .collect()
    }

    #[test]
    fn policies_get_envoy_gateway_ancestor_status() {
        let gw = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";
        let route = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}";
        let docs = vec![
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec: {gatewayClassName: aigw, listeners: [{name: http, port: 80, protocol: HTTP}]}\n".to_string(),
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: default}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 8080}}]}\n".to_string(),
            "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {name: b, namespace: default}\nspec: {schema: {name: OpenAI}, backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}}\n".to_string(),
            "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{matches: [{headers: [{name: x-ai-eg-model, value: m}]}], backendRefs: [{name: b}]}]\n".to_string(),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: default}\nstringData: {alice: key-alice-123}\n".to_string(),
            btp("a-gw", gw, RULE),
            btp("b-gw", gw, RULE),
            btp("r-route", route, RULE),
            btp("s-route", route, RULE),
            btp("missing-gw", "{kind: Gateway, name: nope}", RULE),
            btp("missing-route", "{kind: HTTPRoute, name: nope}", RULE),
            btp("bad", gw, "retry: {numRetries: many}"),
            btp("service", "{kind: Service, name: svc}", "timeout: {http: {requestTimeout: 5s}}"),
            btp("no-targets", "", "timeout: {http: {requestTimeout: 5s}}"),
            sp("sp-a"),
            sp("sp-b"),
        ];
        let got = statuses(&docs);
        let brief = |name: &str| -> Vec<(String, bool, &'static str)> {
            got[name]
                .iter()
                .map(|(what, status, reason, _)| (what.clone(), *status, *reason))
                .collect()
        };
        let row =
            |what: &str, status: bool, reason: &'static str| (what.to_string(), status, reason);
        let table = [
            (
                "a-gw",
                vec![
                    row("Gateway default/gw Accepted", true, "Accepted"),
                    row("Gateway default/gw Overridden", true, "Overridden"),
                ],
            ),
            (
                "b-gw",
                vec![row("Gateway default/gw Accepted", false, "Conflicted")],
            ),
            (
                "r-route",
                vec![row("Gateway default/gw Accepted", true, "Accepted")],
            ),
            (
                "s-route",
                vec![row("Gateway default/gw Accepted", false, "Conflicted")],
            ),
            (
                "missing-gw",
                vec![row(
                    "Gateway default/nope Accepted",
                    false,
                    "TargetNotFound",
                )],
            ),
            (
                "missing-route",
                vec![row(
                    "HTTPRoute default/nope Accepted",
                    false,
                    "TargetNotFound",
                )],
            ),
            (
                "bad",
                vec![row("Gateway default/gw Accepted", false, "Invalid")],
            ),
            (
                "service",
                vec![row("Service default/svc Accepted", false, "Invalid")],
            ),
            ("no-targets", vec![]),
            (
                "sp-a",
                vec![row("Gateway default/gw Accepted", true, "Accepted")],
            ),
            (
                "sp-b",
                vec![row("Gateway default/gw Accepted", false, "Conflicted")],
            ),
        ];
        for (name, expected) in table {
            assert_eq!(brief(name), expected, "{name}: {:#?}", got[name]);
        }
        let message = |name: &str, i: usize| got[name][i].3.clone();
        assert_eq!(message("a-gw", 0), "Policy has been accepted.");
        assert_eq!(
            message("a-gw", 1),
            "This policy is being overridden by other BackendTrafficPolicies for these routes: [default/r]"
        );
        assert!(
            message("b-gw", 0).starts_with("BackendTrafficPolicy default/a-gw also sets rateLimit on Gateway default/gw and wins"),
            "{}",
            message("b-gw", 0)
        );
        assert!(message("s-route", 0).contains("on route default/r"));
        assert_eq!(
            message("missing-gw", 0),
            "Gateway default/nope does not exist"
        );
        assert!(
            message("bad", 0).contains("numRetries"),
            "{}",
            message("bad", 0)
        );
        assert!(message("sp-b", 0).contains("Gateway default/gw already has a SecurityPolicy"));
    }

    #[test]
    fn keeps_other_controllers_entries_and_transition_times() {
        let decided = vec![AncestorStatus {
            ancestor: AncestorRef::gateway("default", "gw"),
            conditions: vec![accepted(
                true,
                "Accepted",
                "Policy has been accepted.".into(),
            )],
        }];
        let theirs = json!({"ancestorRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "gw"},
            "controllerName": "example.com/other", "conditions": []});
        let first = ancestors(
            &decided,
            "aigw",
            Some(2),
            std::slice::from_ref(&theirs),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], theirs);
        assert_eq!(first[1]["controllerName"], "aigw");
        assert_eq!(first[1]["ancestorRef"]["namespace"], "default");
        assert_eq!(first[1]["conditions"][0]["observedGeneration"], 2);
        // Unchanged: same essence, transition time kept.
        let again = ancestors(&decided, "aigw", Some(2), &first, "2026-02-02T00:00:00Z");
        assert_eq!(
            again[1]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(essence(&again, "aigw"), essence(&first, "aigw"));
        // Conflicted now: a new transition time, a different essence.
        let conflicted = vec![AncestorStatus {
            conditions: vec![accepted(false, "Conflicted", "x".into())],
            ..decided[0].clone()
        }];
        let changed = ancestors(&conflicted, "aigw", Some(3), &again, "2026-03-03T00:00:00Z");
        assert_eq!(
            changed[1]["conditions"][0]["lastTransitionTime"],
            "2026-03-03T00:00:00Z"
        );
        assert_ne!(essence(&changed, "aigw"), essence(&again, "aigw"));
        // Our entries for ancestors the policy no longer reaches go away.
        assert_eq!(ancestors(&[], "aigw", Some(4), &changed, "t"), vec![theirs]);
    }
}
