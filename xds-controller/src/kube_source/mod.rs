//! The Kubernetes source: watches every kind the gateway reads, turns the
//! objects into the same [`Resources`] the file loader builds (through the
//! same code path), debounces, translates with the same pure function as
//! `aigw run`, publishes, and writes status conditions back.
//!
//! Robustness: the watcher re-lists after a 410 Gone or a broken watch (the
//! store is replaced atomically when the re-list completes, so objects
//! deleted meanwhile disappear); a kind whose API is not installed counts as
//! empty; a configuration that has errors and serves nothing never replaces
//! one that served something.

pub mod controller;
#[cfg(test)]
pub mod crd;
#[cfg(test)]
mod deploy_tests;
#[cfg(test)]
mod envoy_gateway_tests;
pub mod gateway_status;
pub mod leader;
pub mod policy_status;
pub mod status;
#[cfg(test)]
mod tests;

use crate::error::{has_errors, Diagnostic, Severity};
use crate::resources::Resources;
use crate::translate::{translate, Options, Translation};
use crate::xds::Snapshot;
use futures::stream::{self, BoxStream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Which API versions to watch, and where.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Watch one namespace only (cluster-scoped kinds are still watched
    /// cluster-wide); all namespaces when `None`.
    pub namespace: Option<String>,
    /// Version of the aigateway.envoyproxy.io kinds.
    pub ai_gateway_version: String,
    /// Version of Gateway API's BackendTLSPolicy (v1alpha3 or v1).
    pub backend_tls_policy_version: String,
    /// Quiet time after the last change before translating.
    pub debounce: Duration,
    /// Longest a burst of changes can postpone a translation.
    pub max_delay: Duration,
    /// `controllerName` in the policies' `status.ancestors`, and of the
    /// GatewayClasses whose (and whose Gateways') status is written.
    pub controller_name: String,
    /// Serve only the Gateways whose GatewayClass has `controller_name`
    /// (false: every Gateway, whatever its class).
    pub own_gateway_classes_only: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            namespace: None,
            ai_gateway_version: "v1alpha1".into(),
            backend_tls_policy_version: "v1alpha3".into(),
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            controller_name: policy_status::DEFAULT_CONTROLLER_NAME.into(),
            own_gateway_classes_only: false,
        }
    }
}

/// Which status the controller writes on a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusShape {
    /// None (read only).
    None,
    /// `status.conditions` (Accepted, ResolvedRefs): the aigateway kinds.
    Conditions,
    /// `status.ancestors[]` (Gateway API PolicyStatus): Envoy Gateway's
    /// BackendTrafficPolicy and SecurityPolicy.
    Ancestors,
    /// `status.conditions` (Accepted) of a GatewayClass that is ours.
    GatewayClass,
    /// `status.conditions` and `status.listeners[]` of a Gateway of ours.
    Gateway,
}

/// One kind the controller watches.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub status: StatusShape,
}

