//! Client authentication: Envoy Gateway's `SecurityPolicy` -> Envoy's own
//! auth filters. Pure.
//!
//! * `apiKeyAuth` -> `envoy.filters.http.api_key_auth`. The keys (from the
//!   `credentialRefs` Secrets: key = client id, value = API key) are sent to
//!   Envoy inline, in the filter's `credentials` field, which Envoy's schema
//!   marks `(udpa.annotations.sensitive)`: `/config_dump` prints every key and
//!   client of it as `[redacted]` (checked end to end). They never appear in
//!   a diagnostic either.
//! * `jwt` -> `envoy.filters.http.jwt_authn`, local (inline) or remote JWKS
//!   (a cluster per JWKS host, TLS for https; fetched when the listener
//!   starts and again every `remoteJWKS.cacheDuration`, default 300 s, so a
//!   rotated key is accepted within that time), issuer, audiences,
//!   `claimToHeaders`.
//! * `extAuth` -> `envoy.filters.http.ext_authz` (HTTP or gRPC service, see
//!   `ext_auth.rs`), after `api_key_auth` and `jwt_authn` of the same policy
//!   (so a JWT's claim headers can be sent to the service). Envoy's
//!   ext_authz does nothing on a request that has no route yet, and before
//!   the wasm router filter has read the model there is none: so ext_authz
//!   always runs right after the router filter (and the route `jwt_authn`),
//!   even for a Gateway policy, with the Gateway's first. The body has been
//!   read by then, and an unknown model (404) and `GET /v1/models` are
//!   answered by the router filter before the check.
//! * `basicAuth`, `oidc` and `authorization` are not translated yet: a policy
//!   that asks for one (or that has any other error) refuses every request on
//!   its target with 403 rather than letting clients in unchecked.
//!
//! Where the filters run:
//! * A policy on the **Gateway** runs first on the listener, before the wasm
//!   router filter (no body is read for a client that is refused) and before
//!   the ratelimit filter.
//! * A policy on an **AIGatewayRoute** (`kind: AIGatewayRoute` or
//!   `HTTPRoute`) can only be chosen once the model in the body is known, so
//!   it runs right after the wasm router filter (which sets `x-ai-eg-model`
//!   and re-selects the route) and still before the ratelimit filter: a
//!   separate `jwt_authn` instance whose requirement is looked up per route
//!   when it runs. Running it earlier (or enabling a disabled filter per
//!   route, which Envoy decides before the body is read) would let a client
//!   pick the route with a forged `x-ai-eg-model` header. A route's policy
//!   adds to the Gateway's (both must pass) instead of replacing it, for the
//!   same reason. `apiKeyAuth` on a route: Envoy's api_key_auth filter has
//!   no pass-through default, so each policy's instance (after the route
//!   `jwt_authn`) is wrapped in an `ExtensionWithMatcher` that skips it
//!   unless the request's headers, as the router filter left them, satisfy
//!   the header matches of a route the policy targets. This is conservative:
//!   a request that an earlier, untargeted route serves but that also
//!   satisfies a targeted route's matches must carry a key too.
//!   `extAuth` on a route: one `ext_authz` instance per policy after the
//!   route `jwt_authn`, switched off (`ExtAuthzPerRoute.disabled`) on every
//!   route the policy does not target. The filter reads that per-route
//!   setting when it runs, i.e. from the route chosen by the model in the
//!   body (a forged `x-ai-eg-model` header does not skip it; tested end to
//!   end).
//!
//! Identities: the header a policy writes the authenticated identity to
//! (`apiKeyAuth.forwardClientIDHeader`, `jwt.providers[].claimToHeaders[].header`,
//! `extAuth.http.headersToBackend`) is an *identity header*. It is removed from every client request on the
//! listener before any auth filter runs, then set by the auth filter; so
//! `forwardClientIDHeader: x-user-id` makes the per-user rate limits (and the
//! access log's `user_id`) key on the API key's client id, and a client that
//! sends its own `x-user-id` is still counted under its own identity.
//!
//! The credential headers a policy reads are removed from the request sent
//! upstream (route `request_headers_to_remove`), on top of the filter's own
//! removal of `authorization` / `x-api-key` / `api-key`; a JWT is not
//! forwarded (`forward: false`). For `extAuth` these are `authorization` and
//! the `headersToExtAuth` headers a provider does not need.

