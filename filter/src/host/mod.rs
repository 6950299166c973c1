//! The thin layer between the pure filter logic and the proxy-wasm ABI:
//! the root context and what both roles share; the roles are in
//! `router` and `upstream`. Nothing here may panic: a panic kills the
//! worker's VM.

mod backend_request;
mod response_guard;
mod router;
#[cfg(feature = "callback-timing")]
mod timing;
mod upstream;

use crate::anthropic::StreamUsage;
use crate::bedrock::EventStreamToSse;
use crate::chat_response::{ChatResponse, Source};
use crate::config::{PluginConfig, Role, SchemaName};
use crate::credentials::Credential;
use crate::credentials::{CredentialCache, Freshness};
use crate::error::{ErrorShape, GatewayError};
use crate::models::{list_body, lookup, ModelLookup};
use crate::request::{handoff, parse_handoff, parse_request, Endpoint, RequestFacts};
use crate::response::{ChunkOutput, JsonBody, OpenAiStream};
use crate::sse::SseSplitter;
use crate::upstream::{
    attempt_headers, credential_header, prepare, prepare_headers_only, UpstreamRequest,
};
use crate::usage::Usage;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use router::RouterFilter;
use upstream::UpstreamFilter;

/// The header routes match the model on. Set only by the gateway.
const MODEL_HEADER: &str = "x-ai-eg-model";
/// Internal: the router role tells the upstream role which API was called.
const ENDPOINT_HEADER: &str = crate::config::HANDOFF_HEADER;
use crate::config::DIRECT_HEADER;
/// Filter state (`wasm.client_api`) read by the controller's local reply mappers.
const CLIENT_API_PROPERTY: &str = "client_api";
/// Endpoint metadata namespace and key that name the backend.
const BACKEND_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigw",
    "backend",
];
/// The backend of the endpoint this request was sent to: by the cluster's
/// name where that names one (one host call of about a microsecond), else
/// from the endpoint's metadata (several: Envoy converts the metadata).
fn picked_backend(ctx: &dyn HttpContext, config: &PluginConfig) -> Option<String> {
    if !config.cluster_backends.is_empty() {
        let cluster = ctx
            .get_property(vec!["xds", "cluster_name"])
            .unwrap_or_default();
        if let Some(backend) = config
            .cluster_backends
            .get(String::from_utf8_lossy(&cluster).as_ref())
        {
            return Some(backend.clone());
        }
    }
    ctx.get_property(BACKEND_METADATA.to_vec())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Endpoint metadata key listing the AIServiceBackends of the endpoint's
/// rule (comma-separated): the scope of the all-cooling-down check.
const PEERS_METADATA: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "aigw",
    "peers",
];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(PluginConfig::default()) })
    });
}}

thread_local! {
    // One VM per worker thread, so this cache is per worker.
    static CREDENTIALS: RefCell<CredentialCache> = RefCell::new(CredentialCache::default());
}

fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}

fn now_secs(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ns(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How often the router role hands its summed counters to Envoy (what
/// `/stats` may lag behind the traffic), and how often either role checks
/// whether its credentials are due for a background refresh.
const TICK_PERIOD: Duration = Duration::from_secs(1);

struct Root {
    config: Rc<PluginConfig>,
}

impl Context for Root {
    /// The answer to a background refresh (`on_tick`).
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        backend_request::load_refreshed(self, &self.config, body);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log(LogLevel::Error, "aigw: missing plugin configuration");
            return false;
        };
        match PluginConfig::parse(&bytes) {
            Ok(config) => {
                if config.role == Role::Router || config.credentials.is_some() {
                    self.set_tick_period(TICK_PERIOD);
                }
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("aigw: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if self.config.role == Role::Router {
            crate::metrics::sink::flush();
        }
        backend_request::refresh_in_background(self, &self.config);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone();
        #[cfg(feature = "callback-timing")]
        return Some(match config.role {
            Role::Router => Box::new(timing::Timed {
                inner: RouterFilter::new(config, context_id),
                role: 0,
            }),
            Role::Upstream => Box::new(timing::Timed {
                inner: UpstreamFilter::new(config, context_id),
                role: 1,
            }),
        });
        #[cfg(not(feature = "callback-timing"))]
        Some(match config.role {
            Role::Router => Box::new(RouterFilter::new(config, context_id)),
            Role::Upstream => Box::new(UpstreamFilter::new(config, context_id)),
        })
    }
}

// The SDK's string getters unwrap UTF-8 and so panic on a header value with
// obs-text bytes, which HTTP allows. These read bytes and decode lossily.
fn request_header(ctx: &dyn HttpContext, name: &str) -> Option<String> {
    ctx.get_http_request_header_bytes(name)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A header's value in a map read with one host call.
fn header_in(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Sends an error in the client's API shape. The caller returns Pause.
fn send_error(ctx: &dyn HttpContext, shape: ErrorShape, error: &GatewayError) {
    if error.status >= 500 {
        log(LogLevel::Warn, &format!("aigw: {error}"));
    }
    ctx.send_http_response(
        u32::from(error.status),
        vec![("content-type", "application/json")],
        Some(&error.body(shape)),
    );
}
