//! Status write-back: `status.conditions` (Accepted, ResolvedRefs) of the
//! aigateway.envoyproxy.io objects, `status.ancestors` of Envoy Gateway's
//! BackendTrafficPolicy and SecurityPolicy (policy_status.rs), and the
//! status of our GatewayClasses and their Gateways (gateway_status.rs),
//! from the diagnostics that name them.

use super::{
    gateway_status, policy_status, source_name, Kind, Object, ObjectKey, Published, StatusShape,
    Store,
};
use crate::error::{Diagnostic, Severity};
use crate::resources::Resources;
use futures::stream::{self, StreamExt};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Status patches in flight at once.
const CONCURRENT_PATCHES: usize = 16;

/// Longest condition message written (the API allows 32768).
const MAX_MESSAGE: usize = 4096;

/// One condition as decided, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// A reference that does not resolve, rather than a resource that is wrong.
fn is_reference_problem(d: &Diagnostic) -> bool {
    let segments: Vec<&str> = d
        .field
        .as_deref()
        .unwrap_or("")
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .collect();
    let names_a_ref = |s: &str| s.ends_with("Ref") || s.ends_with("Refs");
    let field_is_ref = match segments.as_slice() {
        [.., parent, "name" | "namespace"] => names_a_ref(parent),
        [.., last] => names_a_ref(last),
        [] => false,
    };
    field_is_ref
        || d.message.contains("does not exist")
        || d.message.contains("not found")
        || d.message.contains("no usable backend")
}

fn describe(d: &Diagnostic) -> String {
    match &d.field {
        Some(field) => format!("{field}: {}", d.message),
        None => d.message.clone(),
    }
}

pub(crate) fn join(items: &[&Diagnostic]) -> String {
    let mut text = items
        .iter()
        .map(|d| describe(d))
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Accepted and ResolvedRefs for an object with these diagnostics.
pub fn decide(diagnostics: &[&Diagnostic]) -> [Decided; 2] {
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let (refs, other): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        errors.into_iter().partition(|d| is_reference_problem(d));
    let warnings: Vec<&Diagnostic> = diagnostics
        .iter()
        .copied()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    let accepted = if other.is_empty() {
        Decided {
            type_: "Accepted",
            status: true,
            reason: "Accepted",
            message: if warnings.is_empty() {
                "accepted".into()
            } else {
                format!("accepted with warnings: {}", join(&warnings))
            },
        }
    } else {
        Decided {
            type_: "Accepted",
            status: false,
            reason: "Invalid",
            message: join(&other),
        }
    };
    let resolved = if refs.is_empty() {
        Decided {
            type_: "ResolvedRefs",
            status: true,
            reason: "ResolvedRefs",
            message: "all references resolved".into(),
        }
    } else {
        Decided {
            type_: "ResolvedRefs",
            status: false,
            reason: "RefNotFound",
            message: join(&refs),
        }
    };
    [accepted, resolved]
}

fn status_word(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// The conditions to write, keeping the transition time of a condition
/// whose status did not change.
pub fn conditions(
    decided: &[Decided],
    generation: Option<i64>,
    previous: &[Value],
    now: &str,
) -> Vec<Value> {
    decided
        .iter()
        .map(|d| {
            let old = previous
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(d.type_));
            let since = old
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(status_word(d.status)))
                .and_then(|c| c.get("lastTransitionTime").and_then(Value::as_str))
                .unwrap_or(now);
            let mut c = json!({
                "type": d.type_,
                "status": status_word(d.status),
                "reason": d.reason,
                "message": d.message,
                "lastTransitionTime": since,
            });
            if let Some(g) = generation {
                c["observedGeneration"] = json!(g);
            }
            c
        })
        .collect()
}

/// What identifies a condition's content (not its timestamp).
pub(crate) fn essence(conditions: &[Value]) -> Vec<Value> {
    conditions
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(map) = c.as_object_mut() {
                map.remove("lastTransitionTime");
            }
            c
        })
        .collect()
}

