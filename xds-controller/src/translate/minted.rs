//! Policies whose credential the controller mints at run time: what to mint
//! it from, read from the policy and its Secrets (pure; `crate::mint` does
//! the minting).

use super::Options;
use crate::error::Diagnostic;
use crate::mint::federation::{self, Federation};
use crate::mint::oidc::{OidcClient, CLIENT_SECRET_KEY};
use crate::mint::{azure, gcp, MintSource};
use crate::resources::{BackendSecurityPolicySpec, Named, Resources};
use serde_json::Value;

type Policy = Named<BackendSecurityPolicySpec>;

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The value under `key` of Secret `namespace/name`.
fn secret_value<'a>(
    resources: &'a Resources,
    namespace: &str,
    name: &str,
    key: &str,
    field: &str,
) -> Result<&'a str, Diagnostic> {
    let secret = resources
        .secrets
        .iter()
        .find(|s| s.namespace == namespace && s.name == name)
        .ok_or_else(|| {
            Diagnostic::error(format!(
                "Secret {namespace}/{name} does not exist (in standalone mode, give it as a kind: Secret document with stringData.\"{key}\")"
            ))
            .field(field)
        })?;
    secret
        .spec
        .values
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| {
            Diagnostic::error(format!("Secret {namespace}/{name} has no key \"{key}\""))
                .field(field)
        })
}

/// The credential source of a GCPCredentials policy: a service-account key
/// (`credentialsFile.secretRef`, key `service_account.json`) or workload
/// identity federation (`workloadIdentityFederationConfig`).
pub fn gcp_source(
    resources: &Resources,
    options: &Options,
    policy: &Policy,
) -> Result<MintSource, Diagnostic> {
    let gcp = policy.spec.gcp_credentials.as_ref();
    if let Some(wif) = gcp.and_then(|c| c.get("workloadIdentityFederationConfig")) {
        return gcp_federation(resources, options, policy, wif);
    }
    let Some(file) = gcp.and_then(|c| c.get("credentialsFile")) else {
        return Err(Diagnostic::error(
            "give gcpCredentials.credentialsFile.secretRef (a Secret with a service-account key under \"service_account.json\") or gcpCredentials.workloadIdentityFederationConfig",
        )
        .field("spec.gcpCredentials"));
    };
    let field = "spec.gcpCredentials.credentialsFile.secretRef";
    let secret_ref = file.get("secretRef").unwrap_or(&Value::Null);
    let name = text(secret_ref, "name")
        .ok_or_else(|| Diagnostic::error("credentialsFile needs secretRef.name").field(field))?;
    let namespace = text(secret_ref, "namespace").unwrap_or(&policy.namespace);
    let key_file = secret_value(resources, namespace, name, gcp::SECRET_KEY, field)?;
    let key = gcp::parse_key_file(key_file).map_err(|e| {
        Diagnostic::error(format!(
            "Secret {namespace}/{name} key \"{}\": {e}",
            gcp::SECRET_KEY
        ))
        .field(field)
    })?;
    Ok(MintSource::GcpServiceAccount(key))
}

fn gcp_federation(
    resources: &Resources,
    options: &Options,
    policy: &Policy,
    wif: &Value,
) -> Result<MintSource, Diagnostic> {
    let base = "spec.gcpCredentials.workloadIdentityFederationConfig";
    let required = |key: &str| {
        text(wif, key).ok_or_else(|| {
            Diagnostic::error(format!(
                "workloadIdentityFederationConfig.{key} is required"
            ))
            .field(format!("{base}.{key}"))
        })
    };
    let project = required("projectID")?;
    let pool = required("workloadIdentityPoolName")?;
    let provider = required("workloadIdentityProviderName")?;
    let exchange = wif.get("oidcExchangeToken").ok_or_else(|| {
        Diagnostic::error("workloadIdentityFederationConfig.oidcExchangeToken is required")
            .field(format!("{base}.oidcExchangeToken"))
    })?;
    let oidc = oidc_client(
        resources,
        policy,
        exchange,
        &format!("{base}.oidcExchangeToken"),
    )?;
    let impersonate = wif
        .get("serviceAccountImpersonation")
        .and_then(|i| text(i, "serviceAccountName"))
        .map(|name| federation::service_account_email(name, project));
    Ok(MintSource::GcpFederated {
        oidc,
        federation: Federation {
            audience: federation::audience(project, pool, provider),
            sts_endpoint: options
                .mint
                .gcp_sts_endpoint
                .clone()
                .unwrap_or_else(|| federation::DEFAULT_STS_ENDPOINT.into()),
            impersonate,
            iam_credentials_endpoint: options
                .mint
                .gcp_iam_credentials_endpoint
                .clone()
                .unwrap_or_else(|| federation::DEFAULT_IAM_CREDENTIALS_ENDPOINT.into()),
        },
    })
}

