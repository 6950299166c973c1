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
    let (resources, _) = load(&format!("  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}}]\n  jwt:\n    providers:\n    - name: local\n      issuer: https://issuer.test\n      audiences: [aigw]\n      localJWKS: {{type: Inline, inline: '{JWKS}'}}\n      claimToHeaders: [{{header: x-user-id, claim: sub}}]\n    - name: remote\n      remoteJWKS: {{uri: 'https://jwks.example/keys.json', cacheDuration: 90s}}\n"));
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
        providers["default/auth/remote"]["remote_jwks"]["cache_duration"],
        "90s"
    );
    assert_eq!(
        providers["default/auth/local"]["local_jwks"]["inline_string"],
        JWKS
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
fn api_key_on_a_route_is_skipped_unless_the_request_can_be_that_routes() {
    let (resources, _) = load("  targetRefs: [{kind: HTTPRoute, name: r}, {kind: AIGatewayRoute, name: m}]\n  apiKeyAuth:\n    credentialRefs: [{name: keys}]\n    extractFrom: [{headers: [x-api-key]}]\n    forwardClientIDHeader: x-user-id\n---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {name: m}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - matches:\n    - headers: [{name: x-ai-eg-model, value: gpt}]\n    - headers: [{name: X-AI-EG-Model, type: RegularExpression, value: 'claude-.*'}, {name: x-tier, value: gold}]\n    backendRefs: [{name: b}]\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let instance = format!("{ROUTE_API_KEY_PREFIX}default/auth");
    let listener = listener(&auth);
    assert_eq!(
        names(&listener),
        [
            STRIP_IDENTITY,
            WASM_ROUTER,
            instance.as_str(),
            "envoy.filters.http.router"
        ]
    );
    // Route r matches every request, so the filter always runs.
    let filter = &http_filter(&listener, &instance)["typed_config"];
    assert_eq!(filter["@type"], API_KEY_TYPE);
    assert_eq!(filter["forwarding"]["header"], "x-user-id");
    let entry = route_entry(&auth);
    assert!(entry.get("direct_response").is_none());
    assert_eq!(entry["request_headers_to_remove"], json!(["x-api-key"]));

    // Only route m: skipped unless the headers match one of m's rules.
    let predicate = route_predicate(&resources.ai_gateway_routes[1].spec).unwrap();
    let header = |name: &str, value_match: Value| {
        json!({"single_predicate": {
            "input": {"name": name, "typed_config": {"@type": HEADER_INPUT_TYPE, "header_name": name}},
            "value_match": value_match,
        }})
    };
    assert_eq!(
        predicate,
        json!({"or_matcher": {"predicate": [
            header("x-ai-eg-model", json!({"exact": "gpt"})),
            {"and_matcher": {"predicate": [
                header("x-ai-eg-model", json!({"safe_regex": {"regex": "claude-.*"}})),
                header("x-tier", json!({"exact": "gold"})),
            ]}},
        ]}})
    );
    let mut only_m = auth.clone();
    only_m.routes.remove("default/r");
    let only_m_listener = self::listener(&only_m);
    let wrapped = &http_filter(&only_m_listener, &instance)["typed_config"];
    assert_eq!(wrapped["@type"], EXTENSION_WITH_MATCHER_TYPE);
    assert_eq!(
        wrapped["extension_config"]["typed_config"]["@type"],
        API_KEY_TYPE
    );
    let matcher = &wrapped["xds_matcher"]["matcher_list"]["matchers"][0];
    assert_eq!(matcher["predicate"], json!({"not_matcher": predicate}));
    assert_eq!(
        matcher["on_match"]["action"]["typed_config"]["@type"],
        SKIP_FILTER_TYPE
    );
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
            "  jwt: {providers: [{name: p, remoteJWKS: {uri: 'https://idp/keys', cacheDuration: 10ms}}]}\n",
            "not a duration of at least 1s",
        ),
        (
            "  basicAuth: {users: {name: htpasswd}}\n",
            "spec.basicAuth is not supported yet",
        ),
        (
            "  extAuth: {http: {backendRefs: [{name: authz, port: 80}]}, grpc: {backendRefs: [{name: authz, port: 80}]}}\n",
            "exactly one of grpc and http",
        ),
        (
            "  extAuth: {http: {}}\n",
            "names no authorization service",
        ),
        (
            "  extAuth: {http: {backendRefs: [{name: missing, kind: Backend, group: gateway.envoyproxy.io}]}}\n",
            "Backend default/missing does not exist",
        ),
        (
            "  extAuth: {http: {backendRefs: [{name: authz}]}}\n",
            "a Service backendRef needs a port",
        ),
        (
            "  extAuth: {timeout: soon, grpc: {backendRefs: [{name: authz, port: 9000}]}}\n",
            "is not a duration",
        ),
        (
            "  jwt: {providers: [{name: p, localJWKS: {type: ValueRef, valueRef: {name: cm}}}]}\n",
            "ConfigMap default/cm does not exist",
        ),
        (
            "  jwt: {providers: [{name: p, localJWKS: {type: ValueRef, valueRef: {name: cm}}}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {jwks: not-json}\n",
            "is not a JWKS",
        ),
        (
            "  jwt: {providers: [{name: p, localJWKS: {type: Inline}}]}\n",
            "localJWKS needs type Inline with inline",
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

fn http_filter<'a>(listener: &'a Value, name: &str) -> &'a Value {
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no filter {name} in {listener}"))
}

const AUTHZ_BACKEND: &str = "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: authz}\nspec: {endpoints: [{fqdn: {hostname: authz.internal, port: 9001}}]}\n";

#[test]
fn http_ext_auth_on_the_gateway_checks_once_routed_and_owns_its_headers() {
    let (resources, _) = load(&format!("  targetRefs: [{{kind: Gateway, name: gw}}]\n  extAuth:\n    http:\n      backendRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: authz}}]\n      path: /check/\n      headersToBackend: [X-User-Id, x-tier]\n    headersToExtAuth: [x-team-token, content-type, anthropic-version]\n    bodyToExtAuth: {{maxRequestBytes: 4096}}\n    timeout: 250ms\n{AUTHZ_BACKEND}"));
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let listener = listener(&auth);
    assert_eq!(
        names(&listener),
        [
            STRIP_IDENTITY,
            WASM_ROUTER,
            GATEWAY_EXT_AUTH,
            "envoy.filters.http.router"
        ]
    );
    // The service's identity headers are removed from every client request first.
    assert_eq!(
        http_filter(&listener, STRIP_IDENTITY)["typed_config"]["mutations"]["request_mutations"],
        json!([{"remove": "x-tier"}, {"remove": "x-user-id"}])
    );
    let config = &http_filter(&listener, GATEWAY_EXT_AUTH)["typed_config"];
    assert_eq!(config["failure_mode_allow"], false);
    assert_eq!(config["status_on_error"]["code"], "ServiceUnavailable");
    assert_eq!(
        config["with_request_body"],
        json!({"max_request_bytes": 4096, "allow_partial_message": false})
    );
    assert_eq!(
        config["allowed_headers"]["patterns"],
        json!([
            {"exact": "x-team-token", "ignore_case": true},
            {"exact": "content-type", "ignore_case": true},
            {"exact": "anthropic-version", "ignore_case": true},
        ])
    );
    let http = &config["http_service"];
    assert_eq!(http["path_prefix"], "/check");
    assert_eq!(
        http["server_uri"],
        json!({"uri": "http://authz.internal:9001", "cluster": "aigw/extauth/default/auth", "timeout": "0.250s"})
    );
    assert_eq!(
        http["authorization_response"]["allowed_upstream_headers"]["patterns"],
        json!([{"exact": "x-user-id", "ignore_case": true}, {"exact": "x-tier", "ignore_case": true}])
    );
    assert!(config.get("grpc_service").is_none());
    // The gateway credential headers never go to the provider; headers the
    // provider needs stay.
    assert_eq!(
        route_entry(&auth)["request_headers_to_remove"],
        json!(["authorization", "x-team-token"])
    );
    let cluster = &auth.clusters[0];
    assert_eq!(cluster["name"], "aigw/extauth/default/auth");
    assert!(cluster.get("transport_socket").is_none());
    assert_eq!(
        cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"],
        json!({"http_protocol_options": {}})
    );
    crate::proto::to_any(crate::proto::CLUSTER, cluster).unwrap();
}

#[test]
fn grpc_ext_auth_on_a_route_runs_after_the_router_filter_and_only_there() {
    // A Service on 443 is reached over TLS, offering HTTP/2 (gRPC).
    let (resources, _) = load("  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: r}]\n  extAuth:\n    failOpen: true\n    grpc:\n      backendRefs: [{name: authz, namespace: auth, port: 443, weight: 3}]\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let listener = listener(&auth);
    let instance = format!("{ROUTE_EXT_AUTH_PREFIX}default/auth");
    assert_eq!(
        names(&listener),
        [WASM_ROUTER, instance.as_str(), "envoy.filters.http.router"]
    );
    let config = &http_filter(&listener, &instance)["typed_config"];
    assert_eq!(config["failure_mode_allow"], true);
    assert_eq!(
        config["grpc_service"],
        json!({"envoy_grpc": {"cluster_name": "aigw/extauth/default/auth", "authority": "authz.auth.svc.cluster.local:443"}, "timeout": "10s"})
    );
    assert!(
        config.get("allowed_headers").is_none(),
        "gRPC gets every header by default"
    );
    // Enabled on the targeted route, switched off on any other.
    let entry = route_entry(&auth);
    assert!(entry.get("typed_per_filter_config").is_none(), "{entry}");
    assert_eq!(entry["request_headers_to_remove"], json!(["authorization"]));
    let other = auth.attach(
        "default/other",
        json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}),
    );
    assert_eq!(
        other["typed_per_filter_config"][&instance],
        json!({"@type": ext_auth::EXT_AUTHZ_ROUTE_TYPE, "disabled": true})
    );
    let route =
        json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [other]}]});
    crate::proto::to_any(crate::proto::ROUTE, &route).unwrap();
    let cluster = &auth.clusters[0];
    let endpoint = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
    assert_eq!(endpoint["load_balancing_weight"], 3);
    assert_eq!(
        cluster["transport_socket"]["typed_config"]["sni"],
        "authz.auth.svc.cluster.local"
    );
    assert_eq!(
        cluster["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"],
        json!(["h2", "http/1.1"])
    );
    assert_eq!(
        cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
    crate::proto::to_any(crate::proto::CLUSTER, cluster).unwrap();
}

