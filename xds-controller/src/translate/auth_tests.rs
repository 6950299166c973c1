use super::*;
use crate::translate::envoy::HCM_TYPE;

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {listeners: [{name: http, port: 80, protocol: HTTP}]}\n---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: b}]}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {alice: key-alice-123, bob: \"key-bob-456\\n\"}\n";

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}"#;

fn load(policy: &str) -> (Resources, Vec<Diagnostic>) {
    let mut resources = Resources::default();
    let mut diagnostics = Vec::new();
    let text = format!("{GATEWAY}---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: auth}}\nspec:\n{policy}");
    crate::load::load_str("f.yaml", &text, &mut resources, &mut diagnostics);
    assert!(!crate::error::has_errors(&diagnostics), "{diagnostics:?}");
    (resources, diagnostics)
}

fn translate(resources: &Resources) -> (GatewayAuth, Vec<Diagnostic>) {
    let resolve = BTreeMap::from([(
        ("jwks.example".to_string(), 443),
        ("127.0.0.1".to_string(), 8443),
    )]);
    let env = Env {
        resolve: &resolve,
        ca_file: "/ca.pem",
    };
    let mut diagnostics = Vec::new();
    let auth = for_gateway(
        resources,
        &env,
        &resources.gateways[0],
        resources.ai_gateway_routes.iter(),
        &mut diagnostics,
    );
    (auth, diagnostics)
}

fn listener(auth: &GatewayAuth) -> Value {
    let mut listener = json!({"name": "l", "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {"@type": HCM_TYPE, "stat_prefix": "l", "route_config": {}, "http_filters": [
            {"name": WASM_ROUTER, "typed_config": {"@type": envoy::WASM_TYPE}},
            envoy::router_filter(),
        ]},
    }]}]});
    auth.add_filters(&mut listener);
    crate::proto::to_any(crate::proto::LISTENER, &listener).unwrap();
    listener
}

fn names(listener: &Value) -> Vec<String> {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

fn route_entry(auth: &GatewayAuth) -> Value {
    let entry = auth.attach(
        "default/r",
        json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}),
    );
    let route = json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [entry.clone()]}]});
    crate::proto::to_any(crate::proto::ROUTE, &route).unwrap();
    entry
}

#[test]
fn api_key_on_gateway_runs_before_the_router_filter_and_owns_the_identity() {
    let (resources, _) = load("  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  apiKeyAuth:\n    credentialRefs: [{name: keys}]\n    extractFrom: [{headers: [authorization, x-api-key]}]\n    forwardClientIDHeader: x-user-id\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let listener = listener(&auth);
    assert_eq!(
        names(&listener),
        [
            STRIP_IDENTITY,
            GATEWAY_API_KEY,
            WASM_ROUTER,
            "envoy.filters.http.router"
        ]
    );
    let http = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    assert_eq!(
        http[0]["typed_config"]["mutations"]["request_mutations"],
        json!([{"remove": "x-user-id"}])
    );
    let config = &http[1]["typed_config"];
    assert_eq!(
        config["credentials"],
        json!([{"key": "key-alice-123", "client": "alice"}, {"key": "key-bob-456", "client": "bob"}])
    );
    assert_eq!(
        config["key_sources"],
        json!([{"header": "authorization"}, {"header": "x-api-key"}])
    );
    assert_eq!(config["forwarding"]["header"], "x-user-id");
    let entry = route_entry(&auth);
    assert_eq!(
        entry["request_headers_to_remove"],
        json!(["authorization", "x-api-key"])
    );
    assert!(entry.get("typed_per_filter_config").is_none());
}

#[test]
fn jwt_on_a_route_runs_after_the_router_filter_per_route() {
    let (resources, _) = load(&format!("  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}}]\n  jwt:\n    providers:\n    - name: local\n      issuer: https://issuer.test\n      audiences: [aigw]\n      localJWKS: {{type: Inline, inline: '{JWKS}'}}\n      claimToHeaders: [{{header: x-user-id, claim: sub}}]\n    - name: remote\n      remoteJWKS: {{uri: 'https://jwks.example/keys.json'}}\n"));
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let listener = listener(&auth);
    assert_eq!(
        names(&listener),
        [
            STRIP_IDENTITY,
            WASM_ROUTER,
            ROUTE_JWT,
            "envoy.filters.http.router"
        ]
    );
    let jwt = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][2];
    assert!(
        jwt.get("disabled").is_none(),
        "enabled for every request; the requirement is per route"
    );
    let providers = &jwt["typed_config"]["providers"];
    assert_eq!(
        providers["default/auth/local"]["audiences"],
        json!(["aigw"])
    );
    assert_eq!(
        providers["default/auth/local"]["claim_to_headers"],
        json!([{"header_name": "x-user-id", "claim_name": "sub"}])
    );
    assert_eq!(
        providers["default/auth/remote"]["remote_jwks"]["http_uri"]["cluster"],
        "aigw/jwks/jwks.example:443"
    );
    assert_eq!(
        jwt["typed_config"]["requirement_map"]["default/auth"]["requires_any"]["requirements"],
        json!([{"provider_name": "default/auth/local"}, {"provider_name": "default/auth/remote"}])
    );
    let entry = route_entry(&auth);
    assert_eq!(
        entry["typed_per_filter_config"][ROUTE_JWT]["requirement_name"],
        "default/auth"
    );
    // The JWKS host resolves like a backend and is verified by TLS.
    let cluster = &auth.clusters[0];
    assert_eq!(
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"],
        8443
    );
    assert_eq!(
        cluster["transport_socket"]["typed_config"]["sni"],
        "jwks.example"
    );
    crate::proto::to_any(crate::proto::CLUSTER, cluster).unwrap();
}

