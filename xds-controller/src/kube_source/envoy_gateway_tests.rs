//! deploy/envoy-gateway/ (the filter on an Envoy Gateway data plane) is
//! checked structurally: every document against the OpenAPI schema of its
//! Envoy Gateway CRD (v1.5.0, deploy/envoy-gateway/schemas/, extracted by
//! scripts/eg-crd-schemas.py; CEL rules are not evaluated), the patch
//! values against Envoy's own protos, the filter configurations against the
//! filter's configuration types, and the names that tie the files together.

use aigw_filter::config::{PluginConfig, Role};
use serde::Deserialize;
use serde_json::{json, Value};

fn dir() -> String {
    format!("{}/../deploy/envoy-gateway", env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
                .filter(|v| !v.is_null())
                .map(move |v| (name.clone(), v))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
        .1
}

/// Errors of `value` against an OpenAPI v3 (Kubernetes structural) schema:
/// types, unknown fields, required fields, enums, patterns, lengths.
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    for part in schema["allOf"].as_array().into_iter().flatten() {
        check(part, value, path, errors);
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none()
    {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_string()) {
            errors.push(format!(
                "{path}: {value} is neither an integer nor a string"
            ));
        }
        return;
    }
    let Some(kind) = schema["type"].as_str() else {
        return;
    };
    let fits = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !fits {
        errors.push(format!("{path}: {value} is not of type {kind}"));
        return;
    }
    match value {
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(required.as_str().unwrap()) {
                    errors.push(format!("{path}: {required} is required"));
                }
            }
            for (key, child) in map {
                let at = format!("{path}.{key}");
                match (
                    schema["properties"].get(key),
                    &schema["additionalProperties"],
                ) {
                    (Some(property), _) => check(property, child, &at, errors),
                    (None, additional) if additional.is_object() => {
                        check(additional, child, &at, errors)
                    }
                    _ if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                    _ => errors.push(format!("{at}: unknown field")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(text) => {
            if let Some(pattern) = schema["pattern"].as_str() {
                let re = regex::Regex::new(pattern)
                    .unwrap_or_else(|e| panic!("{path}: pattern {pattern}: {e}"));
                if !re.is_match(text) {
                    errors.push(format!("{path}: {text:?} does not match {pattern}"));
                }
            }
            let length = text.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|max| length > max)
                || schema["minLength"].as_u64().is_some_and(|min| length < min)
            {
                errors.push(format!("{path}: length {length} out of bounds"));
            }
        }
        _ => {}
    }
}

fn schema(plural: &str) -> Value {
    let path = format!("{}/schemas/{plural}.json", dir());
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn the_schema_check_finds_what_the_api_server_would_refuse() {
    let crd = schema("envoypatchpolicies");
    let spec = &crd["openAPIV3Schema"]["properties"]["spec"];
    let good = json!({"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
                      "type": "JSONPatch",
                      "jsonPatches": [{"type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "c",
                                       "operation": {"op": "add", "path": "/x", "value": {"any": ["thing"]}}}]});
    let mut errors = Vec::new();
    check(spec, &good, "spec", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let table = [
        ("/type", json!("StrategicMerge"), "is not one of"),
        ("/targetRef/kind", json!("bad kind"), "does not match"),
        (
            "/jsonPatches/0/operation/op",
            json!("merge"),
            "is not one of",
        ),
        (
            "/jsonPatches/0/operation/jsonpath",
            json!("$"),
            "unknown field",
        ),
        ("/priority", json!("high"), "is not of type integer"),
    ];
    for (pointer, value, expected) in table {
        let mut bad = good.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        bad.pointer_mut(parent).unwrap()[key] = value;
        let mut errors = Vec::new();
        check(spec, &bad, "spec", &mut errors);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{pointer}: {errors:?}"
        );
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("targetRef");
    let mut errors = Vec::new();
    check(spec, &missing, "spec", &mut errors);
    assert_eq!(errors, ["spec: \"targetRef\" is required"]);
}

#[test]
fn envoy_gateway_documents_fit_their_crds() {
    let docs = documents();
    let plural = |kind: &str| match kind {
        "EnvoyExtensionPolicy" => Some("envoyextensionpolicies"),
        "EnvoyPatchPolicy" => Some("envoypatchpolicies"),
        "EnvoyProxy" => Some("envoyproxies"),
        "HTTPRouteFilter" => Some("httproutefilters"),
        _ => None,
    };
    let mut checked = 0;
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap();
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: {kind} without a name"
        );
        let Some(plural) = plural(kind) else {
            // Gateway API's HTTPRoute: its CRD is not vendored here.
            assert_eq!(
                (kind, doc["apiVersion"].as_str()),
                ("HTTPRoute", Some("gateway.networking.k8s.io/v1")),
                "{file}"
            );
            continue;
        };
        let crd = schema(plural);
        assert_eq!(doc["apiVersion"], crd["apiVersion"], "{file}: {kind}");
        let mut errors = Vec::new();
        check(
            &crd["openAPIV3Schema"]["properties"]["spec"],
            &doc["spec"],
            "spec",
            &mut errors,
        );
        assert!(errors.is_empty(), "{file}: {kind}: {errors:#?}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn envoy_gateway_files_agree_with_each_other_and_with_envoy() {
    let docs = documents();
    let extension = find(&docs, "EnvoyExtensionPolicy");
    let patch = find(&docs, "EnvoyPatchPolicy");
    let route = find(&docs, "HTTPRoute");
    let wasm = &extension["spec"]["wasm"][0];

    // The router role's configuration is the filter's; its models are the
    // ones the HTTPRoute matches on.
    let router = PluginConfig::parse(&serde_json::to_vec(&wasm["config"]).unwrap()).unwrap();
    assert_eq!(router.role, Role::Router);
    let matched: Vec<String> = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["matches"].as_array().unwrap().iter())
        .flat_map(|m| m["headers"].as_array().into_iter().flatten())
        .filter(|h| h["name"] == "x-ai-eg-model")
        .map(|h| h["value"].as_str().unwrap().to_string())
        .collect();
    let models: Vec<String> = router
        .models
        .iter()
        .map(|m| match &m.matcher {
            aigw_filter::config::ModelMatch::Exact(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(models, matched);
    let last_rule = route["spec"]["rules"].as_array().unwrap().last().unwrap();
    assert!(
        last_rule["matches"][0].get("headers").is_none(),
        "a catch-all rule"
    );

    // Each patch: the name of what Envoy Gateway generates, a value Envoy
    // accepts.
    let patches = patch["spec"]["jsonPatches"].as_array().unwrap();
    let gateway = &patch["spec"]["targetRef"]["name"];
    assert_eq!(extension["spec"]["targetRefs"][0]["name"], *gateway);
    let ns = patch["metadata"]["namespace"].as_str().unwrap();
    let filter_name = format!(
        "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/0",
        extension["metadata"]["namespace"].as_str().unwrap(),
        extension["metadata"]["name"].as_str().unwrap()
    );
    let listener = &patches[0];
    assert_eq!(
        listener["name"],
        format!(
            "{ns}/{}/{}",
            gateway.as_str().unwrap(),
            "http" // the Gateway's listener name in the blueprint
        )
    );
    assert!(
        listener["operation"]["jsonPath"]
            .as_str()
            .unwrap()
            .contains(&format!("@.name=='{filter_name}'")),
        "{listener}"
    );
    assert_eq!(
        listener["operation"]["path"],
        "/allow_on_headers_stop_iteration"
    );
    // The field exists in the PluginConfig the jsonPath selects.
    crate::proto::to_any(
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        &json!({"config": {"allow_on_headers_stop_iteration": listener["operation"]["value"]}}),
    )
    .unwrap();
    let cluster_name = format!(
        "httproute/{}/{}/rule/0",
        route["metadata"]["namespace"].as_str().unwrap(),
        route["metadata"]["name"].as_str().unwrap()
    );
    let upstream_patch = patches
        .iter()
        .find(|p| p["operation"]["path"] == "/upstream_http_filters")
        .expect("the upstream filter patch");
    assert_eq!(upstream_patch["name"], listener["name"]);
    assert!(
        upstream_patch["operation"]["jsonPath"]
            .as_str()
            .unwrap()
            .contains("@.name=='envoy.filters.http.router'"),
        "{upstream_patch}"
    );
    let filters = &upstream_patch["operation"]["value"];
    // As it lands in the router's configuration.
    let router_type = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    crate::proto::to_any(router_type, &json!({"upstream_http_filters": filters}))
        .expect("valid upstream HTTP filters");
    assert!(crate::proto::to_any(router_type, &json!({"upstream_http_filter": filters})).is_err());
    let upstream_wasm = &filters[0]["typed_config"]["config"];
    let upstream = PluginConfig::parse(
        upstream_wasm["configuration"]["value"]
            .as_str()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(upstream.role, Role::Upstream);
    assert_eq!(upstream_wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(filters[1]["name"], "envoy.filters.http.upstream_codec");
    // One module, one digest.
    let remote = &upstream_wasm["vm_config"]["code"]["remote"];
    assert_eq!(remote["http_uri"]["uri"], wasm["code"]["http"]["url"]);
    assert_eq!(remote["sha256"], wasm["code"]["http"]["sha256"]);
    let sha = remote["sha256"].as_str().unwrap();
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));

    // The endpoint metadata names a backend both roles know.
    let endpoints = patches
        .iter()
        .find(|p| p["type"] == "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
        .unwrap();
    assert_eq!(endpoints["name"], cluster_name);
    crate::proto::to_any(
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        &json!({"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": [
            {"metadata": endpoints["operation"]["value"]}]}]}),
    )
    .expect("valid endpoint metadata");
    let backend = endpoints["operation"]["value"]["filter_metadata"]["aigw"]["backend"]
        .as_str()
        .unwrap();
    assert!(upstream.backends.contains_key(backend));
    assert!(router.backends.contains_key(backend));
    assert_eq!(
        upstream.backends[backend], router.backends[backend],
        "both roles see the same backend"
    );
    let peers = endpoints["operation"]["value"]["filter_metadata"]["aigw"]["peers"]
        .as_str()
        .unwrap();
    assert!(peers.split(',').all(|p| upstream.backends.contains_key(p)));

    // Added clusters are whole, valid clusters; the upstream role's module
    // and credentials come from them.
    let added: Vec<&Value> = patches
        .iter()
        .filter(|p| {
            p["operation"].get("path").is_none() && p["operation"].get("jsonPath").is_none()
        })
        .map(|p| {
            assert_eq!(p["operation"]["value"]["name"], p["name"]);
            crate::proto::to_any(crate::proto::CLUSTER, &p["operation"]["value"])
                .unwrap_or_else(|e| panic!("{}: {e}", p["name"]));
            &p["operation"]["value"]
        })
        .collect();
    let added_names: Vec<&str> = added.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(added_names.contains(&remote["http_uri"]["cluster"].as_str().unwrap()));
    let credentials = upstream.credentials.as_ref().unwrap();
    assert!(added_names.contains(&credentials.cluster.as_str()));

    // The credential service is the controller's (deploy/controller.yaml).
    let args = {
        let text = std::fs::read_to_string(format!("{}/../controller.yaml", dir())).unwrap();
        let controller: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
            .collect();
        let deployment = controller
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap();
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        args.contains(&format!("--credential-authority={}", credentials.authority)),
        "{args:?}"
    );
    let credential_cluster = added
        .iter()
        .find(|c| c["name"] == credentials.cluster)
        .unwrap();
    let address = &credential_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        ["endpoint"]["address"]["socket_address"];
    assert_eq!(
        format!(
            "{}:{}",
            address["address"].as_str().unwrap(),
            address["port_value"]
        ),
        credentials.authority
    );
    let env = &find(&docs, "EnvoyProxy")["spec"]["provider"]["kubernetes"]["envoyDeployment"]
        ["container"]["env"][0];
    assert_eq!(env["name"], credentials.token_env);
    assert_eq!(
        upstream_wasm["vm_config"]["environment_variables"]["host_env_keys"][0],
        credentials.token_env
    );
}
