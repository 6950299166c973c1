//! The Kubernetes source against a fake API server: a tower service behind
//! `kube::Client` that answers list and watch requests in the Kubernetes
//! wire format (JSON lists with a resourceVersion, watches as
//! newline-delimited WatchEvents), can end watches, expire resource
//! versions (410 Gone) and records status patches.

use super::controller::ControllerArgs;
use super::*;
use crate::credentials::CredentialValue;
use bytes::Bytes;
use futures::stream::BoxStream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use tokio::sync::mpsc;

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn full(status: u16, value: &Value) -> http::Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(value).unwrap());
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(StreamBody::new(
            stream::once(async move { Ok(Frame::data(bytes)) }).boxed(),
        ))
        .unwrap()
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<ObjectKey, Value>,
    /// `(resourceVersion, type, object)`
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Built-in kinds' list items carry no apiVersion and kind.
    core: bool,
}

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    version: u64,
    collections: HashMap<String, Collection>,
    requests: Vec<Recorded>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

impl Fake {
    /// Serves these collection paths (anything else answers 404, like a
    /// CRD that is not installed).
    fn new(paths: &[&str]) -> Self {
        let fake = Fake::default();
        {
            let mut state = fake.0.lock().unwrap();
            state.version = 100;
            for path in paths {
                state.collections.insert(
                    path.to_string(),
                    Collection {
                        core: path.starts_with("/api/"),
                        ..Default::default()
                    },
                );
            }
        }
        fake
    }

    fn emit(state: &mut FakeState, path: &str, kind: &'static str, object: Value) {
        state.version += 1;
        let version = state.version;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let collection = state.collections.get_mut(path).unwrap();
        let key = key_of(&object);
        if kind == "DELETED" {
            collection.objects.remove(&key);
        } else {
            collection.objects.insert(key, object.clone());
        }
        let line = event_line(kind, &object);
        collection.watchers.retain(|w| w.send(line.clone()).is_ok());
        collection.events.push((version, kind, object));
    }

    fn put(&self, path: &str, object: Value) {
        let mut state = self.0.lock().unwrap();
        let key = key_of(&object);
        let old = state.collections[path].objects.get(&key).cloned();
        let mut object = object;
        let generation = old
            .as_ref()
            .and_then(|o| o["metadata"]["generation"].as_i64())
            .unwrap_or(0)
            + 1;
        object["metadata"]["generation"] = json!(generation);
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        Fake::emit(&mut state, path, kind, object);
    }

    fn delete(&self, path: &str, namespace: &str, name: &str) {
        let mut state = self.0.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        let object = state.collections[path].objects[&key].clone();
        Fake::emit(&mut state, path, "DELETED", object);
    }

    /// Ends every open watch of `path`: the watcher watches again from the
    /// last resourceVersion it saw.
    fn end_watches(&self, path: &str) {
        let mut state = self.0.lock().unwrap();
        state.collections.get_mut(path).unwrap().watchers.clear();
    }

    /// Deletes without a watch event and forgets history, as after etcd
    /// compaction: watches resuming from before now get 410 Gone.
    fn delete_and_compact(&self, path: &str, namespace: &str, name: &str) {
        let mut state = self.0.lock().unwrap();
        state.version += 1;
        let version = state.version;
        let collection = state.collections.get_mut(path).unwrap();
        collection
            .objects
            .remove(&(namespace.to_string(), name.to_string()));
        collection.events.clear();
        collection.compacted = version;
        collection.watchers.clear();
    }

    fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.answer(request).await) }
        });
        Client::new(service, "default")
    }

    async fn answer(&self, request: http::Request<kube::client::Body>) -> http::Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut state = self.0.lock().unwrap();
        if method == "PATCH" {
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            state.requests.push(Recorded {
                method,
                path: path.clone(),
                content_type,
                body: body.clone(),
            });
            // .../namespaces/NS/PLURAL/NAME/status
            let parts: Vec<&str> = path.split('/').collect();
            let n = parts.len();
            let collection = format!("{}/{}", parts[..n - 5].join("/"), parts[n - 3]);
            let key = (parts[n - 4].to_string(), parts[n - 2].to_string());
            let Some(mut object) = state
                .collections
                .get(&collection)
                .and_then(|c| c.objects.get(&key))
                .cloned()
            else {
                return full(404, &json!({"kind": "Status", "code": 404}));
            };
            object["status"] = body["status"].clone();
            Fake::emit(&mut state, &collection, "MODIFIED", object.clone());
            return full(200, &object);
        }
        let version = state.version;
        let Some(collection) = state.collections.get_mut(&path) else {
            return full(
                404,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
            );
        };
        if query.get("watch").map(String::as_str) == Some("true") {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (tx, rx) = mpsc::unbounded_channel();
            if from < collection.compacted {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {from} ({})", collection.compacted)});
                let _ = tx.send(event_line("ERROR", &gone));
            } else {
                for (v, kind, object) in &collection.events {
                    if *v > from {
                        let _ = tx.send(event_line(kind, object));
                    }
                }
                collection.watchers.push(tx);
            }
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
                .map(|b| Ok(Frame::data(b)))
                .boxed();
            return http::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(StreamBody::new(stream))
                .unwrap();
        }
        let items: Vec<Value> = collection
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                if collection.core {
                    let map = o.as_object_mut().unwrap();
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                o
            })
            .collect();
        full(
            200,
            &json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": version.to_string()}, "items": items}),
        )
    }
}

fn key_of(object: &Value) -> ObjectKey {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        object["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

const ROUTES: &str = "/apis/aigateway.envoyproxy.io/v1alpha1/aigatewayroutes";
const AI_BACKENDS: &str = "/apis/aigateway.envoyproxy.io/v1alpha1/aiservicebackends";
const POLICIES: &str = "/apis/aigateway.envoyproxy.io/v1alpha1/backendsecuritypolicies";
const BACKENDS: &str = "/apis/gateway.envoyproxy.io/v1alpha1/backends";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const SECRETS: &str = "/api/v1/secrets";

/// Every collection the controller watches except EnvoyProxy (its CRD
/// "is not installed": 404).
fn fake_cluster() -> Fake {
    Fake::new(&[
        ROUTES,
        AI_BACKENDS,
        POLICIES,
        BACKENDS,
        GATEWAYS,
        SECRETS,
        "/apis/gateway.envoyproxy.io/v1alpha1/clienttrafficpolicies",
        "/apis/gateway.envoyproxy.io/v1alpha1/backendtrafficpolicies",
        "/apis/gateway.envoyproxy.io/v1alpha1/securitypolicies",
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
        "/apis/gateway.networking.k8s.io/v1alpha3/backendtlspolicies",
    ])
}

fn object(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
           "spec": spec})
}

fn route(name: &str, model: &str, weight: Value) -> Value {
    object(
        "aigateway.envoyproxy.io/v1alpha1",
        "AIGatewayRoute",
        name,
        json!({"parentRefs": [{"name": "gw"}],
               "rules": [{"matches": [{"headers": [{"name": "x-ai-eg-model", "value": model}]}],
                          "backendRefs": [{"name": "openai", "weight": weight}]}]}),
    )
}

fn secret(name: &str, key: &str) -> Value {
    use base64::Engine;
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "default"},
           "type": "Opaque",
           "data": {"apiKey": base64::engine::general_purpose::STANDARD.encode(key)}})
}

fn seed(fake: &Fake) {
    fake.put(
        GATEWAYS,
        object(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            "gw",
            json!({"gatewayClassName": "aigw", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}),
        ),
    );
    fake.put(
        BACKENDS,
        object(
            "gateway.envoyproxy.io/v1alpha1",
            "Backend",
            "openai",
            json!({"endpoints": [{"fqdn": {"hostname": "api.openai.com", "port": 443}}]}),
        ),
    );
    fake.put(
        AI_BACKENDS,
        object(
            "aigateway.envoyproxy.io/v1alpha1",
            "AIServiceBackend",
            "openai",
            json!({"schema": {"name": "OpenAI"},
                   "backendRef": {"name": "openai", "kind": "Backend", "group": "gateway.envoyproxy.io"}}),
        ),
    );
    fake.put(
        POLICIES,
        object(
            "aigateway.envoyproxy.io/v1alpha1",
            "BackendSecurityPolicy",
            "openai-key",
            json!({"targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "openai"}],
                   "type": "APIKey", "apiKey": {"secretRef": {"name": "openai-secret"}}}),
        ),
    );
    fake.put(ROUTES, route("r1", "m1", json!(1)));
    fake.put(SECRETS, secret("unrelated", "not-for-the-gateway"));
}

