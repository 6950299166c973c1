//! MCPRoute: Gateway parents, uniquely named MCP backends, tool selectors,
//! backend API keys, OAuth JWKS and authorization rules.

use super::{check_parent_refs, has, Checker};
use serde_json::{Map, Value};

pub(super) fn check(spec: &Map<String, Value>, checker: &mut Checker) {
    checker.required_list(spec, "parentRefs", "spec.parentRefs");
    let parents = checker.items(spec, "parentRefs", "spec.parentRefs", 1, 16);
    check_parent_refs(parents, "spec.parentRefs", checker);
    checker.max_length(spec, "path", "spec.path", 1024);
    checker.items(spec, "headers", "spec.headers", 0, 16);

    checker.required_list(spec, "backendRefs", "spec.backendRefs");
    let backends = checker.items(spec, "backendRefs", "spec.backendRefs", 1, 256);
    let mut names = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        let path = format!("spec.backendRefs[{i}]");
        let Some(backend) = checker.object(Some(backend), &path) else {
            continue;
        };
        // CEL compares every entry's name, unset ones included.
        names.push(backend.get("name").and_then(Value::as_str));
        check_backend(backend, &path, checker);
    }
    let unique = names
        .iter()
        .enumerate()
        .all(|(i, name)| !names[..i].contains(name));
    if !unique {
        checker.rule_on_array("spec.backendRefs", "all backendRefs names must be unique");
    }

    if let Some(policy) = checker.object(spec.get("securityPolicy"), "spec.securityPolicy") {
        check_security_policy(policy, checker);
    }
}

fn check_backend(backend: &Map<String, Value>, path: &str, checker: &mut Checker) {
    checker.min_length(backend, "name", &format!("{path}.name"), 1, true);
    checker.max_length(backend, "path", &format!("{path}.path"), 1024);

    let selector_path = format!("{path}.toolSelector");
    if let Some(selector) = checker.object(backend.get("toolSelector"), &selector_path) {
        let set = |key: &str| has(selector, key);
        if !(set("include") || set("includeRegex") || set("exclude") || set("excludeRegex")) {
            checker.rule_on_object(
                &selector_path,
                "at least one of include, includeRegex, exclude, or excludeRegex must be specified",
            );
        }
        if set("include") && set("includeRegex") {
            checker.rule_on_object(
                &selector_path,
                "include and includeRegex are mutually exclusive",
            );
        }
        if set("exclude") && set("excludeRegex") {
            checker.rule_on_object(
                &selector_path,
                "exclude and excludeRegex are mutually exclusive",
            );
        }
        for key in ["include", "includeRegex", "exclude", "excludeRegex"] {
            let list_path = format!("{selector_path}.{key}");
            for (i, item) in checker
                .array(selector.get(key), &list_path)
                .unwrap_or(&[])
                .iter()
                .enumerate()
            {
                checker.string(Some(item), &format!("{list_path}[{i}]"));
            }
        }
    }

    let policy_path = format!("{path}.securityPolicy");
    let Some(policy) = checker.object(backend.get("securityPolicy"), &policy_path) else {
        return;
    };
    let key_path = format!("{policy_path}.apiKey");
    if let Some(key) = checker.object(policy.get("apiKey"), &key_path) {
        if has(key, "secretRef") == has(key, "inline") {
            checker.rule_on_object(&key_path, "exactly one of secretRef or inline must be set");
        }
        if has(key, "header") && has(key, "queryParam") {
            checker.rule_on_object(&key_path, "only one of header or queryParam can be set");
        }
        checker.string(key.get("inline"), &format!("{key_path}.inline"));
        checker.string(key.get("header"), &format!("{key_path}.header"));
        checker.string(key.get("queryParam"), &format!("{key_path}.queryParam"));
    }
}

fn check_security_policy(policy: &Map<String, Value>, checker: &mut Checker) {
    let base = "spec.securityPolicy";
    let oauth_path = format!("{base}.oauth");
    if let Some(oauth) = checker.object(policy.get("oauth"), &oauth_path) {
        let jwks_path = format!("{oauth_path}.jwks");
        if let Some(jwks) = checker.object(oauth.get("jwks"), &jwks_path) {
            let (remote, local) = (has(jwks, "remoteJWKS"), has(jwks, "localJWKS"));
            if !remote && !local {
                checker.rule_on_object(
                    &jwks_path,
                    "either remoteJWKS or localJWKS must be specified.",
                );
            }
            if remote && local {
                checker.rule_on_object(
                    &jwks_path,
                    "remoteJWKS and localJWKS cannot both be specified.",
                );
            }
        }
    }

    let authz_path = format!("{base}.authorization");
    let Some(authz) = checker.object(policy.get("authorization"), &authz_path) else {
        return;
    };
    let rules_path = format!("{authz_path}.rules");
    let rules = checker
        .array(authz.get("rules"), &rules_path)
        .unwrap_or(&[]);
    let mut uses_jwt = false;
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{rules_path}[{i}]");
        let Some(rule) = checker.object(Some(rule), &rule_path) else {
            continue;
        };
        let source_path = format!("{rule_path}.source");
        let Some(source) = checker.object(rule.get("source"), &source_path) else {
            continue;
        };
        let jwt_path = format!("{source_path}.jwt");
        let Some(jwt) = checker.object(source.get("jwt"), &jwt_path) else {
            continue;
        };
        uses_jwt = true;
        if !has(jwt, "scopes") && !has(jwt, "claims") {
            checker.rule_on_object(&jwt_path, "either scopes or claims must be specified");
        }
        let claims_path = format!("{jwt_path}.claims");
        let claims = checker
            .array(jwt.get("claims"), &claims_path)
            .unwrap_or(&[]);
        let reserved = claims
            .iter()
            .any(|claim| claim.get("name").and_then(Value::as_str) == Some("scope"));
        if reserved {
            checker.rule_on_array(
                &claims_path,
                "'scope' claim name is reserved for OAuth scopes",
            );
        }
    }
    if uses_jwt && !has(policy, "oauth") {
        checker.rule_on_object(
            base,
            "oauth must be configured when any authorization rule uses a jwt source",
        );
    }
}
