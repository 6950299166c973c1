//! Credentials that are minted at run time: what translation hands to the
//! refresher, and the diagnostics when it cannot.

use super::{translate, AwsEnvironment, Options, Translation};
use crate::mint::{aws::AwsSource, MintSource};

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec: {gatewayClassName: aigw, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: vertex, namespace: default}
spec: {endpoints: [{fqdn: {hostname: us-east5-aiplatform.googleapis.com, port: 443}}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: claude, namespace: default}
spec:
  schema: {name: GCPAnthropic}
  backendRef: {name: vertex, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: claude}]}]
"#;

fn options(aws_minted: Option<AwsSource>, aws_environment: Option<AwsEnvironment>) -> Options {
    Options {
        aws_environment,
        mint: crate::mint::MintEnvironment {
            aws: aws_minted,
            ..Default::default()
        },
        ..Options::for_tests()
    }
}

fn run(extra: &str, options: &Options) -> Translation {
    let mut resources = Default::default();
    let mut diagnostics = Vec::new();
    let text = format!("{BASE}---\n{extra}");
    crate::load::load_str("test.yaml", &text, &mut resources, &mut diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&resources, options)
}

fn gcp_policy(credentials: &str) -> String {
    format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: gcp, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}]
  type: GCPCredentials
  gcpCredentials:
    projectName: my-project
    region: us-east5
{credentials}
"#
    )
}

fn key_secret() -> String {
    let file = crate::mint::gcp::tests::key_file("https://oauth2.googleapis.com/token");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: sa, namespace: default}}\nstringData:\n  service_account.json: {}\n",
        serde_json::to_string(&file).unwrap()
    )
}

#[test]
fn service_account_key_becomes_a_minted_credential() {
    let text = format!(
        "{}---\n{}",
        gcp_policy("    credentialsFile: {secretRef: {name: sa}}"),
        key_secret()
    );
    let t = run(&text, &options(None, None));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(t.credentials.credentials.is_empty(), "nothing static");
    match t.minted.get("default/gcp") {
        Some(MintSource::GcpServiceAccount(key)) => {
            assert_eq!(key.client_email, "gw@p.iam.gserviceaccount.com")
        }
        other => panic!("{other:?}"),
    }
    let config = serde_json::to_string(&(&t.listeners, &t.clusters)).unwrap();
    assert!(config.contains("gcp_access_token") && config.contains("my-project"));
    assert!(
        !config.contains("PRIVATE KEY") && !config.contains("MII"),
        "the key never reaches Envoy's config"
    );
}

#[test]
fn missing_or_bad_keys_are_named() {
    let policy = gcp_policy("    credentialsFile: {secretRef: {name: sa}}");
    let t = run(&policy, &options(None, None));
    assert!(t.minted.is_empty());
    assert_eq!(t.clusters.len(), 1, "still served, with a clear error");
    let d = &t.diagnostics[0];
    assert_eq!(
        d.resource.as_deref(),
        Some("BackendSecurityPolicy default/gcp")
    );
    assert!(
        d.message.contains("Secret default/sa does not exist"),
        "{d}"
    );

    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: sa, namespace: default}\nstringData:\n  service_account.json: '{\"client_email\":\"a\",\"private_key\":\"x\"}'\n";
    let t = run(&format!("{policy}---\n{bad}"), &options(None, None));
    assert!(
        t.diagnostics[0].message.contains("PKCS#8"),
        "{}",
        t.diagnostics[0]
    );

    let wrong_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: sa, namespace: default}\nstringData: {apiKey: x}\n";
    let t = run(&format!("{policy}---\n{wrong_key}"), &options(None, None));
    assert!(t.diagnostics[0].message.contains("service_account.json"));
}

const CLIENT_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: idp, namespace: default}\nstringData: {client-secret: very-secret}\n";