/// What a published configuration held, for assertions.
#[derive(Debug, Clone, Default)]
struct Seen {
    version: u64,
    routes: Vec<String>,
    secrets: Vec<String>,
    listeners: usize,
    ports: Vec<u64>,
    clusters: Vec<String>,
    credentials: BTreeMap<String, CredentialValue>,
}

fn args() -> ControllerArgs {
    ControllerArgs {
        xds_address: String::new(),
        credential_address: String::new(),
        rate_limit_address: String::new(),
        credential_authority: "aigw-controller:18001".into(),
        credential_token: "t".repeat(32),
        wasm_path: "/etc/aigw/wasm/aigw_filter.wasm".into(),
        envoy_ca_file: "/etc/ssl/certs/ca-certificates.crt".into(),
        listen_address: "0.0.0.0".into(),
        privileged_port_offset: 10000,
        access_log: None,
        namespace: None,
        ai_gateway_version: "v1alpha1".into(),
        backend_tls_policy_version: "v1alpha3".into(),
        debounce_ms: 50,
        redis: None,
        rate_limit_fail_closed: false,
        rate_limit_reserve: None,
        no_direct: false,
        leader_elect: false,
        leader_election_namespace: None,
        leader_election_id: "aigw-controller".into(),
        leader_lease_seconds: 15,
        pod_name: None,
        controller_name: super::policy_status::DEFAULT_CONTROLLER_NAME.into(),
        own_gateway_classes_only: false,
    }
}

fn start(fake: &Fake) -> tokio::sync::watch::Receiver<Seen> {
    let (lead, leading) = tokio::sync::watch::channel(true);
    let rx = start_leading(fake, leading);
    // The sender lives as long as the test's runtime: always the leader.
    tokio::spawn(async move {
        lead.closed().await;
    });
    rx
}

/// Starts the sync loop with leadership as `leading` says.
fn start_leading(
    fake: &Fake,
    leading: tokio::sync::watch::Receiver<bool>,
) -> tokio::sync::watch::Receiver<Seen> {
    let (tx, rx) = tokio::sync::watch::channel(Seen::default());
    let client = fake.client();
    tokio::spawn(async move {
        let args = args();
        let config = args.source_config();
        sync(
            client,
            config,
            leading,
            |v| args.options(v),
            |p: &Published| {
                let names = |list: &Vec<crate::resources::Named<_>>| -> Vec<String> {
                    list.iter()
                        .map(|n: &crate::resources::Named<_>| n.key())
                        .collect()
                };
                let _ = tx.send(Seen {
                    version: p.version,
                    routes: p
                        .resources
                        .ai_gateway_routes
                        .iter()
                        .map(|r| r.key())
                        .collect(),
                    secrets: names(&p.resources.secrets),
                    listeners: p.translation.listeners.len(),
                    ports: p
                        .translation
                        .listeners
                        .iter()
                        .filter_map(|l| l["address"]["socket_address"]["port_value"].as_u64())
                        .collect(),
                    clusters: p
                        .translation
                        .clusters
                        .iter()
                        .filter_map(|c| c["name"].as_str().map(String::from))
                        .collect(),
                    credentials: p.translation.credentials.credentials.clone(),
                });
            },
        )
        .await
    });
    rx
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<Seen>,
    what: &str,
    check: impl Fn(&Seen) -> bool,
) -> Seen {
    let found = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| check(s)))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|seen| seen.clone());
    found.unwrap_or_else(|| panic!("timed out waiting for {what}; last seen {:?}", *rx.borrow()))
}

