//! The manifests in deploy/ agree with the code: RBAC grants exactly what
//! the controller watches and patches, the Envoy bootstrap is valid Envoy
//! configuration pointing at the controller's Service ports, the
//! controller's arguments parse, and the filter lands where it is loaded.

use super::*;
use crate::bootstrap::{CONTROLLER_CLUSTER, RATELIMIT_CLUSTER, XDS_CLUSTER};
use serde::Deserialize;
use serde_json::json;

fn documents(file: &str) -> Vec<Value> {
    let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rbac_grants_exactly_what_the_controller_uses() {
    let docs = documents("controller.yaml");
    let role = find(&docs, "ClusterRole", "aigw-controller");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let mut needed = BTreeSet::new();
    for kind in kinds(&SourceConfig::default()) {
        let r = &kind.resource;
        for verb in ["get", "list", "watch"] {
            needed.insert((r.group.clone(), r.plural.clone(), verb.to_string()));
        }
        if kind.status != StatusShape::None {
            needed.insert((
                r.group.clone(),
                format!("{}/status", r.plural),
                "patch".into(),
            ));
        }
    }
    assert_eq!(granted, needed);
    let binding = find(&docs, "ClusterRoleBinding", "aigw-controller");
    assert_eq!(binding["subjects"][0]["name"], "aigw-controller");
    let deployment = find(&docs, "Deployment", "aigw-controller");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "aigw-controller"
    );
}

#[test]
fn envoy_bootstrap_points_at_the_controller_service() {
    let controller = documents("controller.yaml");
    let envoy = documents("envoy.yaml");
    let service = find(&controller, "Service", "aigw-controller");
    let host = "aigw-controller.aigw-system.svc.cluster.local";
    let port_of = |name: &str| -> u64 {
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["port"]
            .as_u64()
            .unwrap()
    };

    // The controller's arguments parse, and agree with the Service.
    let deployment = find(&controller, "Deployment", "aigw-controller");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut argv = vec!["aigw".to_string()];
    argv.extend(strings(&container["args"]));
    let cli = <crate::Cli as clap::Parser>::try_parse_from(
        argv.iter()
            .chain(["--credential-token=0123456789abcdef".to_string()].iter()),
    )
    .unwrap();
    let crate::Command::Controller(args) = cli.command else {
        panic!("not the controller command")
    };
    let port = |address: &str| address.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    assert_eq!(port(&args.xds_address), port_of("xds"));
    assert_eq!(port(&args.credential_address), port_of("credentials"));
    assert_eq!(port(&args.rate_limit_address), port_of("ratelimit"));
    assert_eq!(
        args.credential_authority,
        format!("{host}:{}", port_of("credentials"))
    );

    // The bootstrap is valid Envoy configuration with the clusters the
    // translation refers to.
    let config_map = find(&envoy, "ConfigMap", "aigw-envoy-bootstrap");
    let bootstrap: Value =
        serde_json::from_str(config_map["data"]["bootstrap.json"].as_str().unwrap()).unwrap();
    crate::proto::to_any(
        "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
        &bootstrap,
    )
    .expect("a valid Envoy bootstrap");
    let mut typo = bootstrap.clone();
    typo["static_resources"]["clusters"][0]["conect_timeout"] = json!("1s");
    assert!(crate::proto::to_any(
        "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
        &typo
    )
    .is_err());
    for (cluster, service_port) in [
        (XDS_CLUSTER, "xds"),
        (CONTROLLER_CLUSTER, "credentials"),
        (RATELIMIT_CLUSTER, "ratelimit"),
    ] {
        let c = bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == cluster)
            .unwrap_or_else(|| panic!("no cluster {cluster}"));
        let address = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        assert_eq!(address["address"], host);
        assert_eq!(address["port_value"].as_u64(), Some(port_of(service_port)));
    }

    // The verified filter is mounted where the translation tells Envoy to
    // load it; the Gateway's port 80 is the container port after the offset.
    let envoy_deployment = find(&envoy, "Deployment", "aigw-envoy");
    let pod = &envoy_deployment["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "wasm")
        .unwrap();
    assert_eq!(
        args.wasm_path,
        std::path::Path::new(mount["mountPath"].as_str().unwrap()).join("aigw_filter.wasm")
    );
    let script = pod["initContainers"][0]["args"][0].as_str().unwrap();
    assert!(script.contains("sha256sum -c"), "{script}");
    assert_eq!(
        pod["containers"][0]["ports"][0]["containerPort"].as_u64(),
        Some(80 + u64::from(args.privileged_port_offset))
    );
    assert_eq!(args.options(1).port_map.get(&80), Some(&10080));
    let mut large = args.clone();
    large.privileged_port_offset = 65000;
    let map = large.options(1).port_map;
    assert_eq!((map.get(&80), map.get(&600)), (Some(&65080), None));
}

#[test]
fn replicas_elect_a_leader_with_namespaced_lease_rights_only() {
    let docs = documents("controller.yaml");
    let deployment = find(&docs, "Deployment", "aigw-controller");
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut argv = vec!["aigw".to_string()];
    argv.extend(strings(&container["args"]));
    argv.push("--credential-token=0123456789abcdef".into());
    let crate::Command::Controller(args) = <crate::Cli as clap::Parser>::try_parse_from(&argv)
        .unwrap()
        .command
    else {
        panic!("not the controller command")
    };
    assert!(args.leader_elect);
    assert_eq!(args.leader_election_namespace.as_deref(), Some(namespace));
    let pod_name = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME from the downward API");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    // A Role (not a ClusterRole) in the controller's namespace, bound to
    // its service account, with exactly what the elector calls.
    let role = find(&docs, "Role", "aigw-controller-leader-election");
    assert_eq!(role["metadata"]["namespace"], namespace);
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(strings(&rules[0]["apiGroups"]), ["coordination.k8s.io"]);
    assert_eq!(strings(&rules[0]["resources"]), ["leases"]);
    assert_eq!(strings(&rules[0]["verbs"]), ["get", "create", "update"]);
    let binding = find(&docs, "RoleBinding", "aigw-controller-leader-election");
    assert_eq!(binding["metadata"]["namespace"], namespace);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["roleRef"]["name"],
        "aigw-controller-leader-election"
    );
    assert_eq!(binding["subjects"][0]["name"], "aigw-controller");
    assert_eq!(binding["subjects"][0]["namespace"], namespace);
    let cluster_role = find(&docs, "ClusterRole", "aigw-controller");
    assert!(!cluster_role.to_string().contains("leases"));
}
