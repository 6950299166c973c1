//! GenAI metrics after the OpenTelemetry semantic conventions, exported
//! through Envoy's stats.
//!
//! Envoy's wasm metrics have no labels, so the labels ride in the metric
//! name and the bootstrap's `stats_config.stats_tags` (one regex per label,
//! see [`TAGS`]) turn them back into Prometheus labels:
//!
//! ```text
//! gen_ai_client_token_usage;op=chat;provider=openai;req_model=gpt-4o;resp_model=gpt-4o;backend=default/openai;token=input
//!   -> gen_ai_client_token_usage{gen_ai_operation_name="chat",gen_ai_provider_name="openai",...}
//! ```
//!
//! Label values never contain `;` or `=` (see [`sanitize`]), so each
//! `;key=value` segment is found without ambiguity. Cardinality is bounded:
//! a request model is its own label only when a route names it exactly,
//! others are `other`; a response model only when it is (a variant of) the
//! model asked for or a configured one.
//!
//! Durations are integer milliseconds: Envoy histograms take integers.

use crate::config::{BackendConfig, ModelMatch, PluginConfig, SchemaName};
use crate::request::Endpoint;
use crate::usage::Usage;

/// Histogram: input and output tokens per request (`gen_ai.client.token.usage`).
pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// Counter: exact token sums by type (input, output, total, cached_input,
/// cache_creation_input, reasoning).
pub const TOKENS_TOTAL: &str = "aigw_token_usage_total";
/// Counter: requests by outcome.
pub const REQUESTS_TOTAL: &str = "aigw_requests_total";
/// Histogram: whole request, ms (`gen_ai.server.request.duration`).
pub const REQUEST_DURATION: &str = "gen_ai_server_request_duration_milliseconds";
/// Histogram: streams only, ms (`gen_ai.server.time_to_first_token`).
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_milliseconds";
/// Histogram: streams only, ms (`gen_ai.server.time_per_output_token`).
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_milliseconds";

/// `(key in the metric name, Prometheus label)`, in name order.
pub const TAGS: [(&str, &str); 7] = [
    ("op", "gen_ai_operation_name"),
    ("provider", "gen_ai_provider_name"),
    ("req_model", "gen_ai_request_model"),
    ("resp_model", "gen_ai_response_model"),
    ("backend", "aigw_backend"),
    ("error", "error_type"),
    ("token", "gen_ai_token_type"),
];

/// The Envoy tag-extraction regex of a name key: the first group is cut
/// from the name, the second is the label's value. Anchored on the
/// `wasmcustom.` prefix Envoy gives plugin metrics so that Envoy runs it on
/// those names only: unanchored, every stat of every cluster went through
/// all of them (std::regex), 2000 clusters took 8 s to apply instead of 1.
pub fn tag_regex(key: &str) -> String {
    format!(r"^wasmcustom\..*?(;{key}=([^;]*))")
}

/// Label values this long are cut.
const MAX_VALUE: usize = 96;
/// Response bytes searched for the `model` field.
pub const MODEL_SCAN_LIMIT: usize = 64 << 10;
/// Distinct metric names one VM defines at most; beyond, nothing is recorded.
pub const MAX_METRICS: usize = 4096;
pub const OTHER: &str = "other";

/// A label value safe inside a metric name: no `;`, `=`, whitespace or
/// control characters (they become `_`), at most 96 bytes.
pub fn sanitize(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_VALUE));
    for c in value.chars() {
        let c = if c == ';' || c == '=' || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_VALUE {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        OTHER.into()
    } else {
        out
    }
}

/// `gen_ai.operation.name`.
pub fn operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::AnthropicMessages => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
        Endpoint::AnthropicCountTokens => "count_tokens",
        Endpoint::Models => "models",
    }
}

/// `gen_ai.provider.name` of a backend schema.
pub fn provider_name(schema: SchemaName) -> &'static str {
    match schema {
        SchemaName::OpenAI => "openai",
        SchemaName::Anthropic => "anthropic",
        SchemaName::AWSAnthropic | SchemaName::AWSBedrock => "aws.bedrock",
        SchemaName::AzureOpenAI => "azure.ai.openai",
        SchemaName::GCPVertexAI | SchemaName::GCPAnthropic => "gcp.vertex_ai",
    }
}