#[test]
fn ext_auth_service_named_by_a_backend_tls_policy_gets_tls() {
    let (resources, _) = load("  targetRefs: [{kind: Gateway, name: gw}]\n  extAuth:\n    http: {backendRef: {name: authz, port: 8443}}\n---\napiVersion: gateway.networking.k8s.io/v1alpha3\nkind: BackendTLSPolicy\nmetadata: {name: authz-tls}\nspec:\n  targetRefs: [{group: '', kind: Service, name: authz}]\n  validation: {hostname: authz.example, wellKnownCACertificates: System}\n");
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let tls = &auth.clusters[0]["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "authz.example");
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        "/ca.pem"
    );
    assert_eq!(
        tls["common_tls_context"]["alpn_protocols"],
        json!(["http/1.1"])
    );
    crate::proto::to_any(crate::proto::CLUSTER, &auth.clusters[0]).unwrap();
}

#[test]
fn jwt_and_ext_auth_in_one_policy_check_the_token_first() {
    let (resources, _) = load(&format!("  targetRefs: [{{kind: Gateway, name: gw}}]\n  jwt:\n    providers:\n    - name: local\n      localJWKS: {{type: Inline, inline: '{JWKS}'}}\n      claimToHeaders: [{{header: x-sub, claim: sub}}]\n  extAuth:\n    grpc: {{backendRefs: [{{name: authz, port: 9000}}]}}\n"));
    let (auth, diagnostics) = translate(&resources);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(
        names(&listener(&auth)),
        [
            STRIP_IDENTITY,
            GATEWAY_JWT,
            WASM_ROUTER,
            GATEWAY_EXT_AUTH,
            "envoy.filters.http.router"
        ]
    );
}

#[test]
fn local_jwks_from_a_config_map() {
    for data in [
        format!("{{jwks: '{JWKS}'}}"),
        format!("{{other.json: '{JWKS}'}}"),
    ] {
        let (resources, _) = load(&format!("  targetRefs: [{{kind: Gateway, name: gw}}]\n  jwt:\n    providers:\n    - name: cm\n      localJWKS: {{type: ValueRef, valueRef: {{group: '', kind: ConfigMap, name: keys}}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keys}}\ndata: {data}\n"));
        let (auth, diagnostics) = translate(&resources);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let listener = listener(&auth);
        assert_eq!(
            http_filter(&listener, GATEWAY_JWT)["typed_config"]["providers"]["default/auth/cm"]
                ["local_jwks"]["inline_string"],
            JWKS
        );
    }
}