async fn wait_for_patch(fake: &Fake, what: &str, check: impl Fn(&Recorded) -> bool) -> Recorded {
    for _ in 0..200 {
        if let Some(r) = fake.requests().into_iter().rev().find(|r| check(r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no status patch {what}; sent {:#?}", fake.requests());
}

fn condition<'a>(patch: &'a Recorded, type_: &str) -> &'a Value {
    patch.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

const POLICY_STATUS: &str =
    "/apis/aigateway.envoyproxy.io/v1alpha1/namespaces/default/backendsecuritypolicies/openai-key/status";

#[tokio::test]
async fn watches_translates_and_writes_status() {
    let fake = fake_cluster();
    seed(&fake);
    let mut seen = start(&fake);

    // First configuration: the route is served; the policy's Secret is missing.
    let first = wait_for(&mut seen, "the first configuration", |s| s.version >= 1).await;
    assert_eq!(first.ports, [10080], "port 80 is bound unprivileged");
    assert_eq!(first.routes, ["default/r1"]);
    assert_eq!(first.listeners, 1);
    assert!(
        first.secrets.is_empty(),
        "unreferenced Secrets are not read"
    );
    assert!(first.credentials.is_empty());
    let patch = wait_for_patch(&fake, "for the policy", |r| r.path == POLICY_STATUS).await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let resolved = condition(&patch, "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.apiKey.secretRef.name: Secret default/openai-secret does not exist"),
        "{resolved}"
    );
    assert_eq!(resolved["observedGeneration"], 1);
    // The route's only backend is unusable without its key.
    let route_patch = wait_for_patch(&fake, "for the route", |r| {
        r.path.ends_with("/aigatewayroutes/r1/status")
    })
    .await;
    assert_eq!(condition(&route_patch, "Accepted")["status"], "True");
    assert_eq!(condition(&route_patch, "ResolvedRefs")["status"], "False");

    // The Secret arrives later: its key becomes the policy's credential.
    fake.put(SECRETS, secret("openai-secret", "sk-test-123"));
    let with_key = wait_for(&mut seen, "the credential", |s| !s.credentials.is_empty()).await;
    assert_eq!(
        with_key.credentials.get("default/openai-key"),
        Some(&CredentialValue::ApiKey("sk-test-123".into()))
    );
    assert_eq!(with_key.secrets, ["default/openai-secret"]);
    let patch = wait_for_patch(&fake, "resolving the policy", |r| {
        r.path == POLICY_STATUS && condition(r, "ResolvedRefs")["status"] == "True"
    })
    .await;
    assert_eq!(condition(&patch, "Accepted")["status"], "True");
    wait_for_patch(&fake, "resolving the route", |r| {
        r.path.ends_with("/aigatewayroutes/r1/status")
            && condition(r, "ResolvedRefs")["status"] == "True"
    })
    .await;

    // A watch that ends is resumed: a change made meanwhile arrives.
    fake.end_watches(ROUTES);
    fake.put(ROUTES, route("r2", "m2", json!(1)));
    let both = wait_for(&mut seen, "r2", |s| s.routes.len() == 2).await;
    assert_eq!(both.routes, ["default/r1", "default/r2"]);

    // Deleting the Secret removes the credential.
    fake.delete(SECRETS, "default", "openai-secret");
    let without = wait_for(&mut seen, "the credential to go", |s| {
        s.credentials.is_empty()
    })
    .await;
    assert!(without.secrets.is_empty());

    // 410 Gone: r2 was deleted while history was compacted, so no watch
    // event tells; the re-list does.
    fake.delete_and_compact(ROUTES, "default", "r2");
    fake.end_watches(ROUTES);
    let relisted = wait_for(&mut seen, "the re-list", |s| s.routes.len() == 1).await;
    assert_eq!(relisted.routes, ["default/r1"]);

    fake.put(SECRETS, secret("openai-secret", "sk-test-456"));
    let again = wait_for(&mut seen, "the new key", |s| !s.credentials.is_empty()).await;
    assert_eq!(
        again.credentials.get("default/openai-key"),
        Some(&CredentialValue::ApiKey("sk-test-456".into()))
    );
    let served = again.clusters.clone();
    assert!(!served.is_empty());

    // A bad route is left out with a status naming the field; the good
    // configuration stays served.
    fake.put(ROUTES, route("r3", "m3", json!("heavy")));
    let patch = wait_for_patch(&fake, "rejecting r3", |r| {
        r.path.ends_with("/aigatewayroutes/r3/status")
    })
    .await;
    let accepted = condition(&patch, "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "Invalid");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.rules[0].backendRefs[0].weight: "),
        "{accepted}"
    );
    let current = seen.borrow().clone();
    assert_eq!(current.routes, ["default/r1"]);
    assert_eq!(current.listeners, 1);
    assert_eq!(current.clusters, served);

    // Status patches are sent only when the verdict changes.
    let verdicts: Vec<Vec<(Value, Value)>> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/aigatewayroutes/r1/status"))
        .map(|r| {
            r.body["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["status"].clone(), c["message"].clone()))
                .collect()
        })
        .collect();
    assert!(verdicts.windows(2).all(|w| w[0] != w[1]), "{verdicts:#?}");
    assert!(verdicts.len() <= 4, "{verdicts:#?}");
}

#[test]
fn store_replaces_objects_on_relist_and_ignores_status_changes() {
    let kinds = kinds(&SourceConfig::default());
    let index = kinds
        .iter()
        .position(|k| k.resource.kind == "AIGatewayRoute")
        .unwrap();
    let mut store = Store::new(kinds);
    let dynamic = |value: Value| -> DynamicObject { serde_json::from_value(value).unwrap() };
    assert!(!store.apply(index, Event::Init));
    assert!(!store.apply(index, Event::InitApply(dynamic(route("a", "m", json!(1))))));
    assert!(store.apply(index, Event::InitDone));
    let mut with_status = route("a", "m", json!(1));
    with_status["status"] = json!({"conditions": [{"type": "Accepted", "status": "True"}]});
    with_status["metadata"]["resourceVersion"] = json!("7");
    assert!(!store.apply(index, Event::Apply(dynamic(with_status))));
    assert_eq!(
        store.objects(index)[&("default".into(), "a".into())]
            .conditions
            .len(),
        1
    );
    // A re-list without `a` removes it.
    store.apply(index, Event::Init);
    store.apply(index, Event::InitApply(dynamic(route("b", "m", json!(1)))));
    assert!(store.apply(index, Event::InitDone));
    let keys: Vec<_> = store.objects(index).keys().cloned().collect();
    assert_eq!(keys, [("default".to_string(), "b".to_string())]);
    assert!(!store.ready(), "other kinds have not listed");
    for i in 0..store.kinds().len() {
        store.failed(i);
    }
    assert!(store.ready());
    let (resources, diagnostics) = store.resources();
    assert_eq!(resources.ai_gateway_routes.len(), 1);
    assert_eq!(
        resources.ai_gateway_routes[0].source.file,
        "kubernetes:AIGatewayRoute/default/b"
    );
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
}

#[test]
fn secret_and_config_map_references_are_found() {
    let mut out = BTreeSet::new();
    let policy = json!({"spec": {
        "apiKey": {"secretRef": {"name": "a"}},
        "awsCredentials": {"credentialsFile": {"secretRef": {"name": "b", "namespace": "other"}},
                           "oidcExchangeToken": {"oidc": {"clientSecret": {"name": "i"}}}},
        "apiKeyAuth": {"credentialRefs": [{"name": "c"}, {"group": "", "kind": "Secret", "name": "d"},
                                          {"kind": "ConfigMap", "name": "e"}]},
        "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "f"},
                                             {"name": "g"}, {"kind": "Secret", "name": "h"},
                                             {"kind": "Service", "name": "not-data"}]}
    }});
    data_refs(&policy, "team", &mut out);
    let names: Vec<String> = out
        .iter()
        .map(|(k, ns, n)| format!("{k} {ns}/{n}"))
        .collect();
    assert_eq!(
        names,
        [
            "ConfigMap team/e",
            "ConfigMap team/f",
            "ConfigMap team/g",
            "Secret other/b",
            "Secret team/a",
            "Secret team/c",
            "Secret team/d",
            "Secret team/h",
            "Secret team/i"
        ]
    );
}