pub const AI_GATEWAY_GROUP: &str = "aigateway.envoyproxy.io";
const ENVOY_GATEWAY_GROUP: &str = "gateway.envoyproxy.io";
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Every kind `aigw` reads, in a fixed order.
pub fn kinds(config: &SourceConfig) -> Vec<Kind> {
    let ai = config.ai_gateway_version.as_str();
    let kind = |group, version, kind, plural, namespaced, status| Kind {
        resource: api_resource(group, version, kind, plural),
        namespaced,
        status,
    };
    vec![
        kind(
            AI_GATEWAY_GROUP,
            ai,
            "AIGatewayRoute",
            "aigatewayroutes",
            true,
            StatusShape::Conditions,
        ),
        kind(
            AI_GATEWAY_GROUP,
            ai,
            "AIServiceBackend",
            "aiservicebackends",
            true,
            StatusShape::Conditions,
        ),
        kind(
            AI_GATEWAY_GROUP,
            ai,
            "BackendSecurityPolicy",
            "backendsecuritypolicies",
            true,
            StatusShape::Conditions,
        ),
        kind(
            ENVOY_GATEWAY_GROUP,
            "v1alpha1",
            "Backend",
            "backends",
            true,
            StatusShape::None,
        ),
        kind(
            ENVOY_GATEWAY_GROUP,
            "v1alpha1",
            "ClientTrafficPolicy",
            "clienttrafficpolicies",
            true,
            StatusShape::None,
        ),
        kind(
            ENVOY_GATEWAY_GROUP,
            "v1alpha1",
            "BackendTrafficPolicy",
            "backendtrafficpolicies",
            true,
            StatusShape::Ancestors,
        ),
        kind(
            ENVOY_GATEWAY_GROUP,
            "v1alpha1",
            "EnvoyProxy",
            "envoyproxies",
            true,
            StatusShape::None,
        ),
        kind(
            ENVOY_GATEWAY_GROUP,
            "v1alpha1",
            "SecurityPolicy",
            "securitypolicies",
            true,
            StatusShape::Ancestors,
        ),
        kind(
            GATEWAY_API_GROUP,
            "v1",
            "GatewayClass",
            "gatewayclasses",
            false,
            StatusShape::GatewayClass,
        ),
        kind(
            GATEWAY_API_GROUP,
            "v1",
            "Gateway",
            "gateways",
            true,
            StatusShape::Gateway,
        ),
        kind(
            GATEWAY_API_GROUP,
            &config.backend_tls_policy_version,
            "BackendTLSPolicy",
            "backendtlspolicies",
            true,
            StatusShape::None,
        ),
        kind("", "v1", "Secret", "secrets", true, StatusShape::None),
        kind("", "v1", "ConfigMap", "configmaps", true, StatusShape::None),
    ]
}

/// `kubernetes:Kind/namespace/name`: the "file" of an object's diagnostics.
pub fn source_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("kubernetes:{kind}/{ns}/{name}"),
        None => format!("kubernetes:{kind}/{name}"),
    }
}

/// Test fixture of the status deciders: YAML documents loaded as the
/// Kubernetes source loads objects (one "file" each, named by
/// [`source_name`]; `default_namespace` for documents without one), then
/// translated.
#[cfg(test)]
pub(crate) struct LoadedObjects {
    pub resources: crate::resources::Resources,
    /// Loading's and translation's diagnostics.
    pub diagnostics: Vec<crate::error::Diagnostic>,
    pub translation: crate::translate::Translation,
    /// Each document as (kind, name, file, JSON).
    pub objects: Vec<(String, String, String, serde_json::Value)>,
}

#[cfg(test)]
pub(crate) fn load_objects(docs: &[String], default_namespace: Option<&str>) -> LoadedObjects {
    use serde::Deserialize;
    let mut resources = crate::resources::Resources::default();
    let mut diagnostics = Vec::new();
    let mut objects = Vec::new();
    for doc in docs {
        let value = serde_json::to_value(
            serde_yaml::Value::deserialize(serde_yaml::Deserializer::from_str(doc)).unwrap(),
        )
        .unwrap();
        let kind = value["kind"].as_str().unwrap().to_string();
        let name = value["metadata"]["name"].as_str().unwrap().to_string();
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .or(default_namespace);
        let file = source_name(&kind, namespace, &name);
        crate::load::load_str(&file, doc, &mut resources, &mut diagnostics);
        objects.push((kind, name, file, value));
    }
    let options = crate::run::options(&crate::run::RunConfig::default(), 0, 1);
    let translation = crate::translate::translate(&resources, &options);
    diagnostics.extend(translation.diagnostics.iter().cloned());
    LoadedObjects {
        resources,
        diagnostics,
        translation,
        objects,
    }
}

/// What the store keeps of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The object without status and server-managed metadata: what the
    /// translation reads. A status-only change leaves it equal.
    pub value: Value,
    pub generation: Option<i64>,
    /// `status.conditions` as last seen.
    pub conditions: Vec<Value>,
    /// `status.ancestors` as last seen (policies).
    pub ancestors: Vec<Value>,
    /// `status.listeners` as last seen (Gateways).
    pub listeners: Vec<Value>,
}

/// `(namespace or "", name)`
pub type ObjectKey = (String, String);