use super::envoy;
use crate::error::{AttachmentReason, AttachmentTarget, Diagnostic};
use crate::resources::{AIGatewayRouteSpec, GatewaySpec, Named, Resources, TargetRef};
pub use ext_auth::ExtAuthSpec;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const API_KEY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth";
const JWT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const JWT_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
const HEADER_MUTATION_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";

/// Names of the filter instances on the listener.
pub const STRIP_IDENTITY: &str = "aigw.auth.strip_identity";
pub const GATEWAY_API_KEY: &str = "aigw.auth.gateway.api_key_auth";
pub const GATEWAY_JWT: &str = "aigw.auth.gateway.jwt_authn";
pub const ROUTE_JWT: &str = "aigw.auth.route.jwt_authn";
pub const GATEWAY_EXT_AUTH: &str = "aigw.auth.gateway.ext_authz";
/// Route-level api_key_auth instances are named this plus the policy key.
pub const ROUTE_API_KEY_PREFIX: &str = "aigw.auth.route.api_key_auth/";
/// Route-level ext_authz instances are named this plus the policy key.
pub const ROUTE_EXT_AUTH_PREFIX: &str = "aigw.auth.route.ext_authz/";
/// The wasm router filter's name; route-level auth goes right after it.
const WASM_ROUTER: &str = "aigw.router";

/// Envoy Gateway's SecurityPolicy (gateway.envoyproxy.io/v1alpha1).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityPolicySpec {
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub api_key_auth: Option<ApiKeyAuthSpec>,
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    #[serde(default)]
    pub ext_auth: Option<ExtAuthSpec>,
    #[serde(default)]
    pub basic_auth: Option<Value>,
    #[serde(default)]
    pub oidc: Option<Value>,
    #[serde(default)]
    pub authorization: Option<Value>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuthSpec {
    #[serde(default)]
    pub credential_refs: Vec<TargetRef>,
    #[serde(default)]
    pub extract_from: Vec<ExtractFrom>,
    #[serde(default, rename = "forwardClientIDHeader")]
    pub forward_client_id_header: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExtractFrom {
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    #[serde(default)]
    pub optional: Option<bool>,
    #[serde(default)]
    pub providers: Vec<JwtProviderSpec>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct JwtProviderSpec {
    pub name: String,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, rename = "remoteJWKS")]
    pub remote_jwks: Option<RemoteJwksSpec>,
    #[serde(default, rename = "localJWKS")]
    pub local_jwks: Option<LocalJwksSpec>,
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwksSpec {
    pub uri: String,
    /// How long Envoy keeps the fetched JWKS before fetching it again
    /// (default 300 s): a rotated key is accepted within this time.
    #[serde(default)]
    pub cache_duration: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalJwksSpec {
    #[serde(default, rename = "type")]
    pub jwks_type: Option<String>,
    #[serde(default)]
    pub inline: Option<String>,
    #[serde(default)]
    pub value_ref: Option<TargetRef>,
}

#[derive(Deserialize, Debug, Clone, Default)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// What the environment contributes: where remote JWKS hosts resolve and
/// which CA bundle verifies them.
pub struct Env<'a> {
    pub resolve: &'a BTreeMap<(String, u16), (String, u16)>,
    pub ca_file: &'a str,
}

/// One policy, translated.
#[derive(Debug, Clone, Default, PartialEq)]
struct Translated {
    /// `ApiKeyAuth` / `ApiKeyAuthPerRoute` fields (credentials, key sources, forwarding).
    api_key: Option<Value>,
    /// Provider name -> `JwtProvider`, and the requirement over them.
    jwt_providers: BTreeMap<String, Value>,
    jwt_requirement: Option<Value>,
    /// `ExtAuthz` (without `@type`).
    ext_auth: Option<Value>,
    identity_headers: BTreeSet<String>,
    credential_headers: BTreeSet<String>,
    /// The policy cannot be enforced: its targets refuse every request.
    deny: bool,
}

/// The authentication of one Gateway's listeners.
#[derive(Debug, Clone, Default)]
pub struct GatewayAuth {
    gateway: Option<Translated>,
    /// AIGatewayRoute `namespace/name` -> (policy key, translation).
    routes: BTreeMap<String, (String, Translated)>,
    /// AIGatewayRoute `namespace/name` -> a matcher predicate on the request
    /// headers (after the router filter) that holds for every request the
    /// route can serve; `None`: it can serve any request.
    route_matches: BTreeMap<String, Option<Value>>,
    /// Clusters for remote JWKS hosts and authorization services.
    pub clusters: Vec<Value>,
}

const HEADER_INPUT_TYPE: &str =
    "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput";
const EXTENSION_WITH_MATCHER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher";
const SKIP_FILTER_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter";

/// `xds.type.matcher.v3.Matcher.MatcherList.Predicate` combining `items`
/// with `and_matcher` / `or_matcher` (which need two or more).
fn combine(kind: &str, mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.pop().unwrap_or_default()
    } else {
        json!({ kind: {"predicate": items} })
    }
}