#[test]
fn a_configuration_with_errors_that_serves_nothing_is_not_accepted() {
    let mut broken = Translation::default();
    broken.diagnostics.push(Diagnostic::error("no Gateway"));
    assert!(!acceptable(&broken, 1));
    assert!(acceptable(&broken, 0));
    assert!(
        acceptable(&Translation::default(), 1),
        "deleting everything is allowed"
    );
}

#[test]
fn local_jwks_config_maps_are_referenced() {
    let mut out = BTreeSet::new();
    let policy = json!({"spec": {"jwt": {"providers": [
        {"name": "p", "localJWKS": {"type": "ValueRef", "valueRef": {"group": "", "kind": "ConfigMap", "name": "jwks"}}},
        {"name": "q", "localJWKS": {"type": "ValueRef", "valueRef": {"name": "more"}}},
    ]}}});
    data_refs(&policy, "team", &mut out);
    let names: Vec<String> = out
        .iter()
        .map(|(k, ns, n)| format!("{k} {ns}/{n}"))
        .collect();
    assert_eq!(names, ["ConfigMap team/jwks", "ConfigMap team/more"]);
}

#[tokio::test]
async fn only_the_leader_writes_status() {
    let fake = fake_cluster();
    seed(&fake);
    let (lead, leading) = tokio::sync::watch::channel(false);
    let mut seen = start_leading(&fake, leading);

    // A follower translates and publishes, but writes no status.
    wait_for(&mut seen, "the first configuration", |s| s.version >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.requests().is_empty(),
        "a follower wrote status: {:#?}",
        fake.requests()
    );

    // Elected: the status of the configuration it already has is written
    // at once, without waiting for a change.
    lead.send(true).unwrap();
    let patch = wait_for_patch(&fake, "after the election", |r| r.path == POLICY_STATUS).await;
    assert_eq!(condition(&patch, "ResolvedRefs")["status"], "False");

    // Deposed: changes are still served, their status is not written.
    lead.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = fake.requests().len();
    fake.put(SECRETS, secret("openai-secret", "sk-test-123"));
    wait_for(&mut seen, "the Secret's key", |s| !s.credentials.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), before, "{:#?}", fake.requests());

    // Elected again: it forgot what it sent, so it compares with what the
    // objects say and writes the resolved reference.
    lead.send(true).unwrap();
    let patch = wait_for_patch(&fake, "after the second election", |r| {
        r.path == POLICY_STATUS && condition(r, "ResolvedRefs")["status"] == "True"
    })
    .await;
    assert_eq!(condition(&patch, "Accepted")["status"], "True");
}