#[derive(Debug, Default)]
struct KindState {
    objects: BTreeMap<ObjectKey, Object>,
    /// Objects of a re-list in progress; they replace `objects` at InitDone.
    relisting: Option<BTreeMap<ObjectKey, Object>>,
    /// Listed once, or failed once (then it counts as empty until it lists).
    ready: bool,
}

/// The latest known objects of every kind.
#[derive(Debug)]
pub struct Store {
    kinds: Vec<Kind>,
    states: Vec<KindState>,
}

fn object_of(kind: &Kind, object: DynamicObject) -> (ObjectKey, Object) {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let mut value = object.data;
    if !value.is_object() {
        value = Value::Object(Default::default());
    }
    let status_list = |field: &str| {
        value
            .get("status")
            .and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let conditions = status_list("conditions");
    let ancestors = status_list("ancestors");
    let listeners = status_list("listeners");
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        // List items of built-in kinds come without apiVersion and kind.
        map.insert(
            "apiVersion".into(),
            Value::String(kind.resource.api_version.clone()),
        );
        map.insert("kind".into(), Value::String(kind.resource.kind.clone()));
        let mut metadata = serde_json::Map::new();
        metadata.insert("name".into(), Value::String(name.clone()));
        if kind.namespaced {
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
        }
        map.insert("metadata".into(), Value::Object(metadata));
    }
    (
        (namespace, name),
        Object {
            value,
            generation,
            conditions,
            ancestors,
            listeners,
        },
    )
}

impl Store {
    pub fn new(kinds: Vec<Kind>) -> Self {
        let states = kinds.iter().map(|_| KindState::default()).collect();
        Store { kinds, states }
    }

    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Applies one watcher event; true when what the translation reads changed.
    pub fn apply(&mut self, index: usize, event: Event<DynamicObject>) -> bool {
        let kind = &self.kinds[index];
        let state = &mut self.states[index];
        match event {
            Event::Init => {
                state.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                let (key, object) = object_of(kind, object);
                state
                    .relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, object);
                false
            }
            Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                let changed = !state.ready || !same_specs(&state.objects, &listed);
                state.objects = listed;
                state.ready = true;
                changed
            }
            Event::Apply(object) => {
                let (key, object) = object_of(kind, object);
                let changed = state.objects.get(&key).map(|o| &o.value) != Some(&object.value);
                state.objects.insert(key, object);
                changed
            }
            Event::Delete(object) => {
                let (key, _) = object_of(kind, object);
                state.objects.remove(&key).is_some()
            }
        }
    }

    /// A list or watch of this kind failed: until it lists, it counts as
    /// empty (e.g. its CRD is not installed). True if that changes readiness.
    pub fn failed(&mut self, index: usize) -> bool {
        let state = &mut self.states[index];
        !std::mem::replace(&mut state.ready, true)
    }

    /// Every kind has listed (or failed) once.
    pub fn ready(&self) -> bool {
        self.states.iter().all(|s| s.ready)
    }

    pub fn objects(&self, index: usize) -> &BTreeMap<ObjectKey, Object> {
        &self.states[index].objects
    }

    /// The Resources the objects describe, read by the file loader's code.
    /// Only the Secrets and ConfigMaps that some object references are read.
    pub fn resources(&self) -> (Resources, Vec<Diagnostic>) {
        let mut resources = Resources::default();
        let mut diagnostics = Vec::new();
        let mut referenced = BTreeSet::new();
        for (kind, state) in self.kinds.iter().zip(&self.states) {
            if !is_referenced_only(&kind.resource.kind) {
                for ((namespace, _), object) in &state.objects {
                    data_refs(&object.value, namespace, &mut referenced);
                }
            }
        }
        for (kind, state) in self.kinds.iter().zip(&self.states) {
            let kind_name = &kind.resource.kind;
            for ((namespace, name), object) in &state.objects {
                if is_referenced_only(kind_name)
                    && !referenced.contains(&(kind_name.clone(), namespace.clone(), name.clone()))
                {
                    continue;
                }
                let ns = kind.namespaced.then_some(namespace.as_str());
                let file = source_name(kind_name, ns, name);
                match serde_yaml::to_string(&object.value) {
                    Ok(text) => {
                        crate::load::load_str(&file, &text, &mut resources, &mut diagnostics)
                    }
                    Err(e) => {
                        diagnostics.push(Diagnostic::error(format!("{file}: cannot be read: {e}")))
                    }
                }
            }
        }
        (resources, diagnostics)
    }
}

