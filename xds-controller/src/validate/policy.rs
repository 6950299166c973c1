//! BackendSecurityPolicy: the type, exactly the one configuration that type
//! names, the credentials' required fields, and targetRefs.

use super::{has, Checker};
use serde_json::{Map, Value};

pub const TYPES: &[&str] = &[
    "APIKey",
    "AWSCredentials",
    "AzureAPIKey",
    "AzureCredentials",
    "GCPCredentials",
    "AnthropicAPIKey",
];

/// Each type and the one field it must come with.
const CONFIG_FIELDS: &[(&str, &str)] = &[
    ("APIKey", "apiKey"),
    ("AWSCredentials", "awsCredentials"),
    ("AzureAPIKey", "azureAPIKey"),
    ("AzureCredentials", "azureCredentials"),
    ("GCPCredentials", "gcpCredentials"),
    ("AnthropicAPIKey", "anthropicAPIKey"),
];

pub(super) fn check(spec: &Map<String, Value>, checker: &mut Checker) {
    let refs = checker.items(spec, "targetRefs", "spec.targetRefs", 0, 16);
    let mut all_supported = true;
    for (i, reference) in refs.iter().enumerate() {
        let path = format!("spec.targetRefs[{i}]");
        let Some(reference) = checker.object(Some(reference), &path) else {
            continue;
        };
        checker.min_length(reference, "name", &format!("{path}.name"), 1, true);
        let group = checker
            .string(reference.get("group"), &format!("{path}.group"))
            .unwrap_or("");
        let kind = checker
            .string(reference.get("kind"), &format!("{path}.kind"))
            .unwrap_or("");
        let supported = matches!(
            (group, kind),
            ("aigateway.envoyproxy.io", "AIServiceBackend")
                | ("inference.networking.k8s.io", "InferencePool")
        );
        all_supported &= supported;
    }
    if !all_supported {
        checker.rule_on_array(
            "spec.targetRefs",
            "targetRefs must reference AIServiceBackend or InferencePool resources",
        );
    }

    let kind = checker.enumeration(spec, "type", "spec.type", TYPES, true);
    if let Some((kind, field)) = CONFIG_FIELDS
        .iter()
        .find(|(t, _)| Some(*t) == kind.as_deref())
    {
        let only = has(spec, field)
            && CONFIG_FIELDS
                .iter()
                .all(|(_, other)| other == field || !has(spec, other));
        if !only {
            checker.rule_on_object(
                "spec",
                &format!("When type is {kind}, only {field} field should be set"),
            );
        }
    }

    for field in ["apiKey", "azureAPIKey", "anthropicAPIKey"] {
        let path = format!("spec.{field}");
        if let Some(key) = checker.object(spec.get(field), &path) {
            secret_ref(key, "secretRef", &format!("{path}.secretRef"), checker);
        }
    }
    if let Some(aws) = checker.object(spec.get("awsCredentials"), "spec.awsCredentials") {
        check_aws(aws, checker);
    }
    if let Some(azure) = checker.object(spec.get("azureCredentials"), "spec.azureCredentials") {
        check_azure(azure, checker);
    }
    if let Some(gcp) = checker.object(spec.get("gcpCredentials"), "spec.gcpCredentials") {
        check_gcp(gcp, checker);
    }
}

/// A required Gateway API SecretObjectReference.
fn secret_ref(parent: &Map<String, Value>, key: &str, path: &str, checker: &mut Checker) {
    if let Some(secret) = checker.required_object(parent, key, path) {
        checker.min_length(secret, "name", &format!("{path}.name"), 1, true);
        checker.string(secret.get("namespace"), &format!("{path}.namespace"));
    }
}

/// The OIDC settings of an `oidcExchangeToken`.
fn oidc(exchange: &Map<String, Value>, path: &str, checker: &mut Checker) {
    let oidc_path = format!("{path}.oidc");
    if let Some(oidc) = checker.required_object(exchange, "oidc", &oidc_path) {
        checker.required_object(oidc, "provider", &format!("{oidc_path}.provider"));
        checker.min_length(oidc, "clientID", &format!("{oidc_path}.clientID"), 1, false);
    }
}

fn check_aws(aws: &Map<String, Value>, checker: &mut Checker) {
    checker.min_length(aws, "region", "spec.awsCredentials.region", 1, true);
    let file_path = "spec.awsCredentials.credentialsFile";
    if let Some(file) = checker.object(aws.get("credentialsFile"), file_path) {
        secret_ref(
            file,
            "secretRef",
            &format!("{file_path}.secretRef"),
            checker,
        );
    }
    let token_path = "spec.awsCredentials.oidcExchangeToken";
    if let Some(token) = checker.object(aws.get("oidcExchangeToken"), token_path) {
        oidc(token, token_path, checker);
        checker.min_length(
            token,
            "awsRoleArn",
            &format!("{token_path}.awsRoleArn"),
            1,
            true,
        );
    }
}

fn check_azure(azure: &Map<String, Value>, checker: &mut Checker) {
    let path = "spec.azureCredentials";
    checker.min_length(azure, "clientID", &format!("{path}.clientID"), 1, true);
    checker.min_length(azure, "tenantID", &format!("{path}.tenantID"), 1, true);
    if has(azure, "clientSecretRef") == has(azure, "oidcExchangeToken") {
        checker.rule_on_object(
            path,
            "Exactly one of clientSecretRef or oidcExchangeToken must be specified",
        );
    }
    if let Some(secret) = checker.object(
        azure.get("clientSecretRef"),
        &format!("{path}.clientSecretRef"),
    ) {
        checker.min_length(
            secret,
            "name",
            &format!("{path}.clientSecretRef.name"),
            1,
            true,
        );
    }
    let token_path = format!("{path}.oidcExchangeToken");
    if let Some(token) = checker.object(azure.get("oidcExchangeToken"), &token_path) {
        oidc(token, &token_path, checker);
    }
}

fn check_gcp(gcp: &Map<String, Value>, checker: &mut Checker) {
    let path = "spec.gcpCredentials";
    checker.min_length(gcp, "projectName", &format!("{path}.projectName"), 1, true);
    checker.min_length(gcp, "region", &format!("{path}.region"), 1, true);
    if has(gcp, "credentialsFile") == has(gcp, "workloadIdentityFederationConfig") {
        checker.rule_on_object(
            path,
            "Exactly one of GCPWorkloadIdentityFederationConfig or GCPCredentialsFile must be specified",
        );
    }
    let file_path = format!("{path}.credentialsFile");
    if let Some(file) = checker.object(gcp.get("credentialsFile"), &file_path) {
        secret_ref(
            file,
            "secretRef",
            &format!("{file_path}.secretRef"),
            checker,
        );
    }
    let wif_path = format!("{path}.workloadIdentityFederationConfig");
    if let Some(wif) = checker.object(gcp.get("workloadIdentityFederationConfig"), &wif_path) {
        for key in [
            "projectID",
            "workloadIdentityProviderName",
            "workloadIdentityPoolName",
        ] {
            checker.min_length(wif, key, &format!("{wif_path}.{key}"), 1, true);
        }
        let token_path = format!("{wif_path}.oidcExchangeToken");
        if let Some(token) = checker.required_object(wif, "oidcExchangeToken", &token_path) {
            oidc(token, &token_path, checker);
        }
        let sa_path = format!("{wif_path}.serviceAccountImpersonation");
        if let Some(sa) = checker.object(wif.get("serviceAccountImpersonation"), &sa_path) {
            checker.min_length(
                sa,
                "serviceAccountName",
                &format!("{sa_path}.serviceAccountName"),
                1,
                true,
            );
        }
    }
}