/// A predicate that holds for every request one of the route's rules
/// matches (the same header matches as its Envoy route entries), or `None`
/// when a rule matches every request. Conservative: a request an earlier
/// route takes may satisfy it too.
fn route_predicate(route: &AIGatewayRouteSpec) -> Option<Value> {
    let mut any = Vec::new();
    for rule in &route.rules {
        if rule.matches.is_empty() {
            return None;
        }
        for m in &rule.matches {
            let mut all = Vec::new();
            for h in &m.headers {
                let value_match = match h.match_type.as_deref().unwrap_or("Exact") {
                    "Exact" => json!({"exact": h.value}),
                    "RegularExpression" => json!({"safe_regex": {"regex": h.value}}),
                    // Such a rule is not served; match it anyway.
                    _ => return None,
                };
                let name = h.name.to_ascii_lowercase();
                all.push(json!({"single_predicate": {
                    "input": {"name": name, "typed_config": {"@type": HEADER_INPUT_TYPE, "header_name": name}},
                    "value_match": value_match,
                }}));
            }
            if all.is_empty() {
                return None;
            }
            any.push(combine("and_matcher", all));
        }
    }
    (!any.is_empty()).then(|| combine("or_matcher", any))
}

fn targets(policy: &Named<SecurityPolicySpec>) -> impl Iterator<Item = &TargetRef> {
    policy
        .spec
        .target_refs
        .iter()
        .chain(policy.spec.target_ref.iter())
}

fn targets_gateway(policy: &Named<SecurityPolicySpec>, gateway: &Named<GatewaySpec>) -> bool {
    policy.namespace == gateway.namespace
        && targets(policy)
            .any(|t| t.name == gateway.name && t.kind.as_deref().is_none_or(|k| k == "Gateway"))
}

fn targets_route(policy: &Named<SecurityPolicySpec>, route: &Named<AIGatewayRouteSpec>) -> bool {
    policy.namespace == route.namespace
        && targets(policy).any(|t| {
            t.name == route.name
                && matches!(t.kind.as_deref(), Some("HTTPRoute" | "AIGatewayRoute"))
        })
}

