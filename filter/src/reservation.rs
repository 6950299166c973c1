//! Token reservations for reserve-then-settle rate limits (opt-in,
//! `PluginConfig::reserve_output_tokens`): at admission the router publishes
//! how many tokens a request may use, the rate-limit service reserves them
//! against each budget, and when the request ends the real usage (or zero)
//! settles the reservation. Pure.

use crate::request::{Endpoint, RoutingFields};
use serde_json::Value;

/// Bytes of request body counted as one input token. Tokenizers average
/// about 4 bytes of English per token; the JSON around the messages makes
/// the estimate generous. It is settled to the real count afterwards.
pub const BYTES_PER_INPUT_TOKEN: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub input: u64,
    pub output: u64,
}

/// Output tokens the request asks for at most: `max_completion_tokens` or
/// `max_tokens`, times the number of choices `n`. None when it names none.
pub fn requested_output(endpoint: Endpoint, body: &RoutingFields) -> Option<u64> {
    let number = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64);
    let max = match endpoint {
        Endpoint::ChatCompletions => {
            number(&body.max_completion_tokens).or_else(|| number(&body.max_tokens))
        }
        Endpoint::Completions | Endpoint::AnthropicMessages => number(&body.max_tokens),
        Endpoint::Embeddings | Endpoint::AnthropicCountTokens | Endpoint::Models => Some(0),
    }?;
    let choices = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => number(&body.n).unwrap_or(1).max(1),
        _ => 1,
    };
    Some(max.saturating_mul(choices))
}

/// The reservation of a request with a body of `body_len` bytes.
pub fn estimate(
    body_len: usize,
    requested_output: Option<u64>,
    default_output: u64,
) -> Reservation {
    Reservation {
        input: (body_len as u64).div_ceil(BYTES_PER_INPUT_TOKEN),
        output: requested_output.unwrap_or(default_output),
    }
}

/// The filter properties the reservation is published under, one per token
/// cost type (`llm_reserve_<type>`, read by the controller's rate limits).
/// Cached and cache-creation input are parts of the input, reasoning a part
/// of the output: each reserves the whole.
pub fn properties(r: Reservation) -> [(&'static str, u64); 6] {
    [
        ("llm_reserve_input_token", r.input),
        ("llm_reserve_output_token", r.output),
        ("llm_reserve_total_token", r.input.saturating_add(r.output)),
        ("llm_reserve_cached_input_token", r.input),
        ("llm_reserve_cache_creation_input_token", r.input),
        ("llm_reserve_reasoning_token", r.output),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> RoutingFields {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requested_output_table() {
        use Endpoint::*;
        let cases = [
            (ChatCompletions, json!({"max_tokens": 100}), Some(100)),
            (
                ChatCompletions,
                json!({"max_completion_tokens": 50, "max_tokens": 100}),
                Some(50),
            ),
            (
                ChatCompletions,
                json!({"max_tokens": 100, "n": 3}),
                Some(300),
            ),
            (
                ChatCompletions,
                json!({"max_tokens": 100, "n": 0}),
                Some(100),
            ),
            (ChatCompletions, json!({}), None),
            (ChatCompletions, json!({"max_tokens": -1}), None),
            (ChatCompletions, json!({"max_tokens": "7"}), None),
            (
                ChatCompletions,
                json!({"max_tokens": u64::MAX, "n": 2}),
                Some(u64::MAX),
            ),
            (Completions, json!({"max_tokens": 16, "n": 2}), Some(32)),
            (
                AnthropicMessages,
                json!({"max_tokens": 1024, "n": 5}),
                Some(1024),
            ),
            (AnthropicMessages, json!({}), None),
            (Embeddings, json!({"input": "x"}), Some(0)),
            (AnthropicCountTokens, json!({}), Some(0)),
        ];
        for (endpoint, body, want) in cases {
            assert_eq!(
                requested_output(endpoint, &fields(body.clone())),
                want,
                "{endpoint:?} {body}"
            );
        }
    }

    #[test]
    fn estimates_and_properties() {
        assert_eq!(
            estimate(0, Some(10), 99),
            Reservation {
                input: 0,
                output: 10
            }
        );
        assert_eq!(
            estimate(401, None, 99),
            Reservation {
                input: 101,
                output: 99
            }
        );
        let p = properties(estimate(400, Some(50), 0));
        assert_eq!(
            p,
            [
                ("llm_reserve_input_token", 100),
                ("llm_reserve_output_token", 50),
                ("llm_reserve_total_token", 150),
                ("llm_reserve_cached_input_token", 100),
                ("llm_reserve_cache_creation_input_token", 100),
                ("llm_reserve_reasoning_token", 50),
            ]
        );
    }
}
