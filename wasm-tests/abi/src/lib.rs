//! A proxy-wasm host for tests: loads the built filter
//! (`target/aigw_filter.wasm`) in the wasmi interpreter, gives it the
//! proxy-wasm ABI 0.2.1 and WASI preview1 imports, drives the lifecycle the
//! way Envoy does, and records what the filter did (headers, bodies, local
//! responses, properties, foreign functions, http calls, logs, actions).
//!
//! A trap (a panic in the filter, a bad memory access, running out of fuel)
//! comes back as a [`VmError`] naming the callback, with the module's
//! stderr and recent logs, and leaves the VM dead as Envoy would.

pub mod abi;
pub mod host;
pub mod vm;

pub use abi::{Action, BufferType, Headers, LogLevel, MapType, Status, StreamType};
pub use host::{
    ForeignCall, ForeignReply, HeaderOp, Host, HttpCall, LocalResponse, LogEntry, StreamRecord,
};
pub use vm::{filter_wasm_path, Flow, Vm, VmError, DEFAULT_FUEL};