/// The request model label: the model when a route names it exactly.
pub fn request_model_label(config: &PluginConfig, model: &str) -> String {
    let named = config
        .models
        .iter()
        .any(|m| matches!(&m.matcher, ModelMatch::Exact(e) if e == model));
    if named {
        sanitize(model)
    } else {
        OTHER.into()
    }
}

/// The response model label: kept when it is the model asked for (or sent,
/// after an override), a dated or shortened variant of it, or a model a
/// route names; otherwise `other`.
pub fn response_model_label(
    config: &PluginConfig,
    request_model: &str,
    backend: Option<&BackendConfig>,
    response_model: &str,
) -> String {
    let sent = backend.and_then(|b| b.model_name_override.as_deref());
    let related = |asked: &str| {
        !asked.is_empty()
            && (response_model.starts_with(asked)
                || asked.starts_with(response_model)
                || asked.contains(response_model))
    };
    let configured = config
        .models
        .iter()
        .any(|m| matches!(&m.matcher, ModelMatch::Exact(e) if e == response_model));
    if !response_model.is_empty()
        && (related(request_model) || sent.is_some_and(related) || configured)
    {
        sanitize(response_model)
    } else {
        OTHER.into()
    }
}

/// Finds the first `"model": "..."` in a JSON body or SSE stream. Escaped
/// quotes inside strings cannot match, so message text cannot fake it.
pub fn find_model(bytes: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"model\"";
    let mut from = 0;
    while let Some(pos) = find(&bytes[from..], KEY) {
        let mut i = from + pos + KEY.len();
        from = i;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'"') {
            continue;
        }
        let start = i + 1;
        let len = bytes[start..]
            .iter()
            .take(256)
            .position(|&b| b == b'"' || b == b'\\')?;
        if bytes.get(start + len) != Some(&b'"') {
            return None;
        }
        return std::str::from_utf8(&bytes[start..start + len])
            .ok()
            .map(str::to_string);
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the router role watches while a request is served.
#[derive(Debug, Default, Clone)]
pub struct Observer {
    pub start_ns: Option<u64>,
    pub first_byte_ns: Option<u64>,
    pub backend: Option<String>,
    pub response_model: Option<String>,
    /// Response bytes searched for the model so far.
    pub scanned: usize,
    seen: Vec<u8>,
    pub recorded: bool,
}

impl Observer {
    /// Milliseconds from the request's start to `ns`.
    pub fn ms_since_start(&self, ns: u64) -> Option<u64> {
        self.start_ns.map(|s| ns.saturating_sub(s) / 1_000_000)
    }

    /// Whether the response body is still worth searching for the model.
    pub fn wants_model(&self) -> bool {
        self.response_model.is_none() && self.scanned < MODEL_SCAN_LIMIT
    }

    /// Searches the next response chunk, with the tail of the ones before
    /// (a field may straddle chunks). At most [`MODEL_SCAN_LIMIT`] bytes
    /// are kept, and none once the model is found.
    pub fn scan(&mut self, chunk: &[u8]) {
        let take = chunk
            .len()
            .min(MODEL_SCAN_LIMIT - self.scanned.min(MODEL_SCAN_LIMIT));
        let from = self.seen.len().saturating_sub(KEY_AND_VALUE);
        self.seen.extend_from_slice(&chunk[..take]);
        self.scanned = self.scanned.saturating_add(take.max(1));
        self.response_model = find_model(&self.seen[from..]);
        if self.response_model.is_some() || !self.wants_model() {
            self.seen = Vec::new();
        }
    }
}

/// Longest `"model": "..."` searched again when the next chunk comes.
const KEY_AND_VALUE: usize = 300;

/// How one request ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub endpoint: Option<Endpoint>,
    pub request_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub usage: Option<Usage>,
    pub end_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

/// One metric update: the metric is `base`, the request's labels, then
/// `token` for the token metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub base: &'static str,
    pub token: Option<&'static str>,
    pub value: u64,
}

impl Record {
    /// The Envoy metric name under `labels`.
    pub fn name(&self, labels: &str) -> String {
        match self.token {
            Some(token) => format!("{}{labels};token={token}", self.base),
            None => format!("{}{labels}", self.base),
        }
    }
}

/// The metric updates for one finished request, all under one label set
/// (names are built only when a VM first defines them).
#[derive(Debug, Default)]
pub struct Records {
    pub labels: String,
    pub list: Vec<Record>,
}