/// Kinds read only when another object references them: the gateway must
/// not hold every Secret of the cluster.
fn is_referenced_only(kind: &str) -> bool {
    kind == "Secret" || kind == "ConfigMap"
}

fn same_specs(a: &BTreeMap<ObjectKey, Object>, b: &BTreeMap<ObjectKey, Object>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, a), (kb, b))| ka == kb && a.value == b.value)
}

/// Collects `(kind, namespace, name)` of every Secret and ConfigMap `value`
/// refers to: each `secretRef` and OIDC `clientSecret` (BackendSecurityPolicy), `credentialRefs[]`
/// entry (SecurityPolicy apiKeyAuth), `caCertificateRefs[]` entry
/// (BackendTLSPolicy; a ConfigMap unless it says Secret) and `valueRef`
/// (SecurityPolicy localJWKS; a ConfigMap).
fn data_refs(value: &Value, namespace: &str, out: &mut BTreeSet<(String, String, String)>) {
    let mut add = |reference: &Value, default_kind: &str| {
        let kind = reference
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(default_kind);
        if let (Some(name), true) = (
            reference.get("name").and_then(Value::as_str),
            is_referenced_only(kind),
        ) {
            let ns = reference
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace);
            out.insert((kind.to_string(), ns.to_string(), name.to_string()));
        }
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("secretRef", _) => add(child, "Secret"),
                    // An OIDC client's secret (oidcExchangeToken.oidc).
                    ("clientSecret", Value::Object(_)) => add(child, "Secret"),
                    ("credentialRefs", Value::Array(items)) => {
                        items.iter().for_each(|i| add(i, "Secret"))
                    }
                    ("caCertificateRefs", Value::Array(items)) => {
                        items.iter().for_each(|i| add(i, "ConfigMap"))
                    }
                    // SecurityPolicy jwt localJWKS (type ValueRef).
                    ("valueRef", Value::Object(_)) => add(child, "ConfigMap"),
                    _ => {}
                }
            }
            for child in map.values() {
                data_refs(child, namespace, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| data_refs(v, namespace, out)),
        _ => {}
    }
}

/// One translated configuration, as handed to the servers.
pub struct Published {
    pub version: u64,
    pub resources: Resources,
    /// Its `diagnostics` include the loader's and the encoder's.
    pub translation: Translation,
    pub snapshot: Arc<Snapshot>,
}

/// Keeps the Gateways whose GatewayClass names `controller` as its
/// controllerName (where another controller, e.g. Envoy Gateway, serves
/// the others); a note names each Gateway left to someone else.
pub fn own_gateways(resources: &mut Resources, controller: &str) -> Vec<Diagnostic> {
    let ours: BTreeSet<&str> = resources
        .gateway_classes
        .iter()
        .filter(|c| c.spec["controllerName"] == controller)
        .map(|c| c.name.as_str())
        .collect();
    let mut notes = Vec::new();
    let (kept, left): (Vec<_>, Vec<_>) = std::mem::take(&mut resources.gateways)
        .into_iter()
        .partition(|g| ours.contains(g.spec.gateway_class_name.as_str()));
    for gateway in left {
        notes.push(
            Diagnostic::note(format!(
                "Gateway {} is of GatewayClass {:?}, whose controller is not {controller}; not served",
                gateway.key(),
                gateway.spec.gateway_class_name
            ))
            .at(format!("Gateway {}", gateway.key()), &gateway.source),
        );
    }
    resources.gateways = kept;
    notes
}

/// Loads, translates and encodes the store's objects; with `controller`,
/// only the Gateways of its GatewayClasses.
pub fn build(store: &Store, options: &Options, controller: Option<&str>) -> Published {
    let (mut resources, mut diagnostics) = store.resources();
    if let Some(controller) = controller {
        diagnostics.extend(own_gateways(&mut resources, controller));
    }
    let mut translation = translate(&resources, options);
    let (snapshot, encode_errors) = crate::run::snapshot(&translation, options.config_version);
    diagnostics.append(&mut translation.diagnostics);
    diagnostics.extend(encode_errors);
    translation.diagnostics = diagnostics;
    Published {
        version: options.config_version,
        resources,
        translation,
        snapshot: Arc::new(snapshot),
    }
}

