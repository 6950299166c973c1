//! Drives a module through the proxy-wasm lifecycle the way Envoy does.

use crate::abi::{Action, Headers, LogLevel};
use crate::host::{link, property_key, CallbackAction, Host, HttpCall, StreamRecord};
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use wasmi::{CallHook, Config, Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};

/// Fuel for one callback: far more than any sane callback needs, so running
/// out means the module loops.
pub const DEFAULT_FUEL: u64 = 20_000_000_000;

/// A trap, a failed link, or a module that cannot be loaded. Its Display
/// (and Debug, so `unwrap` shows it) includes the module's stderr and its
/// most recent logs, where a panic message lands.
pub struct VmError {
    pub message: String,
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for VmError {}

impl VmError {
    fn new(message: impl Into<String>) -> VmError {
        VmError {
            message: message.into(),
        }
    }
}

/// Where the built filter is: `$AIGW_FILTER_WASM`, else
/// `<workspace>/target/aigw_filter.wasm`.
pub fn filter_wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AIGW_FILTER_WASM") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/aigw_filter.wasm")
}

fn engine() -> Engine {
    let mut config = Config::default();
    config.consume_fuel(true);
    Engine::new(&config)
}

fn read_module(path: &std::path::Path) -> Result<(Engine, Module), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the built filter at {} ({e}). Build it first: scripts/build-filter.sh",
            path.display()
        )
    })?;
    let engine = engine();
    let module = Module::new(&engine, &bytes[..])
        .map_err(|e| format!("{} is not a valid module: {e}", path.display()))?;
    Ok((engine, module))
}

/// The filter module, compiled once per test binary.
fn filter_module() -> Result<&'static (Engine, Module), VmError> {
    static MODULE: OnceLock<Result<(Engine, Module), String>> = OnceLock::new();
    MODULE
        .get_or_init(|| read_module(&filter_wasm_path()))
        .as_ref()
        .map_err(|e| VmError::new(e.clone()))
}

/// How far a request or response got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Every callback returned Continue (or the stream was resumed).
    Continued,
    /// The filter holds the stream (e.g. waiting for an http call).
    Paused,
    /// The filter answered with a local response.
    LocalResponse,
}

/// One module instance: one VM, as one Envoy worker has.
pub struct Vm {
    store: Store<Host>,
    instance: Instance,
    /// Set after a trap: the VM is dead, as in Envoy.
    dead: Option<String>,
    next_context: u32,
    stubbed_imports: Vec<String>,
    pub fuel_per_call: u64,
}

impl Vm {
    /// Instantiates the built filter (see [`filter_wasm_path`]).
    pub fn filter() -> Result<Vm, VmError> {
        let (engine, module) = filter_module()?;
        Vm::instantiate(engine, module)
    }

    /// Instantiates the module at `path` (compiled anew each time).
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Vm, VmError> {
        let (engine, module) = read_module(path.as_ref()).map_err(VmError::new)?;
        Vm::instantiate(&engine, &module)
    }

    /// Instantiates any proxy-wasm module.
    pub fn from_bytes(wasm: &[u8]) -> Result<Vm, VmError> {
        let engine = engine();
        let module =
            Module::new(&engine, wasm).map_err(|e| VmError::new(format!("invalid module: {e}")))?;
        Vm::instantiate(&engine, &module)
    }

    fn instantiate(engine: &Engine, module: &Module) -> Result<Vm, VmError> {
        let mut store = Store::new(engine, Host::default());
        store.call_hook(|host, hook| {
            if matches!(hook, CallHook::CallingHost) {
                host.host_calls += 1;
            }
            Ok(())
        });
        let mut linker = Linker::new(engine);
        let stubbed_imports =
            link(&mut linker, module).map_err(|e| VmError::new(format!("linking: {e}")))?;
        store
            .set_fuel(DEFAULT_FUEL)
            .map_err(|e| VmError::new(e.to_string()))?;
        let instance = linker
            .instantiate_and_start(&mut store, module)
            .map_err(|e| VmError::new(format!("instantiating: {e}")))?;
        let memory = instance.get_memory(&store, "memory");
        let malloc = instance
            .get_typed_func::<i32, i32>(&store, "proxy_on_memory_allocate")
            .ok();
        store.data_mut().memory = memory;
        store.data_mut().malloc = malloc;
        let mut vm = Vm {
            store,
            instance,
            dead: None,
            next_context: 2,
            stubbed_imports,
            fuel_per_call: DEFAULT_FUEL,
        };
        for init in ["_initialize", "_start"] {
            if vm.has_export(init) {
                vm.call::<(), ()>(init, 0, ())?;
            }
        }
        Ok(vm)
    }

