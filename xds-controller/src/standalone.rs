//! Standalone mode's configuration source: YAML files, secrets given on the
//! command line, or (with no file) a configuration made from the environment.

use crate::error::Diagnostic;
use crate::load::load_str;
use crate::resources::{Named, Resources, SecretData, Source};
use std::path::PathBuf;

/// `--secret namespace/name=env:VAR` or `=file:PATH`: the `apiKey` of a
/// Kubernetes Secret, for standalone use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArg {
    pub namespace: String,
    pub name: String,
    pub from: SecretFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    Env(String),
    File(PathBuf),
}

pub fn parse_secret_arg(text: &str) -> Result<SecretArg, String> {
    let (target, from) = text
        .split_once('=')
        .ok_or_else(|| format!("--secret {text:?}: expected NAME=env:VAR or NAME=file:PATH"))?;
    let (namespace, name) = target.split_once('/').unwrap_or(("default", target));
    let from = if let Some(var) = from.strip_prefix("env:") {
        SecretFrom::Env(var.to_string())
    } else if let Some(path) = from.strip_prefix("file:") {
        SecretFrom::File(PathBuf::from(path))
    } else {
        return Err(format!(
            "--secret {text:?}: the value must start with env: or file:"
        ));
    };
    Ok(SecretArg {
        namespace: namespace.to_string(),
        name: name.to_string(),
        from,
    })
}

/// A host and port.
pub type HostPort = (String, u16);

/// `--resolve host:port=address:port`
pub fn parse_resolve(text: &str) -> Result<(HostPort, HostPort), String> {
    let err = || format!("--resolve {text:?}: expected HOST:PORT=ADDRESS:PORT");
    let (from, to) = text.split_once('=').ok_or_else(err)?;
    let split = |s: &str| -> Option<HostPort> {
        let (h, p) = s.rsplit_once(':')?;
        Some((h.to_string(), p.parse().ok()?))
    };
    Ok((split(from).ok_or_else(err)?, split(to).ok_or_else(err)?))
}

/// `--map-port 80=8080`
pub fn parse_port_map(text: &str) -> Result<(u16, u16), String> {
    let err = || format!("--map-port {text:?}: expected GATEWAY_PORT=LOCAL_PORT");
    let (a, b) = text.split_once('=').ok_or_else(err)?;
    Ok((a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?))
}

/// Reads every file and secret. I/O errors become diagnostics too.
pub fn load(files: &[PathBuf], secrets: &[SecretArg]) -> (Resources, Vec<Diagnostic>) {
    let mut resources = Resources::default();
    let mut diagnostics = Vec::new();
    for file in files {
        let name = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => load_str(&name, &text, &mut resources, &mut diagnostics),
            Err(e) => diagnostics.push(Diagnostic::error(format!("cannot read {name}: {e}"))),
        }
    }
    for secret in secrets {
        let value = match &secret.from {
            SecretFrom::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            SecretFrom::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        };
        match value {
            Ok(value) => resources.secrets.push(Named {
                name: secret.name.clone(),
                namespace: secret.namespace.clone(),
                source: Source {
                    file: "--secret".into(),
                    document: 0,
                },
                spec: SecretData {
                    values: [("apiKey".to_string(), value.trim().to_string())].into(),
                },
            }),
            Err(e) => diagnostics.push(Diagnostic::error(format!(
                "--secret {}/{}: {e}",
                secret.namespace, secret.name
            ))),
        }
    }
    (resources, diagnostics)
}

/// Where an OpenAI-compatible base URL points.
#[derive(Debug, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub prefix: String,
}

pub fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{url:?} has a bad port"))?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let prefix = format!("/{}", path.trim_end_matches('/'));
    Ok(BaseUrl {
        host: host.to_string(),
        port,
        tls,
        prefix: if prefix == "/" { "/v1".into() } else { prefix },
    })
}

/// The YAML `aigw run` serves when given no file: one route for any model
/// to `base_url`, with `api_key` if given.
pub fn environment_yaml(base: &BaseUrl, with_key: bool) -> String {
    let mut yaml = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: aigw}}
spec:
  gatewayClassName: aigw
  listeners: [{{name: http, port: 1975, protocol: HTTP}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: upstream}}
spec:
  endpoints: [{{fqdn: {{hostname: "{host}", port: {port}}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: upstream}}
spec:
  schema: {{name: OpenAI, prefix: "{prefix}"}}
  backendRef: {{name: upstream, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: any-model}}
spec:
  parentRefs: [{{name: aigw}}]
  rules:
  - backendRefs: [{{name: upstream}}]
"#,
        host = base.host,
        port = base.port,
        prefix = base.prefix,
    );
    if with_key {
        yaml.push_str(
            r#"---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: upstream-key}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: upstream}]
  type: APIKey
  apiKey: {secretRef: {name: upstream-key}}
"#,
        );
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        assert_eq!(
            parse_resolve("a.svc:8000=127.0.0.1:18001").unwrap(),
            (("a.svc".into(), 8000), ("127.0.0.1".into(), 18001))
        );
        assert!(parse_resolve("a.svc=127.0.0.1").is_err());
        assert_eq!(parse_port_map("80=8080").unwrap(), (80, 8080));
        let s = parse_secret_arg("team/key=env:K").unwrap();
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("team", "key"));
        assert_eq!(
            parse_secret_arg("key=file:/x").unwrap().from,
            SecretFrom::File("/x".into())
        );
        assert!(parse_secret_arg("key=K").is_err());
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            parse_base_url("http://localhost:11434/v1").unwrap(),
            BaseUrl {
                host: "localhost".into(),
                port: 11434,
                tls: false,
                prefix: "/v1".into()
            }
        );
        assert_eq!(
            parse_base_url("https://api.openai.com").unwrap(),
            BaseUrl {
                host: "api.openai.com".into(),
                port: 443,
                tls: true,
                prefix: "/v1".into()
            }
        );
        assert!(parse_base_url("ftp://x").is_err());
    }

    #[test]
    fn environment_yaml_loads_cleanly() {
        let base = parse_base_url("https://api.openai.com/v1").unwrap();
        let mut r = Resources::default();
        let mut d = Vec::new();
        load_str("env", &environment_yaml(&base, true), &mut r, &mut d);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(r.backend_security_policies.len(), 1);
    }
}