#[test]
fn serves_only_its_own_gateway_classes_when_asked() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ours}\nspec: {controllerName: example.com/aigw}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: a, namespace: default}\nspec: {gatewayClassName: ours, listeners: [{name: http, port: 80, protocol: HTTP}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: b, namespace: default}\nspec: {gatewayClassName: eg, listeners: [{name: http, port: 81, protocol: HTTP}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: c, namespace: default}\nspec: {gatewayClassName: missing, listeners: [{name: http, port: 82, protocol: HTTP}]}\n";
    let table: [(&str, &[&str]); 3] = [
        ("example.com/aigw", &["default/a"]),
        (
            "gateway.envoyproxy.io/gatewayclass-controller",
            &["default/b"],
        ),
        ("nobody", &[]),
    ];
    for (controller, expected) in table {
        let mut resources = crate::resources::Resources::default();
        let mut diagnostics = Vec::new();
        crate::load::load_str("f.yaml", text, &mut resources, &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let notes = own_gateways(&mut resources, controller);
        let kept: Vec<String> = resources.gateways.iter().map(|g| g.key()).collect();
        assert_eq!(kept, expected, "{controller}");
        assert_eq!(notes.len(), 3 - expected.len());
        assert!(
            notes
                .iter()
                .all(|n| n.severity == Severity::Note
                    && n.message.contains("whose controller is not"))
        );
    }
}
