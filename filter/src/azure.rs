//! Azure OpenAI: the OpenAI API under per-deployment paths with an
//! `api-version` query parameter. Bodies and responses are OpenAI's own.

use crate::config::BackendConfig;
use crate::error::GatewayError;

/// Used when the AIServiceBackend gives no `schema.version`: the newest GA
/// data-plane version when this was written.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// `{prefix}/deployments/{deployment}{suffix}?api-version=...`, where the
/// deployment is the model sent to this backend. The client's own query is
/// kept, except an `api-version` of its own: the backend's configuration
/// decides which API it speaks.
pub fn path(
    suffix: &str,
    query: &str,
    backend: &BackendConfig,
    model: &str,
) -> Result<String, GatewayError> {
    let deployment = backend.model_name_override.as_deref().unwrap_or(model);
    // Deployment names are letters, digits, '-', '_' and '.'; anything else
    // would change the path's meaning.
    let valid = !deployment.is_empty()
        && deployment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && deployment != "."
        && deployment != "..";
    if !valid {
        return Err(GatewayError::bad_request(format!(
            "model {deployment:?} is not a valid Azure OpenAI deployment name"
        ))
        .with_param("model"));
    }
    let prefix = backend
        .prefix
        .as_deref()
        .unwrap_or("/openai")
        .trim_end_matches('/');
    let version = backend.version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    let mut path = format!("{prefix}/deployments/{deployment}{suffix}?api-version={version}");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case("api-version") {
            path.push('&');
            path.push_str(pair);
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchemaName;

    fn azure(version: Option<&str>, over: Option<&str>) -> BackendConfig {
        BackendConfig {
            schema: SchemaName::AzureOpenAI,
            version: version.map(str::to_string),
            model_name_override: over.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn paths() {
        let cases = [
            (
                "/chat/completions",
                "",
                azure(Some("2024-12-01-preview"), None),
                "gpt-5-nano",
                "/openai/deployments/gpt-5-nano/chat/completions?api-version=2024-12-01-preview",
            ),
            (
                "/embeddings",
                "",
                azure(None, Some("emb.small_1")),
                "text-embedding-3-small",
                "/openai/deployments/emb.small_1/embeddings?api-version=2024-10-21",
            ),
            (
                "/chat/completions",
                "api-version=1999-01-01&x=1",
                azure(Some("v"), None),
                "d",
                "/openai/deployments/d/chat/completions?api-version=v&x=1",
            ),
        ];
        for (suffix, query, backend, model, want) in cases {
            assert_eq!(path(suffix, query, &backend, model).unwrap(), want);
        }
    }

    #[test]
    fn deployment_names_that_would_change_the_path_are_refused() {
        for model in ["", "a/b", "..", "a?b", "a b", "a%2fb", "ü"] {
            let e = path("/chat/completions", "", &azure(None, None), model).unwrap_err();
            assert_eq!(e.status, 400, "{model}");
        }
    }
}