/// Whether `next` may replace a configuration that served `serving`
/// listeners: one with errors that serves nothing may not.
pub fn acceptable(next: &Translation, serving: usize) -> bool {
    serving == 0 || !(next.listeners.is_empty() && has_errors(&next.diagnostics))
}

fn watch_all(
    client: &Client,
    config: &SourceConfig,
    kinds: &[Kind],
) -> BoxStream<'static, (usize, Result<Event<DynamicObject>, watcher::Error>)> {
    let streams = kinds.iter().enumerate().map(|(index, kind)| {
        let api: Api<DynamicObject> = match (&config.namespace, kind.namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &kind.resource),
            _ => Api::all_with(client.clone(), &kind.resource),
        };
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (index, event))
            .boxed()
    });
    stream::select_all(streams).boxed()
}

/// Watches, translates and publishes until the watch streams end (never,
/// in practice). `options(version)` gives the translation's inputs;
/// `publish` receives every accepted configuration. Status is written only
/// while `leading` says so (leader election); on becoming leader the
/// status of the latest configuration is written at once.
pub async fn sync(
    client: Client,
    config: SourceConfig,
    mut leading: tokio::sync::watch::Receiver<bool>,
    options: impl Fn(u64) -> Options,
    mut publish: impl FnMut(&Published),
) {
    let kinds = kinds(&config);
    let mut events = watch_all(&client, &config, &kinds);
    let mut store = Store::new(kinds);
    let mut status = status::StatusWriter::new(client.clone(), &config.controller_name);
    status.set_leading(*leading.borrow_and_update());
    let mut version = 0u64;
    let mut serving = 0usize;
    let mut last_printed: Vec<String> = Vec::new();
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    let deadline = tokio::time::sleep_until(far());
    tokio::pin!(deadline);
    let mut dirty_since: Option<tokio::time::Instant> = None;
    // The latest translation, for a new leader.
    let mut latest: Option<Published> = None;
    let mut election_open = true;
    loop {
        tokio::select! {
            changed = leading.changed(), if election_open => {
                if changed.is_err() {
                    election_open = false;
                    continue;
                }
                let lead = *leading.borrow_and_update();
                status.set_leading(lead);
                // With changes pending, the next translation writes status
                // (the latest one may be older than the objects).
                if let (true, None, Some(p)) = (lead, dirty_since, &latest) {
                    status.write(&store, p).await;
                }
            }
            next = events.next() => {
                let Some((index, event)) = next else { return };
                let changed = match event {
                    Ok(event) => store.apply(index, event),
                    Err(e) => {
                        let kind = &store.kinds()[index].resource;
                        eprintln!("aigw: watching {} {}: {e}", kind.api_version, kind.kind);
                        store.failed(index)
                    }
                };
                if changed {
                    let now = tokio::time::Instant::now();
                    let first = *dirty_since.get_or_insert(now);
                    deadline.as_mut().reset((now + config.debounce).min(first + config.max_delay));
                }
            }
            () = &mut deadline, if dirty_since.is_some() && store.ready() => {
                dirty_since = None;
                deadline.as_mut().reset(far());
                let own = config.own_gateway_classes_only.then_some(config.controller_name.as_str());
                let published = build(&store, &options(version + 1), own);
                let printed: Vec<String> = published
                    .translation
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity >= Severity::Warning)
                    .map(ToString::to_string)
                    .collect();
                if printed != last_printed {
                    for line in &printed {
                        eprintln!("aigw: {line}");
                    }
                    last_printed = printed;
                }
                if acceptable(&published.translation, serving) {
                    version += 1;
                    serving = published.translation.listeners.len();
                    publish(&published);
                } else {
                    eprintln!("aigw: the changed configuration has errors and serves nothing; keeping the previous one");
                }
                // After the push, so that status round trips never delay it.
                status.write(&store, &published).await;
                latest = Some(published);
            }
        }
    }
}