/// Patches status when it differs from what the object has and from what
/// was last sent.
pub struct StatusWriter {
    client: Client,
    sent: BTreeMap<(String, ObjectKey), Vec<Value>>,
    /// Only the elected leader writes.
    leading: bool,
    /// `controllerName` of the policy ancestors we write, and of the
    /// GatewayClasses whose status we write.
    controller_name: String,
}

/// What status is decided from, besides each object and its diagnostics.
pub struct Inputs<'a> {
    pub resources: &'a Resources,
    /// Names of the Envoy listeners the translation produced.
    pub listeners: BTreeSet<&'a str>,
    pub controller: &'a str,
}

/// The status patch for one object and what identifies its content, or
/// `None` when the object already says it (or there is nothing to say).
pub fn wanted(
    kind: &Kind,
    namespace: &str,
    object: &Object,
    diagnostics: &[&Diagnostic],
    inputs: &Inputs,
    now: &str,
) -> Option<(Value, Vec<Value>)> {
    let (resources, controller) = (inputs.resources, inputs.controller);
    match kind.status {
        StatusShape::None => None,
        StatusShape::Conditions => {
            let wanted = conditions(
                &decide(diagnostics),
                object.generation,
                &object.conditions,
                now,
            );
            let essential = essence(&wanted);
            (essential != essence(&object.conditions))
                .then(|| (json!({"status": {"conditions": wanted}}), essential))
        }
        StatusShape::Ancestors => {
            let decided = policy_status::decide(
                &kind.resource.kind,
                namespace,
                &policy_status::targets_of(&object.value),
                resources,
                diagnostics,
            );
            let wanted = policy_status::ancestors(
                &decided,
                controller,
                object.generation,
                &object.ancestors,
                now,
            );
            let essential = policy_status::essence(&wanted, controller);
            (essential != policy_status::essence(&object.ancestors, controller))
                .then(|| (json!({"status": {"ancestors": wanted}}), essential))
        }
        StatusShape::GatewayClass => {
            let decided = gateway_status::decide_class(&object.value, controller)?;
            let wanted = conditions(&decided, object.generation, &object.conditions, now);
            let essential = essence(&wanted);
            (essential != essence(&object.conditions))
                .then(|| (json!({"status": {"conditions": wanted}}), essential))
        }
        StatusShape::Gateway => {
            if !gateway_status::is_ours(&object.value, resources, controller) {
                return None;
            }
            let name = object.value["metadata"]["name"].as_str().unwrap_or("");
            let gateway = resources
                .gateways
                .iter()
                .find(|g| g.namespace == namespace && g.name == name);
            let programmed = |listener: &str| inputs.listeners.contains(listener);
            let decided =
                gateway_status::decide_gateway(gateway, resources, diagnostics, &programmed);
            let (generation, previous) = (object.generation, &object.conditions);
            let wanted_conditions = conditions(&decided.conditions, generation, previous, now);
            let wanted_listeners =
                gateway_status::listeners(&decided.listeners, generation, &object.listeners, now);
            let essential = vec![
                json!(essence(&wanted_conditions)),
                json!(gateway_status::essence(&wanted_listeners)),
            ];
            let current = vec![
                json!(essence(&object.conditions)),
                json!(gateway_status::essence(&object.listeners)),
            ];
            (essential != current).then(|| {
                let status =
                    json!({"conditions": wanted_conditions, "listeners": wanted_listeners});
                (json!({ "status": status }), essential)
            })
        }
    }
}

impl StatusWriter {
    pub fn new(client: Client, controller_name: &str) -> Self {
        StatusWriter {
            client,
            sent: BTreeMap::new(),
            leading: true,
            controller_name: controller_name.to_string(),
        }
    }

    /// A replica that is not the leader writes nothing; one that lost the
    /// lead forgets what it sent (another replica may have written since).
    pub fn set_leading(&mut self, leading: bool) {
        if !leading {
            self.sent.clear();
        }
        self.leading = leading;
    }