    /// Imports the harness has no implementation for (given a stub: WASI
    /// ones answer ENOSYS, others trap when called), as `module.name`.
    pub fn stubbed_imports(&self) -> &[String] {
        &self.stubbed_imports
    }

    pub fn has_export(&self, name: &str) -> bool {
        self.instance.get_func(&self.store, name).is_some()
    }

    pub fn host(&self) -> &Host {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut Host {
        self.store.data_mut()
    }

    pub fn root_id(&self) -> u32 {
        self.host().root_id
    }

    /// Calls an export with the host's current context set to `context`.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        context: u32,
        args: P,
    ) -> Result<R, VmError> {
        if let Some(trap) = &self.dead {
            return Err(VmError::new(format!(
                "the VM is dead after an earlier trap; not calling {name}\n{trap}"
            )));
        }
        let func = self
            .instance
            .get_typed_func::<P, R>(&self.store, name)
            .map_err(|e| VmError::new(format!("the module has no usable export {name}: {e}")))?;
        {
            let h = self.store.data_mut();
            h.current = context;
            h.effective = None;
        }
        let _ = self.store.set_fuel(self.fuel_per_call);
        let result = func.call(&mut self.store, args);
        let h = self.store.data_mut();
        h.effective = None;
        h.current = h.root_id;
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                let message = self.describe_trap(name, context, &e.to_string());
                self.dead = Some(message.clone());
                Err(VmError::new(message))
            }
        }
    }

    fn describe_trap(&self, name: &str, context: u32, trap: &str) -> String {
        let h = self.host();
        let mut m = format!("wasm trap in {name} (context {context}): {trap}");
        if let Some(code) = h.exit_code {
            m.push_str(&format!("\n  proc_exit({code})"));
        }
        let stderr = String::from_utf8_lossy(&h.stderr);
        if !stderr.trim().is_empty() {
            m.push_str(&format!("\n  module stderr: {}", stderr.trim()));
        }
        let logs: Vec<_> = h.logs.iter().rev().take(10).collect();
        for l in logs.into_iter().rev() {
            m.push_str(&format!(
                "\n  log {:?} (context {}): {}",
                l.level, l.context, l.message
            ));
        }
        m
    }

    /// Whether an earlier callback trapped.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    /// Creates the root context, then `proxy_on_vm_start` and
    /// `proxy_on_configure` with `plugin_configuration`. Returns what
    /// `proxy_on_configure` answered.
    pub fn start(&mut self, plugin_configuration: &[u8]) -> Result<bool, VmError> {
        let root = self.root_id();
        self.host_mut().plugin_configuration = plugin_configuration.to_vec();
        self.call::<(i32, i32), ()>("proxy_on_context_create", root, (root as i32, 0))?;
        if self.has_export("proxy_on_vm_start") {
            let size = self.host().vm_configuration.len() as i32;
            let ok: i32 = self.call("proxy_on_vm_start", root, (root as i32, size))?;
            if ok == 0 {
                return Ok(false);
            }
        }
        self.configure(plugin_configuration)
    }

    /// `proxy_on_configure` again (a configuration update).
    pub fn configure(&mut self, plugin_configuration: &[u8]) -> Result<bool, VmError> {
        let root = self.root_id();
        self.host_mut().plugin_configuration = plugin_configuration.to_vec();
        let size = plugin_configuration.len() as i32;
        let ok: i32 = self.call("proxy_on_configure", root, (root as i32, size))?;
        Ok(ok != 0)
    }

    /// Serializes `config` as JSON and [`Vm::start`]s with it.
    pub fn start_with(&mut self, config: &impl serde::Serialize) -> Result<bool, VmError> {
        let bytes = serde_json::to_vec(config).map_err(|e| VmError::new(e.to_string()))?;
        self.start(&bytes)
    }

    /// `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<(), VmError> {
        let root = self.root_id();
        self.call::<i32, ()>("proxy_on_tick", root, root as i32)
    }

    /// Advances the clock the module sees.
    pub fn advance_clock(&mut self, by: Duration) {
        let h = self.host_mut();
        h.time_ns = h.time_ns.saturating_add(by.as_nanos() as u64);
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.host_mut()
            .env
            .insert(key.to_string(), value.to_string());
    }

    /// A property every context can read.
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        self.host_mut()
            .properties
            .insert(property_key(path), value.to_vec());
    }

    /// A property only stream `context` can read (e.g. the endpoint's
    /// metadata for this request).
    pub fn set_stream_property(&mut self, context: u32, path: &[&str], value: &[u8]) {
        self.stream_mut(context)
            .properties
            .insert(property_key(path), value.to_vec());
    }

    /// A new HTTP stream: `proxy_on_context_create(id, root)`.
    pub fn create_stream(&mut self) -> Result<u32, VmError> {
        let id = self.next_context;
        self.next_context += 1;
        let root = self.root_id();
        self.host_mut().streams.insert(
            id,
            StreamRecord {
                id,
                ..Default::default()
            },
        );
        self.call::<(i32, i32), ()>("proxy_on_context_create", id, (id as i32, root as i32))?;
        Ok(id)
    }

    /// The record of stream `context`. Panics on an unknown context.
    pub fn stream(&self, context: u32) -> &StreamRecord {
        self.host()
            .streams
            .get(&context)
            .unwrap_or_else(|| panic!("no stream with context id {context}"))
    }

    fn stream_mut(&mut self, context: u32) -> &mut StreamRecord {
        self.host_mut()
            .streams
            .get_mut(&context)
            .unwrap_or_else(|| panic!("no stream with context id {context}"))
    }

    fn record(&mut self, context: u32, callback: &'static str, raw: i32) -> Action {
        let action = Action::from_raw(raw);
        if let Action::Other(n) = action {
            let h = self.host_mut();
            h.violations
                .push(format!("context {context}: {callback} returned action {n}"));
        }
        self.stream_mut(context)
            .actions
            .push(CallbackAction { callback, action });
        action
    }

    /// Delivers request headers. Keys are lower-cased as Envoy does.
    pub fn request_headers(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        self.request_headers_map(context, Headers::from_pairs(headers), end_of_stream)
    }

    pub fn request_headers_map(
        &mut self,
        context: u32,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        let n = headers.len() as i32;
        self.stream_mut(context).request_headers = Some(headers);
        let raw: i32 = self.call(
            "proxy_on_request_headers",
            context,
            (context as i32, n, end_of_stream as i32),
        )?;
        let action = self.record(context, "proxy_on_request_headers", raw);
        self.stream_mut(context).request_paused = action != Action::Continue;
        Ok(action)
    }

    /// Delivers one chunk of request body. Like Envoy, while the filter
    /// returns Pause the proxy buffers the body and the next call sees all
    /// of it; Continue sends the buffer on.
    pub fn request_body(
        &mut self,
        context: u32,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        let size = {
            let s = self.stream_mut(context);
            s.request_buffer.extend_from_slice(chunk);
            s.request_buffer.len() as i32
        };
        let raw: i32 = self.call(
            "proxy_on_request_body",
            context,
            (context as i32, size, end_of_stream as i32),
        )?;
        let action = self.record(context, "proxy_on_request_body", raw);
        let s = self.stream_mut(context);
        if action == Action::Continue {
            let body = std::mem::take(&mut s.request_buffer);
            s.request_body_sent.extend(body);
            s.request_paused = false;
        } else {
            s.request_paused = true;
        }
        Ok(action)
    }

    pub fn request_trailers(
        &mut self,
        context: u32,
        trailers: &[(&str, &str)],
    ) -> Result<Action, VmError> {
        let map = Headers::from_pairs(trailers);
        let n = map.len() as i32;
        self.stream_mut(context).request_trailers = Some(map);
        let raw: i32 = self.call("proxy_on_request_trailers", context, (context as i32, n))?;
        Ok(self.record(context, "proxy_on_request_trailers", raw))
    }

    pub fn response_headers(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        self.response_headers_map(context, Headers::from_pairs(headers), end_of_stream)
    }

    pub fn response_headers_map(
        &mut self,
        context: u32,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        let n = headers.len() as i32;
        self.stream_mut(context).response_headers = Some(headers);
        let raw: i32 = self.call(
            "proxy_on_response_headers",
            context,
            (context as i32, n, end_of_stream as i32),
        )?;
        let action = self.record(context, "proxy_on_response_headers", raw);
        self.stream_mut(context).response_paused = action != Action::Continue;
        Ok(action)
    }

    /// Delivers one chunk of response body (buffered like the request body).
    pub fn response_body(
        &mut self,
        context: u32,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, VmError> {
        let size = {
            let s = self.stream_mut(context);
            s.response_buffer.extend_from_slice(chunk);
            s.response_buffer.len() as i32
        };
        let raw: i32 = self.call(
            "proxy_on_response_body",
            context,
            (context as i32, size, end_of_stream as i32),
        )?;
        let action = self.record(context, "proxy_on_response_body", raw);
        let s = self.stream_mut(context);
        if action == Action::Continue {
            let body = std::mem::take(&mut s.response_buffer);
            s.response_body_sent.extend(body);
            s.response_paused = false;
        } else {
            s.response_paused = true;
        }
        Ok(action)
    }

    /// Sends a whole request: headers, then the body in `chunk_size` pieces
    /// (the last with end_of_stream), stopping early as Envoy would once the
    /// filter sends a local response.
    pub fn send_request(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        chunk_size: usize,
    ) -> Result<Flow, VmError> {
        self.request_headers(context, headers, body.is_empty())?;
        if self.stream(context).local_response().is_none() {
            let chunks: Vec<&[u8]> = body.chunks(chunk_size.max(1)).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                self.request_body(context, chunk, i + 1 == chunks.len())?;
                if self.stream(context).local_response().is_some() {
                    break;
                }
            }
        }
        Ok(self.request_flow(context))
    }

    /// Sends a whole response, like [`Vm::send_request`].
    pub fn send_response(
        &mut self,
        context: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        chunk_size: usize,
    ) -> Result<Flow, VmError> {
        self.response_headers(context, headers, body.is_empty())?;
        if self.stream(context).local_response().is_none() {
            let chunks: Vec<&[u8]> = body.chunks(chunk_size.max(1)).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                self.response_body(context, chunk, i + 1 == chunks.len())?;
                if self.stream(context).local_response().is_some() {
                    break;
                }
            }
        }
        let s = self.stream(context);
        Ok(if s.local_response().is_some() {
            Flow::LocalResponse
        } else if s.response_paused {
            Flow::Paused
        } else {
            Flow::Continued
        })
    }

    /// Where the request stands now.
    pub fn request_flow(&self, context: u32) -> Flow {
        let s = self.stream(context);
        if s.local_response().is_some() {
            Flow::LocalResponse
        } else if s.request_paused {
            Flow::Paused
        } else {
            Flow::Continued
        }
    }

    /// Answers a dispatched `proxy_http_call`: calls
    /// `proxy_on_http_call_response` on the root context, as Envoy does
    /// (the module must switch to the stream with set_effective_context).
    pub fn respond_http_call(
        &mut self,
        token: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), VmError> {
        let call = self
            .host_mut()
            .http_calls
            .iter_mut()
            .find(|c| c.token == token)
            .unwrap_or_else(|| panic!("no http call with token {token}"));
        assert!(!call.answered, "http call {token} was already answered");
        call.answered = true;
        let headers = Headers::from_pairs(headers);
        let (nh, nb) = (headers.len() as i32, body.len() as i32);
        self.host_mut().http_call_response = Some((headers, body.to_vec(), Headers::new()));
        let root = self.root_id();
        let result = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            root,
            (root as i32, token as i32, nh, nb, 0),
        );
        self.host_mut().http_call_response = None;
        result
    }

    /// The http calls not answered yet.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.host()
            .http_calls
            .iter()
            .filter(|c| !c.answered)
            .cloned()
            .collect()
    }

    pub fn on_log(&mut self, context: u32) -> Result<(), VmError> {
        self.call::<i32, ()>("proxy_on_log", context, context as i32)
    }

    pub fn on_done(&mut self, context: u32) -> Result<bool, VmError> {
        let done: i32 = self.call("proxy_on_done", context, context as i32)?;
        self.stream_mut(context).done = Some(done != 0);
        Ok(done != 0)
    }

    pub fn on_delete(&mut self, context: u32) -> Result<(), VmError> {
        self.call::<i32, ()>("proxy_on_delete", context, context as i32)?;
        self.stream_mut(context).deleted = true;
        Ok(())
    }

    /// Ends a stream as Envoy does: `proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete`.
    pub fn finish_stream(&mut self, context: u32) -> Result<(), VmError> {
        self.on_done(context)?;
        self.on_log(context)?;
        self.on_delete(context)
    }

    /// Log lines at `level` or above.
    pub fn logs_at_least(&self, level: LogLevel) -> Vec<String> {
        self.host()
            .logs
            .iter()
            .filter(|l| l.level >= level)
            .map(|l| l.message.clone())
            .collect()
    }

    /// Panics with every ABI violation recorded so far, if there is one.
    pub fn assert_no_violations(&self) {
        let v = &self.host().violations;
        assert!(
            v.is_empty(),
            "the module broke proxy rules:\n  {}",
            v.join("\n  ")
        );
    }
}
