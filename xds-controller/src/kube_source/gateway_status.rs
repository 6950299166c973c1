//! Status of Gateway API GatewayClass and Gateway, the way Envoy Gateway
//! writes it, on the classes whose `spec.controllerName` is ours and their
//! Gateways only: the status of another controller's class belongs to that
//! controller, even where aigw serves its Gateways (without
//! `--own-gateway-classes-only`).
//!
//! GatewayClass: `Accepted` True (reason Accepted).
//!
//! Gateway `status.conditions`:
//!
//! | case | Accepted | Programmed |
//! |---|---|---|
//! | every listener valid | True, Accepted | True, Programmed |
//! | some listeners not valid (e.g. protocol TCP) | True, ListenersNotValid | True, Programmed |
//! | no listener valid | False, ListenersNotValid | False, Invalid |
//! | the Gateway itself has errors | False, Invalid | False, Invalid |
//!
//! (Programmed is True when the translation produced an Envoy listener of
//! the Gateway.) `status.listeners[]`: one entry per spec listener, with
//! `supportedKinds`, `attachedRoutes` (the AIGatewayRoutes whose parentRefs
//! reach it; a parentRef's sectionName narrows it to that listener) and
//! Accepted, Programmed and ResolvedRefs; a listener whose protocol aigw
//! does not serve gets Accepted False (UnsupportedProtocol), Programmed
//! False (Invalid), no supportedKinds and no routes. `status.addresses` is
//! not written (aigw does not run the Envoy Service).

use super::status::{join, Decided};
use crate::error::{Diagnostic, Severity};
use crate::resources::{AIGatewayRouteSpec, GatewaySpec, Named, Resources};
use serde_json::{json, Value};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

fn condition(type_: &'static str, status: bool, reason: &'static str, message: &str) -> Decided {
    Decided {
        type_,
        status,
        reason,
        message: message.to_string(),
    }
}

/// `spec.controllerName` of a GatewayClass object.
fn controller_of(class: &Value) -> Option<&str> {
    class.get("spec")?.get("controllerName")?.as_str()
}

/// The conditions of a GatewayClass object, or `None` when it is not ours.
pub fn decide_class(class: &Value, controller: &str) -> Option<Vec<Decided>> {
    (controller_of(class) == Some(controller)).then(|| {
        vec![condition(
            "Accepted",
            true,
            "Accepted",
            "Valid GatewayClass",
        )]
    })
}

/// Whether the Gateway object is of a GatewayClass that is ours.
pub fn is_ours(gateway: &Value, resources: &Resources, controller: &str) -> bool {
    let class = gateway
        .get("spec")
        .and_then(|s| s.get("gatewayClassName"))
        .and_then(Value::as_str);
    // A loaded GatewayClass's `spec` is the object's spec.
    resources
        .gateway_classes
        .iter()
        .any(|c| Some(c.name.as_str()) == class && c.spec["controllerName"] == controller)
}

/// One listener's status, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// Whether routes can attach (the listener speaks HTTP).
    pub routable: bool,
    pub attached_routes: usize,
    pub conditions: Vec<Decided>,
}

/// A Gateway's status, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    pub conditions: Vec<Decided>,
    pub listeners: Vec<ListenerStatus>,
}

/// How many routes reach `listener` of `gateway`, as the translation
/// attaches them (parentRefs, or every Gateway of the route's namespace
/// without any), narrowed by a parentRef's sectionName.
fn attached_routes(
    gateway: &Named<GatewaySpec>,
    listener: &str,
    routes: &[Named<AIGatewayRouteSpec>],
) -> usize {
    routes
        .iter()
        .filter(|route| crate::translate::serves_on_listener(route, gateway, listener))
        .count()
}

/// The errors the translation reported on one listener (field
/// `spec.listeners[NAME]...`).
fn listener_errors<'a>(diagnostics: &[&'a Diagnostic], listener: &str) -> Vec<&'a Diagnostic> {
    let prefix = format!("spec.listeners[{listener}]");
    diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .filter(|d| d.field.as_deref().is_some_and(|f| f.starts_with(&prefix)))
        .collect()
}