/// The metric updates for one finished request.
pub fn records(config: &PluginConfig, observer: &Observer, outcome: &Outcome) -> Records {
    let Some(endpoint) = outcome.endpoint else {
        return Records::default();
    };
    let backend_config = observer
        .backend
        .as_deref()
        .and_then(|b| config.backends.get(b));
    let request_model = outcome.request_model.as_deref().unwrap_or("");
    let mut labels = format!(";op={}", operation_name(endpoint));
    if let Some(b) = backend_config {
        labels.push_str(";provider=");
        labels.push_str(provider_name(b.schema));
    }
    labels.push_str(";req_model=");
    labels.push_str(&request_model_label(config, request_model));
    if let Some(m) = &observer.response_model {
        labels.push_str(";resp_model=");
        labels.push_str(&response_model_label(
            config,
            request_model,
            backend_config,
            m,
        ));
    }
    if let (Some(name), Some(_)) = (&observer.backend, backend_config) {
        labels.push_str(";backend=");
        labels.push_str(&sanitize(crate::failover::service_of(name)));
    }
    if outcome.status >= 400 || outcome.status == 0 {
        labels.push_str(";error=");
        labels.push_str(&if outcome.status == 0 {
            "incomplete".to_string()
        } else {
            outcome.status.to_string()
        });
    }
    let record = |kind, base, token, value| Record {
        kind,
        base,
        token,
        value,
    };
    let mut out = vec![record(Kind::Counter, REQUESTS_TOTAL, None, 1)];
    if let Some(ms) = observer.ms_since_start(outcome.end_ns) {
        out.push(record(Kind::Histogram, REQUEST_DURATION, None, ms));
    }
    if let Some(u) = outcome.usage {
        for (token, value) in [("input", u.input), ("output", u.output)] {
            out.push(record(Kind::Histogram, TOKEN_USAGE, Some(token), value));
        }
        for (token, value) in [
            ("input", u.input),
            ("output", u.output),
            ("total", u.total),
            ("cached_input", u.cached_input),
            ("cache_creation_input", u.cache_creation_input),
            ("reasoning", u.reasoning),
        ] {
            out.push(record(Kind::Counter, TOKENS_TOTAL, Some(token), value));
        }
    }
    if outcome.stream && outcome.status == 200 {
        if let Some(first) = observer.first_byte_ns {
            if let Some(ms) = observer.ms_since_start(first) {
                out.push(record(Kind::Histogram, TIME_TO_FIRST_TOKEN, None, ms));
            }
            let output = outcome.usage.map_or(0, |u| u.output);
            if output > 1 {
                let ms = outcome.end_ns.saturating_sub(first) / 1_000_000 / (output - 1);
                out.push(record(Kind::Histogram, TIME_PER_OUTPUT_TOKEN, None, ms));
            }
        }
    }
    Records { labels, list: out }
}

/// Defines metrics lazily, one id per name per VM, and applies records.
#[cfg(target_arch = "wasm32")]
pub mod sink {
    use super::{Kind, Record, Records, MAX_METRICS};
    use proxy_wasm::types::MetricType;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// The ids of a label set's metrics, by base name and token.
    type Ids = Vec<((&'static str, Option<&'static str>), u32)>;

    thread_local! {
        // One lookup per request by its label set; a metric's full name is
        // built only when it is first defined.
        static IDS: RefCell<(HashMap<String, Ids>, usize)> = RefCell::new(Default::default());
        // Counter increments not yet handed to Envoy, by metric id.
        static PENDING: RefCell<Vec<(u32, i64)>> = const { RefCell::new(Vec::new()) };
        // Histogram samples not yet handed to Envoy, as (metric id, value).
        static SAMPLES: RefCell<Vec<(u32, u64)>> = const { RefCell::new(Vec::new()) };
    }

    /// Samples held at most between two flushes (16 bytes each); a VM
    /// that gathers more (over ~4000 requests a second) hands them over at once.
    const MAX_SAMPLES: usize = 4096;

