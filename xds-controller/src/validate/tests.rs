use super::*;

const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/crd-validation"
);

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The verdict of a whole file: invalid when any document is.
fn file_verdict(text: &str) -> Verdict {
    let verdicts = validate_str(text);
    verdicts
        .iter()
        .find(|v| v.is_invalid())
        .cloned()
        .unwrap_or(Verdict::Valid)
}

#[test]
fn matches_the_reference_api_server_on_every_conformance_file() {
    let expected_path = format!("{CONFORMANCE}/EXPECTED.tsv");
    let table = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "the CRD conformance data must be at {expected_path} (../shared next to the repo): {e}"
        )
    });
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut columns = line.splitn(3, '\t');
        let file = columns.next().unwrap();
        let verdict = columns.next().expect("a verdict column");
        let reference = columns.next().unwrap_or("").trim();
        let text = std::fs::read_to_string(format!("{CONFORMANCE}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let ours = file_verdict(&text);
        checked += 1;
        match (verdict, &ours) {
            ("valid", Verdict::Valid) => {}
            ("invalid", Verdict::Invalid(message)) => {
                if !normalize(message).contains(&normalize(reference)) {
                    mismatches.push(format!(
                        "{file}: message differs\n  reference: {reference}\n  ours:      {message}"
                    ));
                }
            }
            _ => mismatches.push(format!(
                "{file}: reference says {verdict} ({reference}), we say {ours}"
            )),
        }
    }
    assert_eq!(checked, 66, "EXPECTED.tsv should list 66 files");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn seed_blueprint_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/blueprint");
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("the seed blueprint in ../shared") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let mut eag = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for verdict in validate_str(&text) {
            match verdict {
                Verdict::Valid => eag += 1,
                Verdict::NotValidated(_) => {}
                Verdict::Invalid(message) => panic!("{}: {message}", file.display()),
            }
        }
    }
    // 3 routes, 3 AIServiceBackends, 1 BackendSecurityPolicy.
    assert_eq!(eag, 7);
}

#[test]
fn multi_document_files_get_one_verdict_per_document() {
    let text = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: bedrock}
spec:
  schema: {name: AWSAnthropic}
  backendRef: {name: b, kind: Backend, group: gateway.envoyproxy.io}
---
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: b}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: p}
spec:
  type: AWSCredentials
  awsCredentials: {region: ""}
"#;
    let verdicts = validate_str(text);
    assert_eq!(verdicts.len(), 3);
    assert_eq!(verdicts[0], Verdict::Valid);
    assert_eq!(verdicts[1].to_string(), "not validated (kind Backend)");
    assert_eq!(
        verdicts[2],
        Verdict::Invalid(
            "BackendSecurityPolicy.aigateway.envoyproxy.io \"p\" is invalid: \
             spec.awsCredentials.region: Invalid value: \"\": spec.awsCredentials.region \
             in body should be at least 1 chars long"
                .into()
        )
    );
}

#[test]
fn several_errors_are_listed_like_the_api_server() {
    let text = r#"
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: x}
spec:
  schema: {name: 7}
"#;
    let Verdict::Invalid(message) = &validate_str(text)[0] else {
        panic!("invalid expected");
    };
    assert_eq!(
        message,
        "AIServiceBackend.aigateway.envoyproxy.io \"x\" is invalid: [spec.schema.name: \
         Invalid value: \"integer\": spec.schema.name in body must be of type string: \
         \"integer\", spec.backendRef: Required value]"
    );
}

#[test]
fn headers_names_and_versions() {
    let bad_name = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: MCPRoute\nmetadata: {name: Bad_Name}\nspec:\n  parentRefs: [{name: g}]\n  backendRefs: [{name: m}]\n";
    let Verdict::Invalid(m) = &validate_str(bad_name)[0] else {
        panic!()
    };
    assert!(
        m.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{m}"
    );
    let version = "apiVersion: aigateway.envoyproxy.io/v9\nkind: MCPRoute\nmetadata: {name: a}\n";
    assert!(validate_str(version)[0].is_invalid());
    let no_kind = "apiVersion: v1\nmetadata: {name: a}\n";
    assert!(validate_str(no_kind)[0].is_invalid());
    assert!(validate_str("kind: [")[0].is_invalid());
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
    assert_eq!(
        validate_str(secret)[0],
        Verdict::NotValidated("Secret".into())
    );
}

#[test]
fn inference_pool_rules() {
    let route = |refs: &str| {
        format!(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {{name: r}}\nspec:\n  rules:\n  - backendRefs: {refs}\n"
        )
    };
    assert_eq!(
        validate_str(&route("[{name: a}, {name: b, weight: 2}]"))[0],
        Verdict::Valid
    );
    assert_eq!(
        validate_str(&route(
            "[{name: p, group: inference.networking.k8s.io, kind: InferencePool}]"
        ))[0],
        Verdict::Valid
    );
    let Verdict::Invalid(m) = &validate_str(&route("[{name: p, kind: InferencePool}]"))[0] else {
        panic!()
    };
    assert!(m.contains("spec.rules[0].backendRefs[0]: Invalid value: \"object\": group and kind must be specified together"), "{m}");
    let Verdict::Invalid(m) = &validate_str(&route("[{name: a, weight: heavy}]"))[0] else {
        panic!()
    };
    assert!(m.contains("spec.rules[0].backendRefs[0].weight"), "{m}");
}

#[test]
fn command_lines_name_the_file_and_document() {
    let one = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: a}\nspec:\n  schema: {name: OpenAI}\n  backendRef: {name: b, kind: Service}\n";
    let (lines, invalid) = cli::report("a.yaml", one);
    assert_eq!(invalid, 1);
    assert_eq!(
        lines,
        [
            "a.yaml: invalid: AIServiceBackend.aigateway.envoyproxy.io \"a\" is invalid: \
          spec.backendRef: Invalid value: \"object\": BackendRef must be a Backend resource \
          of Envoy Gateway"
        ]
    );
    let two = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nkind: Gateway\napiVersion: gateway.networking.k8s.io/v1\nmetadata: {name: g}\n";
    let (lines, invalid) = cli::report("b.yaml", two);
    assert_eq!(invalid, 0);
    assert_eq!(
        lines,
        [
            "b.yaml (document 1): not validated (kind Secret)",
            "b.yaml (document 2): not validated (kind Gateway)"
        ]
    );
}
