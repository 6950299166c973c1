//! The gateway's proxy-wasm filter. Everything but `host` is plain Rust with
//! no I/O, compiled and tested natively; `host` binds it to the proxy-wasm ABI
//! when built for wasm32.

pub mod anthropic;
pub mod azure;
pub mod base64;
pub mod bedrock;
pub mod bedrock_invoke;
pub mod chat;
pub mod chat_response;
pub mod config;
pub mod converse;
pub mod credentials;
pub mod encoding;
pub mod error;
pub mod eventstream;
pub mod failover;
pub mod gcp_anthropic;
pub mod gemini;
pub mod gemini_response;
pub mod metrics;
pub mod models;
pub mod openai_to_anthropic;
pub mod request;
pub mod reservation;
pub mod response;
pub mod sigv4;
pub mod sse;
pub mod upstream;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod host;