    fn id(labels: &str, r: &Record) -> Option<u32> {
        IDS.with(|ids| {
            let (by_labels, defined) = &mut *ids.borrow_mut();
            let key = (r.base, r.token);
            if let Some((_, id)) = by_labels
                .get(labels)
                .and_then(|ids| ids.iter().find(|(k, _)| *k == key))
            {
                return Some(*id);
            }
            if *defined >= MAX_METRICS {
                return None;
            }
            let kind = match r.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Histogram => MetricType::Histogram,
            };
            let id = proxy_wasm::hostcalls::define_metric(kind, &r.name(labels)).ok()?;
            *defined += 1;
            by_labels
                .entry(labels.to_string())
                .or_default()
                .push((key, id));
            Some(id)
        })
    }

    /// Counters are summed here and handed to Envoy by [`flush`] (the
    /// root context's tick, every second): a host call each per second
    /// instead of per request.
    fn add_pending(id: u32, by: i64) {
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            match p.iter_mut().find(|(i, _)| *i == id) {
                Some((_, sum)) => *sum = sum.saturating_add(by),
                None => p.push((id, by)),
            }
        });
    }

    /// Histogram samples wait for the flush too: recorded one by one in
    /// a tight loop they cost Envoy far less than on each request's own
    /// path (a host call there costs about 2 us with cold caches), and a
    /// histogram loses nothing by arriving up to a second late.
    fn add_sample(id: u32, value: u64) {
        let full = SAMPLES.with(|s| {
            let mut s = s.borrow_mut();
            s.push((id, value));
            s.len() >= MAX_SAMPLES
        });
        if full {
            record_samples();
        }
    }

    fn record_samples() {
        let samples = SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut()));
        for (id, value) in samples {
            let _ = proxy_wasm::hostcalls::record_metric(id, value);
        }
    }

    /// Hands Envoy the counter increments and histogram samples gathered
    /// since the last flush.
    pub fn flush() {
        let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
        for (id, by) in pending {
            let _ = proxy_wasm::hostcalls::increment_metric(id, by);
        }
        record_samples();
    }

    pub fn apply(records: &Records) {
        for r in &records.list {
            // Defined even at 0, so the series exists; adding 0 is a host
            // call that changes nothing.
            let Some(id) = id(&records.labels, r) else {
                continue;
            };
            match r.kind {
                Kind::Counter if r.value > 0 => {
                    let by = i64::try_from(r.value).unwrap_or(i64::MAX);
                    add_pending(id, by);
                }
                Kind::Counter => {}
                Kind::Histogram => add_sample(id, r.value),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each record as (kind, full metric name, value).
    fn named(r: &Records) -> Vec<(Kind, String, u64)> {
        r.list
            .iter()
            .map(|x| (x.kind, x.name(&r.labels), x.value))
            .collect()
    }
    use crate::config::ModelRoute;

    fn config() -> PluginConfig {
        let mut c = PluginConfig::default();
        for m in [
            "gpt-4o",
            "Qwen/Qwen3-1.7B",
            "anthropic.claude-3-haiku-20240307-v1:0",
        ] {
            c.models.push(ModelRoute {
                matcher: ModelMatch::Exact(m.into()),
                owned_by: String::new(),
            });
        }
        c.models.push(ModelRoute {
            matcher: ModelMatch::Prefix("llama".into()),
            owned_by: String::new(),
        });
        c.backends.insert(
            "default/bedrock".into(),
            BackendConfig {
                schema: SchemaName::AWSAnthropic,
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn sanitize_keeps_model_names_readable() {
        assert_eq!(sanitize("Qwen/Qwen3-1.7B"), "Qwen/Qwen3-1.7B");
        assert_eq!(sanitize("a;b=c d\n"), "a_b_c_d_");
        assert_eq!(sanitize(""), "other");
        assert_eq!(sanitize(&"é".repeat(100)).len(), 96);
    }

    #[test]
    fn request_model_is_bounded_to_named_models() {
        let c = config();
        assert_eq!(request_model_label(&c, "gpt-4o"), "gpt-4o");
        assert_eq!(request_model_label(&c, "llama-70b"), "other");
        assert_eq!(request_model_label(&c, "random"), "other");
    }

    #[test]
    fn response_model_variants() {
        let c = config();
        let bedrock = "anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(
            response_model_label(&c, "gpt-4o", None, "gpt-4o-2024-08-06"),
            "gpt-4o-2024-08-06"
        );
        assert_eq!(
            response_model_label(&c, bedrock, None, "claude-3-haiku-20240307"),
            "claude-3-haiku-20240307"
        );
        assert_eq!(response_model_label(&c, "gpt-4o", None, "evil"), "other");
        let over = BackendConfig {
            model_name_override: Some("real".into()),
            ..Default::default()
        };
        assert_eq!(
            response_model_label(&c, "gpt-4o", Some(&over), "real-1"),
            "real-1"
        );
    }

    #[test]
    fn find_model_in_json_and_sse() {
        assert_eq!(
            find_model(br#"{"id":"x","model" : "gpt-4o","choices":[]}"#).as_deref(),
            Some("gpt-4o")
        );
        let sse = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\"}}\n\n";
        assert_eq!(find_model(sse).as_deref(), Some("claude"));
        // Escaped text inside content does not count.
        assert_eq!(
            find_model(br#"{"content":"say \"model\":\"fake\"","model":"real"}"#).as_deref(),
            Some("real")
        );
        assert_eq!(find_model(br#"{"model":5}"#), None);
        assert_eq!(find_model(br#"{"model":"unterminated"#), None);
        assert_eq!(find_model(b""), None);
    }

    #[test]
    fn model_straddling_chunks_is_found() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024","x":1}"#;
        for size in [1, 3, 7, 40] {
            let mut o = Observer::default();
            for chunk in body.chunks(size) {
                if o.wants_model() {
                    o.scan(chunk);
                }
            }
            assert_eq!(o.response_model.as_deref(), Some("gpt-4o-2024"), "{size}");
        }
        let mut o = Observer::default();
        o.scan(&vec![b' '; MODEL_SCAN_LIMIT + 10]);
        assert!(!o.wants_model());
    }

    #[test]
    fn records_for_a_stream() {
        let c = config();
        let observer = Observer {
            start_ns: Some(1_000_000_000),
            first_byte_ns: Some(1_200_000_000),
            backend: Some("default/bedrock".into()),
            response_model: Some("claude-3-haiku-20240307".into()),
            ..Default::default()
        };
        let outcome = Outcome {
            endpoint: Some(Endpoint::AnthropicMessages),
            request_model: Some("anthropic.claude-3-haiku-20240307-v1:0".into()),
            stream: true,
            status: 200,
            usage: Some(Usage {
                input: 10,
                output: 5,
                total: 15,
                ..Default::default()
            }),
            end_ns: 1_600_000_000,
        };
        let r = named(&records(&c, &observer, &outcome));
        let labels = ";op=chat;provider=aws.bedrock;req_model=anthropic.claude-3-haiku-20240307-v1:0;resp_model=claude-3-haiku-20240307;backend=default/bedrock";
        assert_eq!(
            r[0],
            (Kind::Counter, format!("{REQUESTS_TOTAL}{labels}"), 1)
        );
        assert_eq!(
            r[1],
            (Kind::Histogram, format!("{REQUEST_DURATION}{labels}"), 600)
        );
        for expected in [
            (
                Kind::Histogram,
                format!("{TOKEN_USAGE}{labels};token=output"),
                5,
            ),
            (
                Kind::Counter,
                format!("{TOKENS_TOTAL}{labels};token=total"),
                15,
            ),
            (
                Kind::Histogram,
                format!("{TIME_TO_FIRST_TOKEN}{labels}"),
                200,
            ),
            (
                Kind::Histogram,
                format!("{TIME_PER_OUTPUT_TOKEN}{labels}"),
                100,
            ),
        ] {
            assert!(r.contains(&expected), "{expected:?} in {r:?}");
        }
    }

    #[test]
    fn records_for_a_failure() {
        let c = config();
        let observer = Observer {
            start_ns: Some(0),
            ..Default::default()
        };
        let outcome = Outcome {
            endpoint: Some(Endpoint::ChatCompletions),
            request_model: Some("nope".into()),
            status: 404,
            ..Default::default()
        };
        let r = named(&records(&c, &observer, &outcome));
        assert_eq!(
            r[0],
            (
                Kind::Counter,
                format!("{REQUESTS_TOTAL};op=chat;req_model=other;error=404"),
                1
            )
        );
        assert_eq!(r.len(), 2);
        assert!(records(&c, &observer, &Outcome::default()).list.is_empty());
    }

    #[test]
    fn tag_regexes_cut_their_segment() {
        for (key, _) in TAGS {
            assert_eq!(tag_regex(key), format!(r"^wasmcustom\..*?(;{key}=([^;]*))"));
        }
    }
}