fn decide_listener(
    gateway: &Named<GatewaySpec>,
    listener: &crate::resources::GatewayListener,
    routes: &[Named<AIGatewayRouteSpec>],
    diagnostics: &[&Diagnostic],
    programmed: &dyn Fn(&str) -> bool,
) -> ListenerStatus {
    let errors = listener_errors(diagnostics, &listener.name);
    let resolved = condition(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "Listener references have been resolved",
    );
    if !errors.is_empty() {
        let unsupported = errors
            .iter()
            .any(|d| d.field.as_deref().is_some_and(|f| f.ends_with(".protocol")));
        let reason = if unsupported {
            "UnsupportedProtocol"
        } else {
            "Invalid"
        };
        let message = join(&errors);
        return ListenerStatus {
            name: listener.name.clone(),
            routable: false,
            attached_routes: 0,
            conditions: vec![
                condition("Accepted", false, reason, &message),
                condition("Programmed", false, "Invalid", &message),
                resolved,
            ],
        };
    }
    let envoy_name = format!("{}/{}/{}", gateway.namespace, gateway.name, listener.name);
    let programmed = if programmed(&envoy_name) {
        condition(
            "Programmed",
            true,
            "Programmed",
            "Sending translated listener configuration to the data plane",
        )
    } else {
        condition(
            "Programmed",
            false,
            "Pending",
            "The configuration that has this listener is not served",
        )
    };
    ListenerStatus {
        name: listener.name.clone(),
        routable: true,
        attached_routes: attached_routes(gateway, &listener.name, routes),
        conditions: vec![
            condition(
                "Accepted",
                true,
                "Accepted",
                "Listener has been successfully translated",
            ),
            programmed,
            resolved,
        ],
    }
}

/// The status of a Gateway of ours. `gateway` is the loaded Gateway (`None`
/// when it failed to load), `diagnostics` those naming it, and
/// `programmed(name)` whether the translation produced the Envoy listener
/// `namespace/gateway/listener`.
pub fn decide_gateway(
    gateway: Option<&Named<GatewaySpec>>,
    resources: &Resources,
    diagnostics: &[&Diagnostic],
    programmed: &dyn Fn(&str) -> bool,
) -> GatewayStatus {
    let invalid = |message: &str| GatewayStatus {
        conditions: vec![
            condition("Accepted", false, "Invalid", message),
            condition("Programmed", false, "Invalid", message),
        ],
        listeners: Vec::new(),
    };
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let Some(gateway) = gateway else {
        return invalid(&join(&errors));
    };
    let (of_listeners, of_gateway): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        errors.into_iter().partition(|d| {
            d.field
                .as_deref()
                .is_some_and(|f| f.starts_with("spec.listeners["))
        });
    if !of_gateway.is_empty() {
        return invalid(&join(&of_gateway));
    }
    let listeners: Vec<ListenerStatus> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| {
            decide_listener(
                gateway,
                l,
                &resources.ai_gateway_routes,
                &of_listeners,
                programmed,
            )
        })
        .collect();
    let valid = listeners.iter().filter(|l| l.routable).count();
    let accepted = if valid == listeners.len() {
        condition(
            "Accepted",
            true,
            "Accepted",
            "The Gateway has been scheduled by aigw",
        )
    } else {
        condition(
            "Accepted",
            valid > 0,
            "ListenersNotValid",
            &join(&of_listeners),
        )
    };
    let served = listeners.iter().any(|l| {
        l.conditions
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status)
    });
    let programmed = if served {
        condition(
            "Programmed",
            true,
            "Programmed",
            "Sending translated listener configuration to the data plane",
        )
    } else if valid == 0 {
        condition(
            "Programmed",
            false,
            "Invalid",
            "The Gateway has no valid listener",
        )
    } else {
        condition(
            "Programmed",
            false,
            "Pending",
            "The configuration that has the Gateway's listeners is not served",
        )
    };
    GatewayStatus {
        conditions: vec![accepted, programmed],
        listeners,
    }
}

fn supported_kinds(routable: bool) -> Value {
    if routable {
        json!([
            {"group": GATEWAY_GROUP, "kind": "HTTPRoute"},
            {"group": super::AI_GATEWAY_GROUP, "kind": "AIGatewayRoute"},
        ])
    } else {
        json!([])
    }
}

