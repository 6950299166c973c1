//! Resolves an AIServiceBackend to where it is (endpoints, TLS) and how the
//! filter must speak to it (schema, prefix, credential).

use super::Options;
use crate::credentials::CredentialValue;
use crate::error::Diagnostic;
use crate::mint::MintSource;
use crate::resources::{Named, Resources, TargetRef};
use aigw_filter::config::{AuthKind, BackendAuth, BackendConfig, SchemaName};

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    /// How the endpoint is reached over TLS, when it is.
    pub tls: Option<EndpointTls>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointTls {
    pub sni: String,
    /// What the certificate must carry: `("DNS" | "URI", name)`.
    pub subject_alt_names: Vec<(&'static str, String)>,
    /// PEM CA certificates from the policy's `caCertificateRefs`; `None`:
    /// the system's (plus `--extra-ca`).
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ResolvedBackend {
    /// `namespace/name` of the AIServiceBackend.
    pub key: String,
    pub endpoints: Vec<Endpoint>,
    pub config: BackendConfig,
    pub credential: Option<(String, CredentialValue)>,
    /// A credential minted at run time instead, and what from.
    pub mint: Option<(String, MintSource)>,
    /// Problems that do not stop the backend from being served.
    pub warnings: Vec<Diagnostic>,
    /// From the route's backendRef.
    pub weight: u32,
    pub priority: u32,
}

impl ResolvedBackend {
    /// The key of this backend's configuration in the filter and in its
    /// endpoints' metadata: the AIServiceBackend, with the model the rule
    /// sends it when the rule overrides the client's (see the filter's
    /// `failover::service_of`).
    pub fn target(&self) -> String {
        match &self.config.model_name_override {
            Some(model) => format!("{}#{model}", self.key),
            None => self.key.clone(),
        }
    }
}

fn ref_matches(r: &TargetRef, group: &str, kind: &str, name: &str) -> bool {
    r.name == name
        && r.kind.as_deref().is_none_or(|k| k == kind)
        && r.group.as_deref().is_none_or(|g| g == group)
}

pub fn schema_name(name: &str) -> Option<SchemaName> {
    Some(match name {
        "OpenAI" => SchemaName::OpenAI,
        "Anthropic" => SchemaName::Anthropic,
        "AWSAnthropic" => SchemaName::AWSAnthropic,
        "AWSBedrock" => SchemaName::AWSBedrock,
        "AzureOpenAI" => SchemaName::AzureOpenAI,
        "GCPVertexAI" => SchemaName::GCPVertexAI,
        "GCPAnthropic" => SchemaName::GCPAnthropic,
        _ => return None,
    })
}

/// Resolves the AIServiceBackend `namespace/name`.
pub fn resolve(
    resources: &Resources,
    options: &Options,
    namespace: &str,
    name: &str,
) -> Result<ResolvedBackend, Diagnostic> {
    let ai = resources
        .ai_service_backends
        .iter()
        .find(|b| b.namespace == namespace && b.name == name)
        .ok_or_else(|| {
            Diagnostic::error(format!(
                "AIServiceBackend {namespace}/{name} does not exist"
            ))
        })?;
    let here = |d: Diagnostic| d.at(format!("AIServiceBackend {}", ai.key()), &ai.source);
    let schema = schema_name(&ai.spec.schema.name).ok_or_else(|| {
        here(Diagnostic::error(format!(
            "unknown schema {:?}; expected one of OpenAI, Anthropic, AWSAnthropic, AWSBedrock, AzureOpenAI, GCPVertexAI, GCPAnthropic",
            ai.spec.schema.name
        ))
        .field("spec.schema.name"))
    })?;
    let (endpoints, host) = endpoints(resources, options, ai).map_err(here)?;
    let prefix = match schema {
        SchemaName::OpenAI => Some(
            ai.spec
                .schema
                .prefix
                .clone()
                .or_else(|| ai.spec.schema.version.as_ref().map(|v| format!("/{v}")))
                .unwrap_or_else(|| "/v1".into()),
        ),
        _ => ai.spec.schema.prefix.clone(),
    };
    let mut warnings = Vec::new();
    let (auth, provided) = security(resources, options, ai, &mut warnings)?;
    let (credential, mint) = match provided {
        Some((id, Provided::Static(value))) => (Some((id, value)), None),
        Some((id, Provided::Minted(source))) => (None, Some((id, source))),
        None => (None, None),
    };
    Ok(ResolvedBackend {
        key: ai.key(),
        endpoints,
        config: BackendConfig {
            schema,
            version: ai.spec.schema.version.clone(),
            prefix,
            host,
            model_name_override: None,
            auth,
        },
        credential,
        mint,
        warnings,
        weight: 1,
        priority: 0,
    })
}

pub type EndpointsAndHost = (Vec<Endpoint>, Option<String>);

fn endpoints(
    resources: &Resources,
    options: &Options,
    ai: &Named<crate::resources::AIServiceBackendSpec>,
) -> Result<EndpointsAndHost, Diagnostic> {
    let r = &ai.spec.backend_ref;
    let namespace = r.namespace.clone().unwrap_or_else(|| ai.namespace.clone());
    let kind = r.kind.as_deref().unwrap_or("Backend");
    ref_endpoints(
        resources,
        &options.resolve,
        &namespace,
        kind,
        &r.name,
        r.port,
    )
}

/// Where a backendRef (`kind` Backend or Service, in `namespace`) points:
/// its endpoints, each with TLS when its port is 443 or a BackendTLSPolicy
/// targets the referent, and the first hostname. Diagnostics name fields
/// under `spec.backendRef`.
pub fn ref_endpoints(
    resources: &Resources,
    resolve: &std::collections::BTreeMap<(String, u16), (String, u16)>,
    namespace: &str,
    kind: &str,
    name: &str,
    port: Option<u16>,
) -> Result<EndpointsAndHost, Diagnostic> {
    let namespace = namespace.to_string();
    let targets: Vec<(String, u16)> = match kind {
        "Backend" => {
            let backend = resources
                .backends
                .iter()
                .find(|b| b.namespace == namespace && b.name == name)
                .ok_or_else(|| {
                    Diagnostic::error(format!("Backend {namespace}/{} does not exist", name))
                        .field("spec.backendRef.name")
                })?;
            let mut targets = Vec::new();
            for (i, e) in backend.spec.endpoints.iter().enumerate() {
                match (&e.fqdn, &e.ip) {
                    (Some(f), _) => targets.push((f.hostname.clone(), f.port)),
                    (None, Some(ip)) => targets.push((ip.address.clone(), ip.port)),
                    (None, None) => {
                        return Err(
                            Diagnostic::error("only fqdn and ip endpoints are supported")
                                .at(format!("Backend {}", backend.key()), &backend.source)
                                .field(format!("spec.endpoints[{i}]")),
                        )
                    }
                }
            }
            if targets.is_empty() {
                return Err(Diagnostic::error("Backend has no endpoints")
                    .at(format!("Backend {}", backend.key()), &backend.source)
                    .field("spec.endpoints"));
            }
            targets
        }
        "Service" => {
            let port = port.ok_or_else(|| {
                Diagnostic::error("a Service backendRef needs a port").field("spec.backendRef.port")
            })?;
            vec![(format!("{name}.{namespace}.svc.cluster.local"), port)]
        }
        other => {
            return Err(
                Diagnostic::error(format!("backendRef kind {other} is not supported"))
                    .field("spec.backendRef.kind"),
            )
        }
    };
    let tls_policy = resources.backend_tls_policies.iter().find(|p| {
        p.namespace == namespace
            && p.spec.target_refs.iter().any(|t| match kind {
                "Service" => ref_matches(t, "", "Service", name),
                _ => ref_matches(t, "gateway.envoyproxy.io", "Backend", name),
            })
    });
    let host = targets.first().map(|(h, _)| h.clone());
    let policy_tls = match tls_policy {
        Some(p) => Some(
            tls_validation(resources, p)
                .map_err(|d| d.at(format!("BackendTLSPolicy {}", p.key()), &p.source))?,
        ),
        None => None,
    };
    let mut out = Vec::new();
    for (hostname, port) in targets {
        let tls = match &policy_tls {
            Some((name, sans, ca_pem)) => {
                let sni = name.clone().unwrap_or_else(|| hostname.clone());
                let subject_alt_names = if sans.is_empty() {
                    vec![("DNS", sni.clone())]
                } else {
                    sans.clone()
                };
                Some(EndpointTls {
                    sni,
                    subject_alt_names,
                    ca_pem: ca_pem.clone(),
                })
            }
            None if port == 443 => Some(EndpointTls {
                sni: hostname.clone(),
                subject_alt_names: vec![("DNS", hostname.clone())],
                ca_pem: None,
            }),
            None => None,
        };
        let (address, port) = resolve
            .get(&(hostname.clone(), port))
            .cloned()
            .unwrap_or((hostname, port));
        out.push(Endpoint { address, port, tls });
    }
    Ok((out, host))
}

/// What a BackendTLSPolicy asks: the hostname (SNI), the names the
/// certificate must carry, and the CA certificates to trust (`None`: system).
type TlsValidation = (Option<String>, Vec<(&'static str, String)>, Option<String>);

fn tls_validation(
    resources: &Resources,
    policy: &Named<crate::resources::BackendTLSPolicySpec>,
) -> Result<TlsValidation, Diagnostic> {
    let validation = &policy.spec.validation;
    let refs = &validation.ca_certificate_refs;
    let ca_pem = match (
        validation.well_known_ca_certificates.as_deref(),
        refs.is_empty(),
    ) {
        (Some("System"), true) => None,
        (Some(other), true) => {
            return Err(Diagnostic::error(format!(
                "wellKnownCACertificates {other:?} is not known; the one value is System"
            ))
            .field("spec.validation.wellKnownCACertificates"))
        }
        (None, false) => {
            let mut bundle = String::new();
            for (i, r) in refs.iter().enumerate() {
                bundle.push_str(&ca_certificate(resources, &policy.namespace, r, i)?);
                bundle.push('\n');
            }
            Some(bundle)
        }
        _ => {
            return Err(Diagnostic::error(
                "exactly one of caCertificateRefs or wellKnownCACertificates must be given",
            )
            .field("spec.validation"))
        }
    };
    let mut sans = Vec::new();
    for (i, san) in validation.subject_alt_names.iter().enumerate() {
        let field = format!("spec.validation.subjectAltNames[{i}]");
        let (kind, value) = match san.kind.as_str() {
            "Hostname" => ("DNS", san.hostname.clone()),
            "URI" => ("URI", san.uri.clone()),
            other => {
                return Err(Diagnostic::error(format!(
                    "subjectAltNames type {other:?} is not Hostname or URI"
                ))
                .field(field))
            }
        };
        let value = value.filter(|v| !v.is_empty()).ok_or_else(|| {
            Diagnostic::error(format!("a {} subject alt name needs its value", san.kind))
                .field(field)
        })?;
        sans.push((kind, value));
    }
    Ok((validation.hostname.clone(), sans, ca_pem))
}

/// The PEM under key `ca.crt` of a ConfigMap (or Secret) a BackendTLSPolicy
/// names.
fn ca_certificate(
    resources: &Resources,
    namespace: &str,
    r: &crate::resources::TargetRef,
    index: usize,
) -> Result<String, Diagnostic> {
    let field = format!("spec.validation.caCertificateRefs[{index}]");
    let kind = r.kind.as_deref().unwrap_or("ConfigMap");
    let store = match kind {
        "ConfigMap" => &resources.config_maps,
        "Secret" => &resources.secrets,
        other => {
            return Err(Diagnostic::error(format!(
                "caCertificateRefs kind {other:?} is not ConfigMap or Secret"
            ))
            .field(format!("{field}.kind")))
        }
    };
    let object = store
        .iter()
        .find(|o| o.namespace == namespace && o.name == r.name)
        .ok_or_else(|| {
            Diagnostic::error(format!("{kind} {namespace}/{} does not exist", r.name))
                .field(format!("{field}.name"))
        })?;
    let pem = object.spec.values.get("ca.crt").ok_or_else(|| {
        Diagnostic::error(format!("{kind} {} has no key \"ca.crt\"", object.key())).field(&field)
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Diagnostic::error(format!(
            "{kind} {} key \"ca.crt\" holds no PEM certificate",
            object.key()
        ))
        .field(field));
    }
    Ok(pem.trim().to_string())
}

/// The backend's security policy: how the filter authenticates to it and
/// the secret it needs.
type Security = (Option<BackendAuth>, Option<(String, Provided)>);

/// A backend's credential: given in the configuration, or minted at run time.
#[derive(Debug, Clone)]
pub enum Provided {
    Static(CredentialValue),
    Minted(MintSource),
}

fn security(
    resources: &Resources,
    options: &Options,
    ai: &Named<crate::resources::AIServiceBackendSpec>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Security, Diagnostic> {
    let by_ref = ai
        .spec
        .backend_security_policy_ref
        .as_ref()
        .map(|r| r.name.clone());
    let policy = resources.backend_security_policies.iter().find(|p| {
        p.namespace == ai.namespace
            && (by_ref.as_deref() == Some(p.name.as_str())
                || p.spec.target_refs.iter().any(|t| {
                    ref_matches(t, "aigateway.envoyproxy.io", "AIServiceBackend", &ai.name)
                }))
    });
    let Some(policy) = policy else {
        if let Some(name) = by_ref {
            return Err(Diagnostic::error(format!(
                "BackendSecurityPolicy {}/{name} does not exist",
                ai.namespace
            ))
            .at(format!("AIServiceBackend {}", ai.key()), &ai.source)
            .field("spec.backendSecurityPolicyRef"));
        }
        return Ok((None, None));
    };
    let here = |d: Diagnostic| {
        d.at(
            format!("BackendSecurityPolicy {}", policy.key()),
            &policy.source,
        )
    };
    let id = policy.key();
    let (kind, key_spec, field) = match policy.spec.policy_type.as_str() {
        "APIKey" => (AuthKind::ApiKey, &policy.spec.api_key, "spec.apiKey"),
        "AnthropicAPIKey" => (
            AuthKind::AnthropicApiKey,
            &policy.spec.anthropic_api_key,
            "spec.anthropicAPIKey",
        ),
        "AzureAPIKey" => (
            AuthKind::AzureApiKey,
            &policy.spec.azure_api_key,
            "spec.azureAPIKey",
        ),
        "AWSCredentials" => {
            let aws = policy.spec.aws_credentials.as_ref();
            let region = aws
                .and_then(|c| c.get("region"))
                .and_then(|r| r.as_str())
                .map(str::to_string);
            if region.is_none() {
                return Err(here(
                    Diagnostic::error("awsCredentials.region is required")
                        .field("spec.awsCredentials.region"),
                ));
            }
            let auth = BackendAuth {
                kind: AuthKind::AwsSigV4,
                credential: id.clone(),
                region,
                project: None,
            };
            let value = match aws_credentials(resources, options, policy) {
                Ok(value) => Some((id, value)),
                Err(d) => {
                    // Still served: requests to it get a clear error until
                    // credentials are given.
                    warnings.push(here(d));
                    None
                }
            };
            return Ok((Some(auth), value));
        }
        "AzureCredentials" => {
            let auth = BackendAuth {
                kind: AuthKind::AzureAccessToken,
                credential: id.clone(),
                region: None,
                project: None,
            };
            // An Entra ID token, minted and refreshed at run time.
            return match super::minted::azure_source(resources, options, policy) {
                Ok(source) => Ok((Some(auth), Some((id, Provided::Minted(source))))),
                Err(d) => {
                    warnings.push(here(d));
                    Ok((Some(auth), None))
                }
            };
        }
        "GCPCredentials" => {
            let gcp = policy.spec.gcp_credentials.as_ref();
            let field = |name: &str| {
                gcp.and_then(|c| c.get(name))
                    .and_then(|v| v.as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            let (Some(project), Some(region)) = (field("projectName"), field("region")) else {
                return Err(here(
                    Diagnostic::error(
                        "gcpCredentials.projectName and gcpCredentials.region are required",
                    )
                    .field("spec.gcpCredentials"),
                ));
            };
            let auth = BackendAuth {
                kind: AuthKind::GcpAccessToken,
                credential: id.clone(),
                region: Some(region),
                project: Some(project),
            };
            // The access token is minted and refreshed at run time
            // (`crate::mint`); translation only reads the key.
            return match super::minted::gcp_source(resources, options, policy) {
                Ok(source) => Ok((Some(auth), Some((id, Provided::Minted(source))))),
                Err(d) => {
                    warnings.push(here(d));
                    Ok((Some(auth), None))
                }
            };
        }
        other => {
            return Err(here(
                Diagnostic::error(format!(
                    "security policy type {other:?} is not supported yet"
                ))
                .field("spec.type"),
            ))
        }
    };
    let secret_ref = key_spec
        .as_ref()
        .and_then(|k| k.secret_ref.as_ref())
        .ok_or_else(|| {
            here(Diagnostic::error("secretRef is required").field(format!("{field}.secretRef")))
        })?;
    let secret_namespace = secret_ref
        .namespace
        .clone()
        .unwrap_or_else(|| policy.namespace.clone());
    let secret = resources
        .secrets
        .iter()
        .find(|s| s.namespace == secret_namespace && s.name == secret_ref.name)
        .ok_or_else(|| {
            here(Diagnostic::error(format!(
                "Secret {secret_namespace}/{} does not exist (in standalone mode, give it in a file or with --secret)",
                secret_ref.name
            ))
            .field(format!("{field}.secretRef.name")))
        })?;
    let key = secret.spec.values.get("apiKey").ok_or_else(|| {
        here(
            Diagnostic::error(format!("Secret {} has no key \"apiKey\"", secret.key()))
                .field(format!("{field}.secretRef")),
        )
    })?;
    let auth = BackendAuth {
        kind,
        credential: id.clone(),
        region: None,
        project: None,
    };
    Ok((
        Some(auth),
        Some((
            id,
            Provided::Static(CredentialValue::ApiKey(key.trim().to_string())),
        )),
    ))
}

/// AWS credentials for an AWSCredentials policy: the Secret of
/// `credentialsFile.secretRef` (an AWS INI file under key `credentials`,
/// profile `credentialsFile.profile` or `default`), else an
/// `oidcExchangeToken`, else the controller's environment: static keys
/// ([`Options::aws_environment`]), then web identity or container
/// credentials (`Options::mint`).
fn aws_credentials(
    resources: &Resources,
    options: &Options,
    policy: &Named<crate::resources::BackendSecurityPolicySpec>,
) -> Result<Provided, Diagnostic> {
    let file = policy
        .spec
        .aws_credentials
        .as_ref()
        .and_then(|c| c.get("credentialsFile"));
    if let Some(file) = file {
        let field = "spec.awsCredentials.credentialsFile.secretRef";
        let secret_ref = file.get("secretRef");
        let name = secret_ref
            .and_then(|r| r.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| {
                Diagnostic::error("credentialsFile needs secretRef.name").field(field)
            })?;
        let namespace = secret_ref
            .and_then(|r| r.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or(&policy.namespace);
        let profile = file
            .get("profile")
            .and_then(|p| p.as_str())
            .unwrap_or("default");
        let secret = resources
            .secrets
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
            .ok_or_else(|| {
                Diagnostic::error(format!("Secret {namespace}/{name} does not exist"))
                    .field(format!("{field}.name"))
            })?;
        let text = secret.spec.values.get("credentials").ok_or_else(|| {
            Diagnostic::error(format!(
                "Secret {namespace}/{name} has no key \"credentials\""
            ))
            .field(field)
        })?;
        return aws_profile(text, profile).map(Provided::Static).ok_or_else(|| {
            Diagnostic::error(format!(
                "Secret {namespace}/{name} key \"credentials\" has no profile [{profile}] with aws_access_key_id and aws_secret_access_key"
            ))
            .field("spec.awsCredentials.credentialsFile.profile")
        });
    }
    if let Some(exchange) = policy
        .spec
        .aws_credentials
        .as_ref()
        .and_then(|c| c.get("oidcExchangeToken"))
    {
        return super::minted::aws_oidc_source(resources, options, policy, exchange)
            .map(Provided::Minted);
    }
    match (&options.aws_environment, &options.mint.aws) {
        (Some(env), _) => Ok(Provided::Static(CredentialValue::Aws {
            access_key_id: env.access_key_id.clone(),
            secret_access_key: env.secret_access_key.clone(),
            session_token: env.session_token.clone(),
        })),
        (None, Some(source)) => Ok(Provided::Minted(MintSource::Aws(source.clone()))),
        (None, None) => Err(Diagnostic::warning(
            "no AWS credentials: give spec.awsCredentials.credentialsFile.secretRef, or give the controller AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or AWS_CONTAINER_CREDENTIALS_FULL_URI; requests to this backend fail until then",
        )
        .field("spec.awsCredentials.credentialsFile")),
    }
}

/// Reads one profile of an AWS shared credentials (INI) file.
pub fn aws_profile(text: &str, profile: &str) -> Option<CredentialValue> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let section = section
                .strip_prefix("profile ")
                .map(str::trim)
                .unwrap_or(section);
            in_profile = section == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    Some(CredentialValue::Aws {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_profiles() {
        let text = "# c\n[default]\naws_access_key_id = AK1\naws_secret_access_key=S1\n\n[profile other]\naws_access_key_id=AK2\naws_secret_access_key = S2\naws_session_token = T2\n[empty]\naws_access_key_id=X\n";
        assert_eq!(
            aws_profile(text, "default"),
            Some(CredentialValue::Aws {
                access_key_id: "AK1".into(),
                secret_access_key: "S1".into(),
                session_token: None
            })
        );
        assert_eq!(
            aws_profile(text, "other"),
            Some(CredentialValue::Aws {
                access_key_id: "AK2".into(),
                secret_access_key: "S2".into(),
                session_token: Some("T2".into())
            })
        );
        assert_eq!(aws_profile(text, "empty"), None);
        assert_eq!(aws_profile(text, "missing"), None);
    }
}

#[cfg(test)]
mod aws_tests {
    use super::super::{translate, AwsEnvironment, Options};
    use crate::credentials::CredentialValue;
    use crate::error::Severity;

    const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec: {gatewayClassName: aigw, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: bedrock, namespace: default}
spec: {endpoints: [{fqdn: {hostname: bedrock-runtime.us-west-2.amazonaws.com, port: 443}}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: bedrock, namespace: default}
spec:
  schema: {name: AWSAnthropic, version: bedrock-2023-05-31}
  backendRef: {name: bedrock, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: route, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: bedrock}]}]
"#;

    fn options(env: Option<AwsEnvironment>) -> Options {
        Options {
            aws_environment: env,
            ..Options::for_tests()
        }
    }

    fn run(policy: &str, env: Option<AwsEnvironment>) -> super::super::Translation {
        let mut resources = Default::default();
        let mut diagnostics = Vec::new();
        let text = format!("{BASE}---\n{policy}");
        crate::load::load_str("test.yaml", &text, &mut resources, &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        translate(&resources, &options(env))
    }

    const ENV_POLICY: &str = r#"
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: aws, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}]
  type: AWSCredentials
  awsCredentials: {region: us-west-2}
"#;

    #[test]
    fn credentials_from_the_environment() {
        let env = AwsEnvironment {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            session_token: Some("TOKEN".into()),
        };
        let t = run(ENV_POLICY, Some(env));
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_eq!(
            t.credentials.credentials.get("default/aws"),
            Some(&CredentialValue::Aws {
                access_key_id: "AKID".into(),
                secret_access_key: "SECRET".into(),
                session_token: Some("TOKEN".into()),
            })
        );
        let cluster = serde_json::to_string(&(&t.listeners, &t.clusters)).unwrap();
        assert!(
            !cluster.contains("SECRET"),
            "secrets never reach Envoy's config"
        );
        assert!(cluster.contains("aws_sig_v4") && cluster.contains("us-west-2"));
    }

    #[test]
    fn missing_credentials_warn_and_keep_serving() {
        let t = run(ENV_POLICY, None);
        assert_eq!(t.clusters.len(), 1, "the backend is still served");
        assert!(t.credentials.credentials.is_empty());
        let d = t
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Warning)
            .expect("a warning");
        assert_eq!(
            d.resource.as_deref(),
            Some("BackendSecurityPolicy default/aws")
        );
        assert_eq!(
            d.field.as_deref(),
            Some("spec.awsCredentials.credentialsFile")
        );
        assert!(d.message.contains("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn credentials_file_secret_wins_over_the_environment() {
        let policy = r#"
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: aws, namespace: default}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}]
  type: AWSCredentials
  awsCredentials:
    region: eu-west-1
    credentialsFile: {secretRef: {name: aws-creds}, profile: prod}
---
apiVersion: v1
kind: Secret
metadata: {name: aws-creds, namespace: default}
stringData:
  credentials: "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[prod]\naws_access_key_id = P\naws_secret_access_key = PS\n"
"#;
        let env = AwsEnvironment {
            access_key_id: "ENV".into(),
            secret_access_key: "ENVS".into(),
            session_token: None,
        };
        let t = run(policy, Some(env));
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert!(matches!(
            t.credentials.credentials.get("default/aws"),
            Some(CredentialValue::Aws { access_key_id, .. }) if access_key_id == "P"
        ));
        let missing = policy.replace("profile: prod", "profile: nope");
        let t = run(&missing, None);
        let d = &t.diagnostics[0];
        assert!(d.message.contains("[nope]"), "{}", d.message);
        assert_eq!(
            d.field.as_deref(),
            Some("spec.awsCredentials.credentialsFile.profile")
        );
    }
}
