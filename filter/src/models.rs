//! The models the routes serve: the unknown-model check and `GET /v1/models`.

use crate::config::{ModelMatch, ModelRoute};
use serde_json::json;

/// What the filter can tell about a model before Envoy routes it.
#[derive(Debug, PartialEq, Eq)]
pub enum ModelLookup {
    Served,
    /// No exact or prefix rule matches, but a regex rule might: Envoy decides.
    MaybeServed,
    Unknown,
}

pub fn lookup(models: &[ModelRoute], model: &str) -> ModelLookup {
    let mut has_regex = false;
    for route in models {
        match &route.matcher {
            ModelMatch::Exact(m) if m == model => return ModelLookup::Served,
            ModelMatch::Prefix(p) if model.starts_with(p.as_str()) => return ModelLookup::Served,
            ModelMatch::Regex(_) => has_regex = true,
            _ => {}
        }
    }
    if has_regex {
        ModelLookup::MaybeServed
    } else {
        ModelLookup::Unknown
    }
}

/// OpenAI's list shape, one entry per exactly-named model, without repeats.
pub fn list_body(models: &[ModelRoute], created: u64) -> Vec<u8> {
    let mut seen = std::collections::BTreeSet::new();
    let data: Vec<_> = models
        .iter()
        .filter_map(|route| match &route.matcher {
            ModelMatch::Exact(id) if seen.insert(id.clone()) => Some(json!({
                "id": id,
                "object": "model",
                "created": created,
                "owned_by": route.owned_by,
            })),
            _ => None,
        })
        .collect();
    json!({"object": "list", "data": data})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: ModelMatch) -> ModelRoute {
        ModelRoute {
            matcher: m,
            owned_by: "acme".into(),
        }
    }

    #[test]
    fn lookup_table() {
        let models = vec![
            route(ModelMatch::Exact("a".into())),
            route(ModelMatch::Prefix("gpt-".into())),
        ];
        assert_eq!(lookup(&models, "a"), ModelLookup::Served);
        assert_eq!(lookup(&models, "gpt-4o"), ModelLookup::Served);
        assert_eq!(lookup(&models, "b"), ModelLookup::Unknown);
        let mut with_regex = models.clone();
        with_regex.push(route(ModelMatch::Regex("c.*".into())));
        assert_eq!(lookup(&with_regex, "b"), ModelLookup::MaybeServed);
    }

    #[test]
    fn list_dedups_exact_models() {
        let models = vec![
            route(ModelMatch::Exact("a".into())),
            route(ModelMatch::Exact("a".into())),
            route(ModelMatch::Exact("b".into())),
            route(ModelMatch::Prefix("p".into())),
        ];
        let v: serde_json::Value = serde_json::from_slice(&list_body(&models, 42)).unwrap();
        assert_eq!(v["object"], "list");
        let ids: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(v["data"][0]["created"], 42);
        assert_eq!(v["data"][0]["owned_by"], "acme");
    }
}