#[test]
fn workload_identity_federation() {
    let policy = gcp_policy(
        r#"    workloadIdentityFederationConfig:
      projectID: "123456"
      workloadIdentityPoolName: pool
      workloadIdentityProviderName: prov
      serviceAccountImpersonation: {serviceAccountName: vertex-caller}
      oidcExchangeToken:
        oidc:
          provider: {issuer: "https://idp.example"}
          clientID: gw
          clientSecret: {name: idp}
          scopes: [openid]
        aud: gcp"#,
    );
    let t = run(
        &format!("{policy}---\n{CLIENT_SECRET}"),
        &options(None, None),
    );
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let Some(MintSource::GcpFederated { oidc, federation }) = t.minted.get("default/gcp") else {
        panic!("{:?}", t.minted);
    };
    assert_eq!(oidc.client_secret, "very-secret");
    assert_eq!(oidc.audience.as_deref(), Some("gcp"));
    assert_eq!(oidc.token_endpoint, None, "discovered at run time");
    assert_eq!(
        federation.audience,
        "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/prov"
    );
    assert_eq!(
        federation.impersonate.as_deref(),
        Some("vertex-caller@123456.iam.gserviceaccount.com")
    );
    assert_eq!(federation.sts_endpoint, "https://sts.googleapis.com");
    assert!(!format!("{:?}", t.minted).contains("very-secret"));

    let t = run(&policy, &options(None, None));
    assert!(t.minted.is_empty());
    let d = &t.diagnostics[0];
    assert!(
        d.message.contains("Secret default/idp does not exist"),
        "{d}"
    );
    assert_eq!(
        d.field.as_deref(),
        Some("spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken.oidc.clientSecret")
    );
    let neither = gcp_policy("    other: 1");
    let t = run(&neither, &options(None, None));
    assert!(t.diagnostics[0]
        .message
        .contains("workloadIdentityFederationConfig"));
}

