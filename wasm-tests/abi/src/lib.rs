//! A proxy-wasm host for tests: loads the built filter
//! (`target/aigw_filter.wasm`) in the wasmi interpreter, gives it the
//! proxy-wasm ABI 0.2.1 and WASI preview1 imports, drives the lifecycle the
//! way Envoy does, and records what the filter did (headers, bodies, local
//! responses, properties, foreign functions, http calls, logs, actions).
//!
//! A trap (a panic in the filter, a bad memory access, running out of fuel)
//! comes back as a [`VmError`] naming the callback, with the module's
//! stderr and recent logs, and leaves the VM dead as Envoy would.
//!
//! Run (the tests never build the filter; a missing build fails them with
//! a message saying so):
//!
//! ```text
//! scripts/build-filter.sh
//! CARGO_TARGET_DIR=/tmp/target-abi cargo test -p aigw-wasm-abi-tests
//! ```
//!
//! `AIGW_FILTER_WASM=/path/to/module.wasm` tests another build. Known filter
//! bugs are `#[ignore]`d tests in `tests/known_bugs.rs` (`-- --ignored`).
//!
//! A test in short:
//!
//! ```no_run
//! # fn main() -> Result<(), aigw_wasm_abi_tests::VmError> {
//! use aigw_wasm_abi_tests::{Flow, Vm};
//! let mut vm = Vm::filter()?;
//! vm.start(br#"{"role":"router","models":[{"match":{"exact":"m"}}]}"#)?;
//! let ctx = vm.create_stream()?;
//! let body = br#"{"model":"m"}"#;
//! let headers = [(":method", "POST"), (":path", "/v1/chat/completions")];
//! assert_eq!(vm.send_request(ctx, &headers, body, 4)?, Flow::Continued);
//! let model = vm.stream(ctx).request_headers().get("x-ai-eg-model");
//! assert_eq!(model.as_deref(), Some("m"));
//! # Ok(())
//! # }
//! ```

pub mod abi;
pub mod host;
pub mod vm;

pub use abi::{Action, BufferType, Headers, LogLevel, MapType, Status, StreamType};
pub use host::{
    ForeignCall, ForeignReply, HeaderOp, Host, HttpCall, LocalResponse, LogEntry, StreamRecord,
};
pub use vm::{filter_wasm_path, Flow, Vm, VmError, DEFAULT_FUEL};