    pub async fn write(&mut self, store: &Store, published: &Published) {
        if !self.leading {
            return;
        }
        let diagnostics = &published.translation.diagnostics;
        let inputs = Inputs {
            resources: &published.resources,
            listeners: published
                .translation
                .listeners
                .iter()
                .filter_map(|l| l["name"].as_str())
                .collect(),
            controller: &self.controller_name,
        };
        let mut by_file: BTreeMap<&str, Vec<&Diagnostic>> = BTreeMap::new();
        for d in diagnostics {
            if let Some(source) = &d.source {
                by_file.entry(source.file.as_str()).or_default().push(d);
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut live = BTreeSet::new();
        let mut patches = Vec::new();
        for (index, kind) in store.kinds().iter().enumerate() {
            if kind.status == StatusShape::None {
                continue;
            }
            for ((namespace, name), object) in store.objects(index) {
                let ns = kind.namespaced.then_some(namespace.as_str());
                let file = source_name(&kind.resource.kind, ns, name);
                let found = by_file.get(file.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                let id = (
                    kind.resource.kind.clone(),
                    (namespace.clone(), name.clone()),
                );
                live.insert(id.clone());
                let Some((patch, essential)) =
                    wanted(kind, namespace, object, found, &inputs, &now)
                else {
                    continue;
                };
                if self.sent.get(&id) == Some(&essential) {
                    continue;
                }
                patches.push((kind.clone(), id, patch, essential));
            }
        }
        self.sent.retain(|id, _| live.contains(id));
        let client = self.client.clone();
        let results: Vec<_> = stream::iter(patches)
            .map(move |(kind, id, patch, essential)| {
                let client = client.clone();
                async move {
                    let (namespace, name) = (id.1 .0.clone(), id.1 .1.clone());
                    let resource = &kind.resource;
                    let api: Api<DynamicObject> = if kind.namespaced {
                        Api::namespaced_with(client, &namespace, resource)
                    } else {
                        Api::all_with(client, resource)
                    };
                    let result = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                    if let Err(e) = &result {
                        eprintln!(
                            "aigw: cannot write the status of {} {namespace}/{name}: {e}",
                            resource.kind
                        );
                    }
                    (id, essential, result.is_ok())
                }
            })
            .buffer_unordered(CONCURRENT_PATCHES)
            .collect()
            .await;
        for (id, essential, ok) in results {
            if ok {
                self.sent.insert(id, essential);
            } else {
                self.sent.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_conditions_from_diagnostics() {
        let missing = Diagnostic::error("AIServiceBackend default/x does not exist")
            .field("spec.rules[0].backendRefs[0].name");
        let bad = Diagnostic::error("invalid type: string \"heavy\", expected u32")
            .field("spec.rules[0].backendRefs[0].weight");
        let [accepted, resolved] = decide(&[&missing]);
        assert!(accepted.status);
        assert!(!resolved.status);
        assert_eq!(
            resolved.message,
            "spec.rules[0].backendRefs[0].name: AIServiceBackend default/x does not exist"
        );
        let [accepted, resolved] = decide(&[&bad]);
        assert!(!accepted.status);
        assert_eq!(accepted.reason, "Invalid");
        assert!(accepted
            .message
            .starts_with("spec.rules[0].backendRefs[0].weight: "));
        assert!(resolved.status);
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let decided = decide(&[]);
        let first = conditions(&decided, Some(3), &[], "2026-01-01T00:00:00Z");
        assert_eq!(first[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(first[0]["observedGeneration"], 3);
        let again = conditions(&decided, Some(4), &first, "2026-02-02T00:00:00Z");
        assert_eq!(again[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let bad = Diagnostic::error("x").field("spec.schema");
        let changed = conditions(&decide(&[&bad]), Some(4), &first, "2026-02-02T00:00:00Z");
        assert_eq!(changed[0]["lastTransitionTime"], "2026-02-02T00:00:00Z");
        assert_eq!(changed[0]["status"], "False");
    }
}