const AWS: &str = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: bedrock, namespace: default}
spec: {endpoints: [{fqdn: {hostname: bedrock-runtime.us-east-1.amazonaws.com, port: 443}}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: claude, namespace: other}
spec:
  schema: {name: AWSAnthropic}
  backendRef: {name: bedrock, namespace: default, kind: Backend, group: gateway.envoyproxy.io}
"#;

#[test]
fn aws_environment_chain() {
    let route = "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\nmetadata: {name: r2, namespace: other}\nspec:\n  parentRefs: [{name: gw, namespace: default}]\n  rules: [{backendRefs: [{name: claude}]}]\n";
    let policy = "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: BackendSecurityPolicy\nmetadata: {name: aws, namespace: other}\nspec:\n  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}]\n  type: AWSCredentials\n  awsCredentials: {region: us-east-1}\n";
    let text = format!("{AWS}{route}{policy}");
    let web = AwsSource::WebIdentity {
        token_file: "/t".into(),
        role_arn: "arn:aws:iam::1:role/r".into(),
        session_name: "aigw".into(),
        sts_endpoint: "https://sts.us-east-1.amazonaws.com".into(),
    };
    let t = run(&text, &options(Some(web.clone()), None));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(
        t.minted.get("other/aws"),
        Some(&MintSource::Aws(web.clone()))
    );
    // Static keys in the environment come first, like the AWS SDKs.
    let env = AwsEnvironment {
        access_key_id: "A".into(),
        secret_access_key: "S".into(),
        session_token: None,
    };
    let t = run(&text, &options(Some(web), Some(env)));
    assert!(t.minted.is_empty());
    assert!(t.credentials.credentials.contains_key("other/aws"));
    // oidcExchangeToken: the OIDC token is exchanged at the region's STS.
    let oidc = text.replace(
        "awsCredentials: {region: us-east-1}",
        "awsCredentials: {region: us-east-1, oidcExchangeToken: {awsRoleArn: 'arn:aws:iam::1:role/o', oidc: {provider: {issuer: 'https://i', tokenEndpoint: 'https://i/token'}, clientID: c, clientSecret: {name: idp, namespace: default}}}}",
    );
    let t = run(&format!("{oidc}---\n{CLIENT_SECRET}"), &options(None, None));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let Some(MintSource::AwsOidc {
        oidc,
        role_arn,
        sts_endpoint,
        ..
    }) = t.minted.get("other/aws")
    else {
        panic!("{:?}", t.minted);
    };
    assert_eq!(role_arn, "arn:aws:iam::1:role/o");
    assert_eq!(sts_endpoint, "https://sts.us-east-1.amazonaws.com");
    assert_eq!(oidc.token_endpoint.as_deref(), Some("https://i/token"));
}

fn azure_policy(credentials: &str) -> String {
    format!(
        r#"apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: entra, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}]
  type: AzureCredentials
  azureCredentials:
    clientID: app-id
    tenantID: contoso.onmicrosoft.com
{credentials}
"#
    )
}

#[test]
fn azure_client_secret_and_federation() {
    use crate::mint::azure::{ClientAuth, EntraClient};
    let policy = azure_policy("    clientSecretRef: {name: entra-secret}");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: entra-secret, namespace: default}\nstringData: {client-secret: \"entra-very-secret\\n\"}\n";
    let t = run(&format!("{policy}---\n{secret}"), &options(None, None));
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(t.credentials.credentials.is_empty(), "nothing static");
    assert_eq!(
        t.minted.get("default/entra"),
        Some(&MintSource::Azure(EntraClient {
            authority: "https://login.microsoftonline.com".into(),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app-id".into(),
            auth: ClientAuth::Secret("entra-very-secret".into()),
        }))
    );
    let config = serde_json::to_string(&(&t.listeners, &t.clusters)).unwrap();
    assert!(config.contains("azure_access_token"), "{config}");
    assert!(!config.contains("entra-very-secret"));
    assert!(!format!("{:?}", t.minted).contains("entra-very-secret"));

    // The authority can be moved (sovereign clouds, tests).
    let mut moved = options(None, None);
    moved.mint.azure_authority = Some("http://127.0.0.1:9/".into());
    let t = run(&format!("{policy}---\n{secret}"), &moved);
    let Some(MintSource::Azure(entra)) = t.minted.get("default/entra") else {
        panic!("{:?}", t.minted);
    };
    assert_eq!(
        crate::mint::azure::token_url(entra),
        "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );

    // oidcExchangeToken: the OIDC token is the client assertion.
    let federated = azure_policy(
        "    oidcExchangeToken:\n      oidc: {provider: {issuer: 'https://idp.example'}, clientID: gw, clientSecret: {name: idp}}\n      aud: api://AzureADTokenExchange",
    );
    let t = run(
        &format!("{federated}---\n{CLIENT_SECRET}"),
        &options(None, None),
    );
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let Some(MintSource::Azure(EntraClient {
        auth: ClientAuth::Federated(oidc),
        ..
    })) = t.minted.get("default/entra")
    else {
        panic!("{:?}", t.minted);
    };
    assert_eq!(oidc.client_secret, "very-secret");
    assert_eq!(oidc.audience.as_deref(), Some("api://AzureADTokenExchange"));
}

#[test]
fn azure_missing_secrets_are_named() {
    let policy = azure_policy("    clientSecretRef: {name: entra-secret}");
    let t = run(&policy, &options(None, None));
    assert!(t.minted.is_empty());
    assert_eq!(t.clusters.len(), 1, "still served, with a clear error");
    let d = &t.diagnostics[0];
    assert_eq!(
        d.resource.as_deref(),
        Some("BackendSecurityPolicy default/entra")
    );
    assert!(
        d.message
            .contains("Secret default/entra-secret does not exist"),
        "{d}"
    );
    assert_eq!(
        d.field.as_deref(),
        Some("spec.azureCredentials.clientSecretRef")
    );

    let wrong_key = "apiVersion: v1\nkind: Secret\nmetadata: {name: entra-secret, namespace: default}\nstringData: {apiKey: x}\n";
    let t = run(&format!("{policy}---\n{wrong_key}"), &options(None, None));
    let d = &t.diagnostics[0];
    assert!(d.message.contains("has no key \"client-secret\""), "{d}");
    assert_eq!(
        d.field.as_deref(),
        Some("spec.azureCredentials.clientSecretRef")
    );

    let federated = azure_policy(
        "    oidcExchangeToken:\n      oidc: {provider: {issuer: 'https://idp.example'}, clientID: gw, clientSecret: {name: idp}}",
    );
    let t = run(&federated, &options(None, None));
    assert_eq!(
        t.diagnostics[0].field.as_deref(),
        Some("spec.azureCredentials.oidcExchangeToken.oidc.clientSecret")
    );

    let bad_tenant = policy.replace("contoso.onmicrosoft.com", "\"a/../b\"");
    let t = run(&bad_tenant, &options(None, None));
    assert!(t.minted.is_empty());
    assert_eq!(
        t.diagnostics
            .iter()
            .find(|d| d.field.as_deref() == Some("spec.azureCredentials.tenantID"))
            .map(|d| d.message.contains("not a tenant ID")),
        Some(true),
        "{:?}",
        t.diagnostics
    );
}