#[test]
fn api_key_on_a_route_is_refused_not_skipped() {
    let (resources, _) = load("  targetRefs: [{kind: HTTPRoute, name: r}]\n  apiKeyAuth:\n    credentialRefs: [{name: keys}]\n    extractFrom: [{headers: [x-api-key]}]\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(
        format!("{diagnostics:?}").contains("not supported yet"),
        "{diagnostics:?}"
    );
    assert_eq!(
        names(&listener(&auth)),
        [WASM_ROUTER, "envoy.filters.http.router"]
    );
    assert_eq!(route_entry(&auth)["direct_response"]["status"], 403);
    // Another route is not affected.
    let other = auth.attach("default/other", json!({"route": {"cluster": "c"}}));
    assert_eq!(other, json!({"route": {"cluster": "c"}}));
}

#[test]
fn unenforceable_policies_refuse_and_name_no_key() {
    for (policy, want) in [
        (
            "  apiKeyAuth:\n    credentialRefs: [{name: missing}]\n    extractFrom: [{headers: [x-api-key]}]\n",
            "Secret default/missing does not exist",
        ),
        (
            "  extAuth: {http: {backendRefs: [{name: authz}]}}\n",
            "spec.extAuth is not supported yet",
        ),
        (
            "  jwt: {providers: [{name: p, localJWKS: {type: ValueRef, valueRef: {name: cm}}}]}\n",
            "only localJWKS type Inline",
        ),
    ] {
        let (resources, _) = load(&format!("  targetRefs: [{{kind: Gateway, name: gw}}]\n{policy}"));
        let (auth, diagnostics) = translate(&resources);
        let text = format!("{diagnostics:?}");
        assert!(text.contains(want) && text.contains("refused"), "{text}");
        let entry = route_entry(&auth);
        assert_eq!(entry["direct_response"]["status"], 403, "{entry}");
        assert!(entry.get("route").is_none());
    }
    // The same key for two clients is refused without quoting the key.
    let mut resources = load("  targetRefs: [{kind: Gateway, name: gw}]\n  apiKeyAuth:\n    credentialRefs: [{name: keys}]\n    extractFrom: [{headers: [x-api-key]}]\n").0;
    resources.secrets[0]
        .spec
        .values
        .insert("carol".into(), "key-alice-123".into());
    let (_, diagnostics) = translate(&resources);
    let text = format!("{diagnostics:?}");
    assert!(
        text.contains("the same API key") && !text.contains("key-alice-123"),
        "{text}"
    );
}

#[test]
fn policies_for_other_targets_do_nothing() {
    let (resources, _) = load("  targetRefs: [{kind: Gateway, name: other}]\n  apiKeyAuth:\n    credentialRefs: [{name: keys}]\n    extractFrom: [{headers: [x-api-key]}]\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(auth.is_empty() && diagnostics.is_empty());
}