/// The `status.listeners` to write, keeping each condition's transition
/// time where its status did not change.
pub fn listeners(
    decided: &[ListenerStatus],
    generation: Option<i64>,
    previous: &[Value],
    now: &str,
) -> Vec<Value> {
    decided
        .iter()
        .map(|l| {
            let before = previous
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(l.name.as_str()))
                .and_then(|p| p.get("conditions"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            json!({
                "name": l.name,
                "supportedKinds": supported_kinds(l.routable),
                "attachedRoutes": l.attached_routes,
                "conditions": super::status::conditions(&l.conditions, generation, before, now),
            })
        })
        .collect()
}

/// `status.listeners` without timestamps: what decides whether a write is
/// needed.
pub fn essence(listeners: &[Value]) -> Vec<Value> {
    listeners
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(conditions) = l.get_mut("conditions").and_then(Value::as_array_mut) {
                *conditions = super::status::essence(conditions);
            }
            l
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_source::status::conditions;
    use std::collections::BTreeMap;

    const OURS: &str = super::super::policy_status::DEFAULT_CONTROLLER_NAME;

    fn class(name: &str, controller: &str) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {name}}}\nspec: {{controllerName: {controller}}}\n")
    }

    fn gateway(name: &str, class: &str, listeners: &str) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec: {{gatewayClassName: {class}, listeners: [{listeners}]}}\n")
    }

    fn route(name: &str, parent_refs: &str) -> String {
        format!("apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{parent_refs}]\n  rules: [{{matches: [{{headers: [{{name: x-ai-eg-model, value: {name}}}]}}], backendRefs: [{{name: b}}]}}]\n")
    }

    type Row = (String, bool, &'static str);

    /// Loads every document as the Kubernetes source does, translates, and
    /// decides each Gateway of ours: its conditions, then per listener its
    /// attachedRoutes and conditions.
    fn statuses(docs: &[String]) -> BTreeMap<String, Vec<Row>> {
        let crate::kube_source::LoadedObjects {
            resources,
            diagnostics,
            translation,
            objects,
        } = crate::kube_source::load_objects(docs, None);
        let gateways = objects.into_iter().filter(|(kind, ..)| kind == "Gateway");
        let programmed = |name: &str| translation.listeners.iter().any(|l| l["name"] == name);
        gateways
            .filter(|(.., value)| is_ours(value, &resources, OURS))
            .map(|(_, name, file, _)| {
                let mine: Vec<&Diagnostic> = diagnostics
                    .iter()
                    .filter(|d| d.source.as_ref().is_some_and(|s| s.file == file))
                    .collect();
                let loaded = resources.gateways.iter().find(|g| g.name == name);
                let decided = decide_gateway(loaded, &resources, &mine, &programmed);
                let mut rows: Vec<Row> = decided
                    .conditions
                    .iter()
                    .map(|c| (c.type_.to_string(), c.status, c.reason))
                    .collect();
                for l in &decided.listeners {
                    rows.push((
                        format!("{} routes={}", l.name, l.attached_routes),
                        l.routable,
                        "",
                    ));
                    rows.extend(
                        l.conditions
                            .iter()
                            .map(|c| (format!("{} {}", l.name, c.type_), c.status, c.reason)),
                    );
                }
                (name, rows)
            })
            .collect()
    }

    #[test]
    fn gateways_of_our_classes_get_gateway_api_status() {
        let http =
            |name: &str, port: u16| format!("{{name: {name}, port: {port}, protocol: HTTP}}");
        let tcp = |name: &str, port: u16| format!("{{name: {name}, port: {port}, protocol: TCP}}");
        let docs = vec![
            class("aigw", OURS),
            class("other", "example.com/other"),
            gateway("gw", "aigw", &format!("{}, {}, {}", http("http", 80), http("admin", 8080), tcp("tcp", 9000))),
            gateway("tcp-only", "aigw", &tcp("tcp", 9001)),
            gateway("theirs", "other", &http("http", 81)),
            gateway("unclassed", "nope", &http("http", 82)),
            gateway("broken", "aigw", "{name: http, port: eighty, protocol: HTTP}"),
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: b, namespace: default}\nspec: {endpoints: [{ip: {address: 127.0.0.1, port: 8080}}]}\n".to_string(),
            "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {name: b, namespace: default}\nspec: {schema: {name: OpenAI}, backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}}\n".to_string(),
            route("whole", "{name: gw}"),
            route("admin-only", "{name: gw, sectionName: admin}"),
            route("elsewhere", "{name: theirs}"),
        ];
        let got = statuses(&docs);
        let row =
            |what: &str, status: bool, reason: &'static str| (what.to_string(), status, reason);
        let table = [
            (
                "gw",
                vec![
                    row("Accepted", true, "ListenersNotValid"),
                    row("Programmed", true, "Programmed"),
                    row("http routes=1", true, ""),
                    row("http Accepted", true, "Accepted"),
                    row("http Programmed", true, "Programmed"),
                    row("http ResolvedRefs", true, "ResolvedRefs"),
                    row("admin routes=2", true, ""),
                    row("admin Accepted", true, "Accepted"),
                    row("admin Programmed", true, "Programmed"),
                    row("admin ResolvedRefs", true, "ResolvedRefs"),
                    row("tcp routes=0", false, ""),
                    row("tcp Accepted", false, "UnsupportedProtocol"),
                    row("tcp Programmed", false, "Invalid"),
                    row("tcp ResolvedRefs", true, "ResolvedRefs"),
                ],
            ),
            (
                "tcp-only",
                vec![
                    row("Accepted", false, "ListenersNotValid"),
                    row("Programmed", false, "Invalid"),
                    row("tcp routes=0", false, ""),
                    row("tcp Accepted", false, "UnsupportedProtocol"),
                    row("tcp Programmed", false, "Invalid"),
                    row("tcp ResolvedRefs", true, "ResolvedRefs"),
                ],
            ),
            (
                "broken",
                vec![
                    row("Accepted", false, "Invalid"),
                    row("Programmed", false, "Invalid"),
                ],
            ),
        ];
        let names: Vec<&String> = got.keys().collect();
        assert_eq!(
            names,
            ["broken", "gw", "tcp-only"],
            "only our classes' Gateways"
        );
        for (name, expected) in table {
            assert_eq!(got[name], expected, "{name}");
        }
    }

    #[test]
    fn only_our_gateway_classes_are_accepted() {
        let value = |controller: &str| json!({"spec": {"controllerName": controller}});
        let ours = decide_class(&value(OURS), OURS).unwrap();
        assert_eq!(
            ours.iter()
                .map(|c| (c.type_, c.status, c.reason))
                .collect::<Vec<_>>(),
            [("Accepted", true, "Accepted")]
        );
        assert_eq!(decide_class(&value("example.com/other"), OURS), None);
        assert_eq!(decide_class(&json!({}), OURS), None);
    }

    #[test]
    fn listener_status_keeps_transition_times() {
        let ok = |programmed: bool| ListenerStatus {
            name: "http".into(),
            routable: true,
            attached_routes: 1,
            conditions: vec![
                condition("Accepted", true, "Accepted", "ok"),
                condition("Programmed", programmed, "Programmed", "ok"),
            ],
        };
        let first = listeners(&[ok(true)], Some(2), &[], "2026-01-01T00:00:00Z");
        assert_eq!(first[0]["name"], "http");
        assert_eq!(first[0]["attachedRoutes"], 1);
        assert_eq!(first[0]["supportedKinds"][0]["kind"], "HTTPRoute");
        assert_eq!(first[0]["conditions"][0]["observedGeneration"], 2);
        let again = listeners(&[ok(true)], Some(2), &first, "2026-02-02T00:00:00Z");
        assert_eq!(again, first, "nothing changed");
        assert_eq!(essence(&again), essence(&first));
        let changed = listeners(&[ok(false)], Some(2), &again, "2026-03-03T00:00:00Z");
        let times: Vec<&Value> = changed[0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["lastTransitionTime"])
            .collect();
        assert_eq!(times, ["2026-01-01T00:00:00Z", "2026-03-03T00:00:00Z"]);
        assert_ne!(essence(&changed), essence(&again));
        // The Gateway's own conditions use the same rule.
        let gateway = conditions(
            &[condition("Accepted", true, "Accepted", "ok")],
            None,
            &[],
            "t",
        );
        assert!(gateway[0].get("observedGeneration").is_none());
    }
}