/// The authentication the SecurityPolicies put on `gateway` and on `routes`
/// (the routes attached to it).
pub fn for_gateway<'a>(
    resources: &Resources,
    env: &Env,
    gateway: &Named<GatewaySpec>,
    routes: impl IntoIterator<Item = &'a Named<AIGatewayRouteSpec>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> GatewayAuth {
    let mut out = GatewayAuth::default();
    let mut routes: Vec<&Named<AIGatewayRouteSpec>> = routes.into_iter().collect();
    routes.dedup_by_key(|r| r.key());
    let mut clusters = BTreeMap::new();
    for policy in &resources.security_policies {
        let whole = targets_gateway(policy, gateway);
        let hit: Vec<&&Named<AIGatewayRouteSpec>> =
            routes.iter().filter(|r| targets_route(policy, r)).collect();
        if !whole && hit.is_empty() {
            continue;
        }
        let here = |d: Diagnostic| d.at(format!("SecurityPolicy {}", policy.key()), &policy.source);
        let mut local = Vec::new();
        let translated = translate_policy(resources, env, policy, &mut clusters, &mut local);
        diagnostics.extend(local.into_iter().map(here));
        if whole {
            if out.gateway.is_some() {
                diagnostics.push(here(
                    Diagnostic::warning(format!(
                        "Gateway {} already has a SecurityPolicy; this one is ignored for it",
                        gateway.key()
                    ))
                    .attachment(
                        AttachmentReason::Conflicted,
                        AttachmentTarget::Gateway(gateway.key()),
                    ),
                ));
            } else {
                out.gateway = Some(translated.clone());
            }
        }
        for route in hit {
            if let Some((other, _)) = out.routes.get(&route.key()) {
                diagnostics.push(here(
                    Diagnostic::warning(format!(
                        "AIGatewayRoute {} already has SecurityPolicy {other}; this one is ignored for it",
                        route.key()
                    ))
                    .attachment(
                        AttachmentReason::Conflicted,
                        AttachmentTarget::Route(route.key()),
                    ),
                ));
                continue;
            }
            out.route_matches
                .insert(route.key(), route_predicate(&route.spec));
            out.routes
                .insert(route.key(), (policy.key(), translated.clone()));
        }
    }
    out.clusters = clusters.into_values().collect();
    out
}

