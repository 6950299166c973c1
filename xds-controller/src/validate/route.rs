//! AIGatewayRoute: parentRefs, rules (at most 15, unique names, the
//! reserved `route-not-found`), backendRefs to AIServiceBackends or to one
//! InferencePool, header matches and llmRequestCosts.

use super::{check_parent_refs, has, Checker, Reason};
use serde_json::{Map, Value};

const MAX_RULES: usize = 15;
const RESERVED_RULE_NAME: &str = "route-not-found";
const INFERENCE_GROUP: &str = "inference.networking.k8s.io";
const HEADER_MATCH_TYPES: &[&str] = &["Exact", "RegularExpression"];
const COST_TYPES: &[&str] = &[
    "OutputToken",
    "InputToken",
    "CachedInputToken",
    "CacheCreationInputToken",
    "TotalToken",
    "CEL",
];

pub(super) fn check(spec: &Map<String, Value>, checker: &mut Checker) {
    let parents = checker.items(spec, "parentRefs", "spec.parentRefs", 0, 16);
    check_parent_refs(parents, "spec.parentRefs", checker);

    checker.required_list(spec, "rules", "spec.rules");
    let rules = checker.items(spec, "rules", "spec.rules", 0, MAX_RULES);
    let mut names = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let Some(rule) = checker.object(Some(rule), &path) else {
            continue;
        };
        if let Some(name) = checker.string(rule.get("name"), &format!("{path}.name")) {
            names.push(name);
        }
        check_rule(rule, &path, checker);
    }
    let unique = names
        .iter()
        .enumerate()
        .all(|(i, name)| !names[..i].contains(name));
    if !unique {
        checker.rule_on_array("spec.rules", "rule name must be unique within the route");
    }

    let costs = checker.items(spec, "llmRequestCosts", "spec.llmRequestCosts", 0, 36);
    for (i, cost) in costs.iter().enumerate() {
        let path = format!("spec.llmRequestCosts[{i}]");
        let Some(cost) = checker.object(Some(cost), &path) else {
            continue;
        };
        checker.min_length(cost, "metadataKey", &format!("{path}.metadataKey"), 1, true);
        checker.enumeration(cost, "type", &format!("{path}.type"), COST_TYPES, true);
        checker.string(cost.get("cel"), &format!("{path}.cel"));
    }
}

fn check_rule(rule: &Map<String, Value>, path: &str, checker: &mut Checker) {
    if rule.get("name").and_then(Value::as_str) == Some(RESERVED_RULE_NAME) {
        checker.rule_on_object(path, &format!("rule name {RESERVED_RULE_NAME} is reserved"));
    }

    let matches_path = format!("{path}.matches");
    let matches = checker.items(rule, "matches", &matches_path, 0, 128);
    for (j, m) in matches.iter().enumerate() {
        let match_path = format!("{matches_path}[{j}]");
        let Some(m) = checker.object(Some(m), &match_path) else {
            continue;
        };
        let headers_path = format!("{match_path}.headers");
        let headers = checker.items(m, "headers", &headers_path, 0, 16);
        for (k, header) in headers.iter().enumerate() {
            let header_path = format!("{headers_path}[{k}]");
            let Some(header) = checker.object(Some(header), &header_path) else {
                continue;
            };
            checker.min_length(header, "name", &format!("{header_path}.name"), 1, true);
            checker.enumeration(
                header,
                "type",
                &format!("{header_path}.type"),
                HEADER_MATCH_TYPES,
                false,
            );
            checker.string(header.get("value"), &format!("{header_path}.value"));
        }
    }

    let refs_path = format!("{path}.backendRefs");
    let refs = checker.items(rule, "backendRefs", &refs_path, 0, 128);
    // (has group, has kind) per reference; an InferencePool reference has both.
    let mut shapes = Vec::new();
    for (j, reference) in refs.iter().enumerate() {
        let ref_path = format!("{refs_path}[{j}]");
        let Some(reference) = checker.object(Some(reference), &ref_path) else {
            continue;
        };
        checker.min_length(reference, "name", &format!("{ref_path}.name"), 1, true);
        let group = checker.string(reference.get("group"), &format!("{ref_path}.group"));
        let kind = checker.string(reference.get("kind"), &format!("{ref_path}.kind"));
        if let Some(weight) = reference.get("weight") {
            if !weight.is_null() && !weight.is_u64() && !weight.is_i64() {
                checker.push(
                    &format!("{ref_path}.weight"),
                    Reason::Invalid {
                        value: super::quote(super::type_name(weight)),
                        detail: format!(
                            "{ref_path}.weight in body must be of type integer: {}",
                            super::quote(super::type_name(weight))
                        ),
                    },
                );
            }
        }
        shapes.push((has(reference, "group"), has(reference, "kind")));
        match (group, kind) {
            (Some(group), Some(kind)) => {
                if group != INFERENCE_GROUP || kind != "InferencePool" {
                    checker.rule_on_object(
                        &ref_path,
                        "only InferencePool from inference.networking.k8s.io group is supported",
                    );
                }
            }
            (None, None) => {}
            _ => checker.rule_on_object(&ref_path, "group and kind must be specified together"),
        }
    }
    if !shapes.is_empty() {
        let pool = |&(g, k): &(bool, bool)| g && k;
        let plain = |&(g, k): &(bool, bool)| !g && !k;
        if !(shapes.iter().all(plain) || shapes.iter().all(pool)) {
            checker.rule_on_object(
                path,
                "cannot mix InferencePool and AIServiceBackend references in the same rule",
            );
        }
        if shapes.iter().any(pool) && refs.len() != 1 {
            checker.rule_on_object(path, "only one InferencePool backend is allowed per rule");
        }
    }
}
