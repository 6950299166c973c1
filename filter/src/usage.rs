//! Token usage as providers report it, normalized.

use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub total: u64,
    pub cached_input: u64,
    pub cache_creation_input: u64,
    pub reasoning: u64,
}

fn field(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for key in path {
        match cur.get(key) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

impl Usage {
    /// Reads an OpenAI `usage` object (chat, completions, embeddings).
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        if !usage.is_object() {
            return None;
        }
        let input = field(usage, &["prompt_tokens"]);
        let output = field(usage, &["completion_tokens"]);
        let total = match usage.get("total_tokens").and_then(Value::as_u64) {
            Some(t) => t,
            None => input.saturating_add(output),
        };
        Some(Usage {
            input,
            output,
            total,
            cached_input: field(usage, &["prompt_tokens_details", "cached_tokens"]),
            cache_creation_input: 0,
            reasoning: field(usage, &["completion_tokens_details", "reasoning_tokens"]),
        })
    }

    /// Reads the usage of a whole OpenAI response body.
    pub fn from_openai_body(body: &[u8]) -> Option<Usage> {
        Usage::from_openai(&usage_object(body)?)
    }
}

/// The `usage` member of a JSON object, the rest skipped unbuilt: an
/// answer's choices can be large, and this runs on every response.
pub fn usage_object(body: &[u8]) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<Value>,
    }
    // (A derived struct would also take a one-element array.)
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<WithUsage>(body).ok()?.usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_object_skips_the_rest_of_the_body() {
        let body = br#"{"choices":[{"message":{"content":"x","tool_calls":[{"a":[1,2,{"b":null}]}]}}],"usage":{"prompt_tokens":3},"z":"\u00e9"}"#;
        assert_eq!(usage_object(body), Some(json!({"prompt_tokens": 3})));
        for body in [
            &br#"{"usage":null}"#[..],
            br#"{"id":"x"}"#,
            br#"[{"usage":{}}]"#,
            br#"{"usage":{"prompt_tokens":3}"#,
            b"",
        ] {
            assert_eq!(
                usage_object(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn openai_detailed_usage() {
        let u = Usage::from_openai(&json!({
            "prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 12}
        }))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                input: 20,
                output: 30,
                total: 50,
                cached_input: 4,
                cache_creation_input: 0,
                reasoning: 12
            }
        );
    }

    #[test]
    fn embeddings_usage_and_missing_total() {
        let u = Usage::from_openai(&json!({"prompt_tokens": 8, "total_tokens": 8})).unwrap();
        assert_eq!((u.input, u.output, u.total), (8, 0, 8));
        let u = Usage::from_openai(&json!({"prompt_tokens": 2, "completion_tokens": 3})).unwrap();
        assert_eq!(u.total, 5);
        assert_eq!(Usage::from_openai(&json!(null)), None);
        assert_eq!(Usage::from_openai_body(b"{\"id\":1}"), None);
    }
}