fn translate_policy(
    resources: &Resources,
    env: &Env,
    policy: &Named<SecurityPolicySpec>,
    clusters: &mut BTreeMap<String, Value>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Translated {
    let mut out = Translated::default();
    let spec = &policy.spec;
    let refuse =
        |out: &mut Translated, diagnostics: &mut Vec<Diagnostic>, field: &str, message: String| {
            diagnostics.push(
                Diagnostic::error(format!(
                    "{message}; requests on this policy's targets are refused (403)"
                ))
                .field(field.to_string()),
            );
            out.deny = true;
        };
    for (field, present) in [
        ("spec.basicAuth", spec.basic_auth.is_some()),
        ("spec.oidc", spec.oidc.is_some()),
        ("spec.authorization", spec.authorization.is_some()),
    ] {
        if present {
            refuse(
                &mut out,
                diagnostics,
                field,
                format!("{field} is not supported yet"),
            );
        }
    }
    if let Some(api_key) = &spec.api_key_auth {
        match api_key_auth(resources, policy, api_key) {
            Ok(value) => {
                for h in api_key.extract_from.iter().flat_map(|e| &e.headers) {
                    out.credential_headers.insert(h.to_ascii_lowercase());
                }
                if let Some(h) = &api_key.forward_client_id_header {
                    out.identity_headers.insert(h.to_ascii_lowercase());
                }
                out.api_key = Some(value);
            }
            Err((field, message)) => refuse(&mut out, diagnostics, &field, message),
        }
    }
    if let Some(jwt) = &spec.jwt {
        let mut names = Vec::new();
        for (i, provider) in jwt.providers.iter().enumerate() {
            let field = format!("spec.jwt.providers[{i}]");
            match jwt_provider(resources, &policy.namespace, env, provider, clusters) {
                Ok(value) => {
                    let name = format!("{}/{}/{}", policy.namespace, policy.name, provider.name);
                    for c in &provider.claim_to_headers {
                        out.identity_headers.insert(c.header.to_ascii_lowercase());
                    }
                    names.push(name.clone());
                    out.jwt_providers.insert(name, value);
                }
                Err((sub, message)) => {
                    refuse(&mut out, diagnostics, &format!("{field}{sub}"), message)
                }
            }
        }
        if jwt.providers.is_empty() {
            refuse(
                &mut out,
                diagnostics,
                "spec.jwt.providers",
                "jwt needs at least one provider".into(),
            );
        }
        let mut any: Vec<Value> = names.iter().map(|n| json!({"provider_name": n})).collect();
        if jwt.optional == Some(true) {
            any.push(json!({"allow_missing": {}}));
        }
        out.jwt_requirement = match any.len() {
            0 => None,
            1 => any.pop(),
            _ => Some(json!({"requires_any": {"requirements": any}})),
        };
        out.credential_headers.insert("authorization".into());
    }
    if let Some(ext) = &spec.ext_auth {
        match ext_auth::translate(
            resources,
            env,
            &policy.namespace,
            &policy.name,
            ext,
            clusters,
        ) {
            Ok(t) => {
                out.identity_headers.extend(t.identity_headers);
                out.credential_headers.extend(t.credential_headers);
                out.ext_auth = Some(t.config);
            }
            Err((field, message)) => refuse(&mut out, diagnostics, &field, message),
        }
    }
    if spec.api_key_auth.is_none() && spec.jwt.is_none() && spec.ext_auth.is_none() && !out.deny {
        diagnostics.push(Diagnostic::warning(
            "the policy sets no authentication this gateway reads (apiKeyAuth, jwt, extAuth); it has no effect",
        ));
    }
    out
}

/// `ApiKeyAuth` fields. Messages name Secrets and client ids, never a key.
fn api_key_auth(
    resources: &Resources,
    policy: &Named<SecurityPolicySpec>,
    spec: &ApiKeyAuthSpec,
) -> Result<Value, (String, String)> {
    let mut credentials = Vec::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    if spec.credential_refs.is_empty() {
        return Err((
            "spec.apiKeyAuth.credentialRefs".into(),
            "apiKeyAuth needs credentialRefs".into(),
        ));
    }
    for (i, r) in spec.credential_refs.iter().enumerate() {
        let field = format!("spec.apiKeyAuth.credentialRefs[{i}]");
        if r.kind.as_deref().is_some_and(|k| k != "Secret") {
            return Err((field, "only Secrets can hold API keys".into()));
        }
        let namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| policy.namespace.clone());
        let Some(secret) = resources
            .secrets
            .iter()
            .find(|s| s.namespace == namespace && s.name == r.name)
        else {
            return Err((
                field,
                format!("Secret {namespace}/{} does not exist", r.name),
            ));
        };
        for (client, key) in &secret.spec.values {
            // Secrets written from files often end in a newline.
            let key = key.trim();
            if key.is_empty() || client.is_empty() {
                return Err((
                    field,
                    format!(
                        "Secret {namespace}/{}: client {client:?} has an empty key",
                        r.name
                    ),
                ));
            }
            if let Some(other) = keys.insert(key.to_string(), client.clone()) {
                return Err((
                    field,
                    format!("clients {other:?} and {client:?} have the same API key; every key must name one client"),
                ));
            }
            credentials.push(json!({"key": key, "client": client}));
        }
    }
    let mut key_sources = Vec::new();
    for e in &spec.extract_from {
        key_sources.extend(
            e.headers
                .iter()
                .map(|h| json!({"header": h.to_ascii_lowercase()})),
        );
        key_sources.extend(e.params.iter().map(|p| json!({"query": p})));
        key_sources.extend(e.cookies.iter().map(|c| json!({"cookie": c})));
    }
    if key_sources.is_empty() {
        return Err((
            "spec.apiKeyAuth.extractFrom".into(),
            "apiKeyAuth needs extractFrom (headers, params or cookies)".into(),
        ));
    }
    let mut value = json!({"credentials": credentials, "key_sources": key_sources});
    if let Some(h) = &spec.forward_client_id_header {
        value["forwarding"] = json!({"header": h.to_ascii_lowercase(), "hide_credentials": false});
    }
    Ok(value)
}