/// `awsCredentials.oidcExchangeToken`: an OIDC token exchanged with STS
/// AssumeRoleWithWebIdentity for `awsRoleArn`, at the policy region's STS.
pub fn aws_oidc_source(
    resources: &Resources,
    options: &Options,
    policy: &Policy,
    exchange: &Value,
) -> Result<MintSource, Diagnostic> {
    let base = "spec.awsCredentials.oidcExchangeToken";
    let role_arn = text(exchange, "awsRoleArn").ok_or_else(|| {
        Diagnostic::error("oidcExchangeToken.awsRoleArn is required")
            .field(format!("{base}.awsRoleArn"))
    })?;
    let oidc = oidc_client(resources, policy, exchange, base)?;
    let region = policy
        .spec
        .aws_credentials
        .as_ref()
        .and_then(|c| text(c, "region"))
        .unwrap_or("us-east-1");
    let sts_endpoint = options
        .mint
        .aws_sts_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    Ok(MintSource::AwsOidc {
        oidc,
        role_arn: role_arn.to_string(),
        session_name: "aigw".into(),
        sts_endpoint: sts_endpoint.trim_end_matches('/').to_string(),
    })
}

/// The OIDC client of an `oidcExchangeToken` (Envoy Gateway's `OIDC` under
/// `oidc`, plus `grantType` and `aud`), with its client secret.
fn oidc_client(
    resources: &Resources,
    policy: &Policy,
    exchange: &Value,
    base: &str,
) -> Result<OidcClient, Diagnostic> {
    let oidc = exchange.get("oidc").ok_or_else(|| {
        Diagnostic::error("oidcExchangeToken.oidc is required").field(format!("{base}.oidc"))
    })?;
    let provider = oidc.get("provider").unwrap_or(&Value::Null);
    let issuer = text(provider, "issuer").ok_or_else(|| {
        Diagnostic::error("oidc.provider.issuer is required")
            .field(format!("{base}.oidc.provider.issuer"))
    })?;
    let client_id = text(oidc, "clientID").ok_or_else(|| {
        Diagnostic::error("oidc.clientID is required").field(format!("{base}.oidc.clientID"))
    })?;
    let secret_field = format!("{base}.oidc.clientSecret");
    let secret_ref = oidc.get("clientSecret").unwrap_or(&Value::Null);
    let name = text(secret_ref, "name").ok_or_else(|| {
        Diagnostic::error("oidc.clientSecret.name is required").field(secret_field.clone())
    })?;
    let namespace = text(secret_ref, "namespace").unwrap_or(&policy.namespace);
    let client_secret = secret_value(resources, namespace, name, CLIENT_SECRET_KEY, &secret_field)?;
    let scopes = oidc
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(OidcClient {
        issuer: issuer.to_string(),
        token_endpoint: text(provider, "tokenEndpoint").map(str::to_string),
        client_id: client_id.to_string(),
        client_secret: client_secret.trim().to_string(),
        scopes,
        grant_type: text(exchange, "grantType")
            .unwrap_or("client_credentials")
            .to_string(),
        audience: text(exchange, "aud").map(str::to_string),
    })
}

/// The credential source of an AzureCredentials policy: the application
/// `clientID` in `tenantID`, authenticated with the Secret of
/// `clientSecretRef` (key `client-secret`) or with an OIDC token from
/// `oidcExchangeToken` (a federated identity credential).
pub fn azure_source(
    resources: &Resources,
    options: &Options,
    policy: &Policy,
) -> Result<MintSource, Diagnostic> {
    let base = "spec.azureCredentials";
    let azure = policy
        .spec
        .azure_credentials
        .as_ref()
        .unwrap_or(&Value::Null);
    let required = |key: &str| {
        text(azure, key).ok_or_else(|| {
            Diagnostic::error(format!("azureCredentials.{key} is required"))
                .field(format!("{base}.{key}"))
        })
    };
    let client_id = required("clientID")?;
    let tenant_id = required("tenantID")?;
    if !azure::valid_tenant(tenant_id) {
        return Err(Diagnostic::error(format!(
            "azureCredentials.tenantID {tenant_id:?} is not a tenant ID (a GUID) or domain name"
        ))
        .field(format!("{base}.tenantID")));
    }
    let auth = match (azure.get("clientSecretRef"), azure.get("oidcExchangeToken")) {
        (Some(secret_ref), None) => {
            let field = format!("{base}.clientSecretRef");
            let name = text(secret_ref, "name").ok_or_else(|| {
                Diagnostic::error("clientSecretRef.name is required").field(field.clone())
            })?;
            let namespace = text(secret_ref, "namespace").unwrap_or(&policy.namespace);
            let secret =
                secret_value(resources, namespace, name, azure::CLIENT_SECRET_KEY, &field)?.trim();
            if secret.is_empty() {
                return Err(Diagnostic::error(format!(
                    "Secret {namespace}/{name} key \"{}\" is empty",
                    azure::CLIENT_SECRET_KEY
                ))
                .field(field));
            }
            azure::ClientAuth::Secret(secret.to_string())
        }
        (None, Some(exchange)) => azure::ClientAuth::Federated(oidc_client(
            resources,
            policy,
            exchange,
            &format!("{base}.oidcExchangeToken"),
        )?),
        _ => {
            return Err(Diagnostic::error(
                "give exactly one of azureCredentials.clientSecretRef (a Secret with the client secret under \"client-secret\") or azureCredentials.oidcExchangeToken",
            )
            .field(base))
        }
    };
    Ok(MintSource::Azure(azure::EntraClient {
        authority: options
            .mint
            .azure_authority
            .clone()
            .unwrap_or_else(|| azure::DEFAULT_AUTHORITY.into())
            .trim_end_matches('/')
            .to_string(),
        tenant_id: tenant_id.to_string(),
        client_id: client_id.to_string(),
        auth,
    }))
}