/// `https://host[:port]/path` -> (tls, host, port).
fn parse_uri(uri: &str) -> Option<(bool, String, u16)> {
    let (tls, rest) = if let Some(r) = uri.strip_prefix("https://") {
        (true, r)
    } else {
        (false, uri.strip_prefix("http://")?)
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    (!host.is_empty()).then(|| (tls, host.to_string(), port))
}

fn jwt_provider(
    resources: &Resources,
    namespace: &str,
    env: &Env,
    spec: &JwtProviderSpec,
    clusters: &mut BTreeMap<String, Value>,
) -> Result<Value, (String, String)> {
    let mut provider = json!({"forward": false});
    if let Some(issuer) = &spec.issuer {
        provider["issuer"] = json!(issuer);
    }
    if !spec.audiences.is_empty() {
        provider["audiences"] = json!(spec.audiences);
    }
    match (&spec.remote_jwks, &spec.local_jwks) {
        (Some(remote), None) => {
            let (tls, host, port) = parse_uri(&remote.uri).ok_or_else(|| {
                (
                    ".remoteJWKS.uri".to_string(),
                    format!("{:?} is not an http(s) URL", remote.uri),
                )
            })?;
            let name = format!("aigw/jwks/{host}:{port}");
            let (address, address_port) = env
                .resolve
                .get(&(host.clone(), port))
                .cloned()
                .unwrap_or((host.clone(), port));
            let mut cluster = json!({
                "name": name,
                "type": "STRICT_DNS",
                "connect_timeout": "5s",
                "dns_lookup_family": "V4_PREFERRED",
                "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": address, "port_value": address_port}},
                }}]}]},
            });
            if tls {
                cluster["transport_socket"] =
                    envoy::upstream_tls(&host, env.ca_file, None, &[("DNS", host.clone())], false);
            }
            clusters.insert(name.clone(), cluster);
            let cache_ms = match &remote.cache_duration {
                None => 300_000,
                Some(text) => super::resilience::parse_duration_ms(text)
                    .filter(|ms| *ms >= 1000)
                    .ok_or_else(|| {
                        (
                            ".remoteJWKS.cacheDuration".to_string(),
                            format!("{text:?} is not a duration of at least 1s, such as 30s or 5m"),
                        )
                    })?,
            };
            provider["remote_jwks"] = json!({
                "http_uri": {"uri": remote.uri, "cluster": name, "timeout": "5s"},
                "cache_duration": super::resilience::envoy_duration_ms(cache_ms),
                "async_fetch": {},
            });
        }
        (None, Some(local)) => {
            let (inline, field) = match (
                local.jwks_type.as_deref().unwrap_or("Inline"),
                &local.inline,
                &local.value_ref,
            ) {
                ("Inline", Some(text), _) => (text, ".localJWKS.inline"),
                ("ValueRef", _, Some(r)) => (
                    jwks_config_map(resources, namespace, r)?,
                    ".localJWKS.valueRef",
                ),
                _ => {
                    return Err((
                        ".localJWKS".into(),
                        "localJWKS needs type Inline with inline, or type ValueRef with valueRef (a ConfigMap)".into(),
                    ))
                }
            };
            if serde_json::from_str::<Value>(inline)
                .map(|v| v.get("keys").is_none())
                .unwrap_or(true)
            {
                return Err((
                    field.into(),
                    "is not a JWKS (a JSON object with keys)".into(),
                ));
            }
            provider["local_jwks"] = json!({"inline_string": inline});
        }
        _ => {
            return Err((
                String::new(),
                "a provider needs exactly one of remoteJWKS and localJWKS".into(),
            ))
        }
    }
    if !spec.claim_to_headers.is_empty() {
        provider["claim_to_headers"] = spec
            .claim_to_headers
            .iter()
            .map(|c| json!({"header_name": c.header.to_ascii_lowercase(), "claim_name": c.claim}))
            .collect();
    }
    Ok(provider)
}

/// The JWKS of a `localJWKS.valueRef`: key `jwks` of a ConfigMap in the
/// policy's namespace, else its only (first) key, as Envoy Gateway reads it.
fn jwks_config_map<'a>(
    resources: &'a Resources,
    namespace: &str,
    r: &TargetRef,
) -> Result<&'a String, (String, String)> {
    let field = ".localJWKS.valueRef".to_string();
    if r.kind.as_deref().is_some_and(|k| k != "ConfigMap") {
        return Err((field, "valueRef must name a ConfigMap".into()));
    }
    let map = resources
        .config_maps
        .iter()
        .find(|m| m.namespace == namespace && m.name == r.name)
        .ok_or_else(|| {
            (
                field.clone(),
                format!("ConfigMap {namespace}/{} does not exist", r.name),
            )
        })?;
    map.spec
        .values
        .get("jwks")
        .or_else(|| map.spec.values.values().next())
        .ok_or_else(|| (field, format!("ConfigMap {} is empty", map.key())))
}

impl GatewayAuth {
    pub fn is_empty(&self) -> bool {
        self.gateway.is_none() && self.routes.is_empty()
    }

    /// Adds the route's auth (per-route filter configs, credential headers
    /// kept from the provider, refusal of a policy that cannot be enforced)
    /// to one Envoy route entry of AIGatewayRoute `route_key`.
    pub fn attach(&self, route_key: &str, mut entry: Value) -> Value {
        let mut strip: BTreeSet<String> = BTreeSet::new();
        let mut deny = false;
        if let Some(g) = &self.gateway {
            strip.extend(g.credential_headers.iter().cloned());
            deny |= g.deny;
        }
        let mine = self.routes.get(route_key);
        if let Some((policy, t)) = mine {
            strip.extend(t.credential_headers.iter().cloned());
            deny |= t.deny;
            if t.jwt_requirement.is_some() {
                entry["typed_per_filter_config"][ROUTE_JWT] =
                    json!({"@type": JWT_ROUTE_TYPE, "requirement_name": policy});
            }
        }
        // Route-level ext_authz instances of other policies are off here.
        for policy in self.route_ext_auth_policies() {
            if mine.is_some_and(|(p, _)| *p == policy) {
                continue;
            }
            entry["typed_per_filter_config"][format!("{ROUTE_EXT_AUTH_PREFIX}{policy}")] =
                json!({"@type": ext_auth::EXT_AUTHZ_ROUTE_TYPE, "disabled": true});
        }
        if deny {
            if let Some(map) = entry.as_object_mut() {
                map.remove("route");
            }
            entry["direct_response"] = json!({"status": 403});
        }
        if !strip.is_empty() {
            let existing = entry["request_headers_to_remove"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut all: Vec<Value> = existing;
            all.extend(strip.into_iter().map(Value::String));
            entry["request_headers_to_remove"] = Value::Array(all);
        }
        entry
    }

    /// Route-level api_key_auth instances: policy key -> (config, predicate
    /// over the routes it targets; `None`: every request).
    fn route_api_keys(&self) -> BTreeMap<String, (Value, Option<Value>)> {
        let mut by_policy: BTreeMap<String, (Value, Vec<Value>, bool)> = BTreeMap::new();
        for (route, (policy, t)) in &self.routes {
            let Some(api_key) = &t.api_key else { continue };
            let entry = by_policy
                .entry(policy.clone())
                .or_insert_with(|| (api_key.clone(), Vec::new(), false));
            match self.route_matches.get(route).cloned().flatten() {
                Some(p) => entry.1.push(p),
                None => entry.2 = true,
            }
        }
        by_policy
            .into_iter()
            .map(|(policy, (config, predicates, always))| {
                let predicate =
                    (!always && !predicates.is_empty()).then(|| combine("or_matcher", predicates));
                (policy, (config, predicate))
            })
            .collect()
    }

    /// Keys of the policies on routes that have an ext_authz instance.
    fn route_ext_auth_policies(&self) -> BTreeSet<String> {
        self.routes
            .values()
            .filter(|(_, t)| t.ext_auth.is_some())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The HTTP filters, in order: identity headers stripped and Gateway
    /// policies first; route policies right after the wasm router filter.
    fn filters(&self) -> (Vec<Value>, Vec<Value>) {
        let mut identity: BTreeSet<&String> = BTreeSet::new();
        let mut first = Vec::new();
        if let Some(g) = &self.gateway {
            identity.extend(&g.identity_headers);
            if let Some(api_key) = &g.api_key {
                let mut config = api_key.clone();
                config["@type"] = json!(API_KEY_TYPE);
                first.push(json!({"name": GATEWAY_API_KEY, "typed_config": config}));
            }
            if let Some(requirement) = &g.jwt_requirement {
                first.push(json!({"name": GATEWAY_JWT, "typed_config": {
                    "@type": JWT_TYPE,
                    "providers": g.jwt_providers,
                    "rules": [{"match": {"prefix": "/"}, "requires": requirement}],
                }}));
            }
        }
        let mut after_router = Vec::new();
        let mut providers = BTreeMap::new();
        let mut requirements = BTreeMap::new();
        let mut ext_auths = BTreeMap::new();
        for (policy, t) in self.routes.values() {
            identity.extend(&t.identity_headers);
            if let Some(r) = &t.jwt_requirement {
                providers.extend(t.jwt_providers.clone());
                requirements.insert(policy.clone(), r.clone());
            }
            if let Some(ext) = &t.ext_auth {
                ext_auths.insert(policy.clone(), ext.clone());
            }
        }
        if !requirements.is_empty() {
            // Enabled on every request: with no rules, a request whose final
            // route names no requirement passes. Not `disabled: true` plus a
            // per-route enable: Envoy decides that from the route chosen
            // before the wasm filter read the model (tested), which a client
            // could pick with a forged x-ai-eg-model header.
            after_router.push(json!({"name": ROUTE_JWT, "typed_config": {
                "@type": JWT_TYPE, "providers": providers, "requirement_map": requirements,
            }}));
        }
        // api_key_auth has no pass-through default, so a route's instance is
        // wrapped in a matcher that skips it unless the request (its headers
        // once the router filter has set x-ai-eg-model) can be served by a
        // route of the policy. Evaluated when the filter runs, not when the
        // stream starts: a forged x-ai-eg-model header does not skip it.
        for (policy, (api_key, predicate)) in self.route_api_keys() {
            let mut config = api_key;
            config["@type"] = json!(API_KEY_TYPE);
            let name = format!("{ROUTE_API_KEY_PREFIX}{policy}");
            let filter = match predicate {
                None => json!({"name": name, "typed_config": config}),
                Some(p) => json!({"name": name, "typed_config": {
                    "@type": EXTENSION_WITH_MATCHER_TYPE,
                    "extension_config": {"name": "envoy.filters.http.api_key_auth", "typed_config": config},
                    "xds_matcher": {"matcher_list": {"matchers": [{
                        "predicate": {"not_matcher": p},
                        "on_match": {"action": {"name": "skip", "typed_config": {"@type": SKIP_FILTER_TYPE}}},
                    }]}},
                }}),
            };
            after_router.push(filter);
        }
        // ext_authz skips a request that has no route yet, and the route is
        // only known once the router filter has read the model: so even the
        // Gateway's runs after it (tested end to end).
        if let Some(ext) = self.gateway.as_ref().and_then(|g| g.ext_auth.as_ref()) {
            let mut config = ext.clone();
            config["@type"] = json!(ext_auth::EXT_AUTHZ_TYPE);
            after_router.push(json!({"name": GATEWAY_EXT_AUTH, "typed_config": config}));
        }
        // Enabled on every request and switched off per route (see
        // `attach`), read from the route chosen after the body.
        for (policy, ext) in ext_auths {
            let mut config = ext;
            config["@type"] = json!(ext_auth::EXT_AUTHZ_TYPE);
            after_router.push(json!({
                "name": format!("{ROUTE_EXT_AUTH_PREFIX}{policy}"),
                "typed_config": config,
            }));
        }
        if !identity.is_empty() {
            let remove: Vec<Value> = identity.into_iter().map(|h| json!({"remove": h})).collect();
            first.insert(
                0,
                json!({"name": STRIP_IDENTITY, "typed_config": {
                    "@type": HEADER_MUTATION_TYPE,
                    "mutations": {"request_mutations": remove},
                }}),
            );
        }
        (first, after_router)
    }

    /// Inserts the auth filters into a listener's HTTP connection manager.
    pub fn add_filters(&self, listener: &mut Value) {
        let (first, after_router) = self.filters();
        let Some(chains) = listener["filter_chains"].as_array_mut() else {
            return;
        };
        for chain in chains {
            let Some(filters) = chain["filters"].as_array_mut() else {
                continue;
            };
            for network_filter in filters {
                let Some(http) = network_filter["typed_config"]["http_filters"].as_array_mut()
                else {
                    continue;
                };
                let at = http
                    .iter()
                    .position(|f| f["name"] == WASM_ROUTER)
                    .map_or(0, |i| i + 1);
                for (i, f) in after_router.iter().enumerate() {
                    http.insert(at + i, f.clone());
                }
                for (i, f) in first.iter().enumerate() {
                    http.insert(i, f.clone());
                }
            }
        }
    }
}

#[path = "ext_auth.rs"]
pub mod ext_auth;

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
