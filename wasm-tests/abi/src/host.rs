//! The host side: the state a proxy keeps for a module and the imports it
//! gives it (proxy-wasm ABI 0.2.1 under `env`, WASI preview1 stubs under
//! `wasi_snapshot_preview1`). Everything the module does through them is
//! recorded so tests can check it.

use crate::abi::{
    deserialize_map, Action, BufferType, Headers, LogLevel, MapType, Status, StreamType,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use wasmi::{Caller, Error, IntoFunc, Linker, Memory, Module, TypedFunc, Val, ValType};

/// One `proxy_log` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    /// The context that was current (or effective) when it was logged.
    pub context: u32,
    pub message: String,
}

/// A `proxy_send_local_response` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub grpc_status: i32,
}

impl LocalResponse {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "local response body is not JSON ({e}): {}",
                self.body_text()
            )
        })
    }
}

/// A `proxy_http_call` the module dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// The context that was effective when the call was made.
    pub context: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
    pub answered: bool,
}

/// A `proxy_call_foreign_function` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignCall {
    pub context: u32,
    pub name: String,
    pub args: Vec<u8>,
}

/// What a foreign function answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignReply {
    /// Ok, with these result bytes (None: no result, as `clear_route_cache`).
    Ok(Option<Vec<u8>>),
    Err(Status),
}

/// A header mutation, in the order the module made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Add(MapType, String, Vec<u8>),
    Replace(MapType, String, Vec<u8>),
    Remove(MapType, String),
    SetAll(MapType, Headers),
}

/// A `proxy_set_buffer_bytes` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyOp {
    pub buffer: BufferType,
    pub start: usize,
    pub length: usize,
    pub data: Vec<u8>,
}

/// A callback the host made into a stream context and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackAction {
    pub callback: &'static str,
    pub action: Action,
}

/// Everything about one HTTP stream (one `proxy_on_context_create(ctx, root)`).
#[derive(Debug, Clone, Default)]
pub struct StreamRecord {
    pub id: u32,
    pub request_headers: Option<Headers>,
    pub request_trailers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub response_trailers: Option<Headers>,
    /// Request body the proxy holds for the filter (buffered while paused).
    pub request_buffer: Vec<u8>,
    /// Request body that went on towards the upstream.
    pub request_body_sent: Vec<u8>,
    pub response_buffer: Vec<u8>,
    /// Response body that went on towards the client.
    pub response_body_sent: Vec<u8>,
    pub request_paused: bool,
    pub response_paused: bool,
    pub header_ops: Vec<HeaderOp>,
    pub body_ops: Vec<BodyOp>,
    /// Every local response the module sent (more than one is a bug).
    pub local_responses: Vec<LocalResponse>,
    /// Properties the module may read on this stream (set by the test, and
    /// by the module's own `proxy_set_property`). Keys are NUL-separated paths.
    pub properties: BTreeMap<String, Vec<u8>>,
    /// `proxy_set_property` calls, in order: (path segments, value).
    pub properties_set: Vec<(Vec<String>, Option<Vec<u8>>)>,
    pub foreign_calls: Vec<ForeignCall>,
    pub continued: Vec<StreamType>,
    pub closed: Vec<StreamType>,
    pub actions: Vec<CallbackAction>,
    pub done: Option<bool>,
    pub deleted: bool,
}

impl StreamRecord {
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.local_responses.first()
    }

    /// The last value the module set for property `name` (a one-segment path).
    pub fn property(&self, name: &str) -> Option<String> {
        self.properties_set
            .iter()
            .rev()
            .find(|(path, _)| path.len() == 1 && path[0] == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn called_foreign(&self, name: &str) -> bool {
        self.foreign_calls.iter().any(|c| c.name == name)
    }

    /// The request headers as the proxy holds them now.
    pub fn request_headers(&self) -> &Headers {
        self.request_headers
            .as_ref()
            .expect("no request headers were sent on this stream")
    }

    pub fn response_headers(&self) -> &Headers {
        self.response_headers
            .as_ref()
            .expect("no response headers were sent on this stream")
    }

    pub fn last_action(&self) -> Option<Action> {
        self.actions.last().map(|a| a.action)
    }
}

/// Joins a property path the way the ABI sends it (NUL-separated).
pub fn property_key(path: &[&str]) -> String {
    path.join("\0")
}

/// The state of the simulated proxy, kept in the wasmi `Store`.
pub struct Host {
    /// Environment the module sees through WASI `environ_get`.
    pub env: BTreeMap<String, String>,
    /// Wall clock in nanoseconds since the Unix epoch, for both
    /// `proxy_get_current_time_nanoseconds` and WASI `clock_time_get`.
    pub time_ns: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub logs: Vec<LogEntry>,
    pub log_level: LogLevel,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    /// Properties readable from every context (NUL-separated path keys).
    pub properties: BTreeMap<String, Vec<u8>>,
    /// `proxy_set_property` calls made on the root context.
    pub root_properties_set: Vec<(Vec<String>, Option<Vec<u8>>)>,
    /// Foreign functions the proxy offers; others answer NotFound.
    pub foreign_functions: BTreeMap<String, ForeignReply>,
    /// Foreign calls made on the root context.
    pub root_foreign_calls: Vec<ForeignCall>,
    pub http_calls: Vec<HttpCall>,
    /// If set, clusters `proxy_http_call` accepts; others get BadArgument.
    pub clusters: Option<BTreeSet<String>>,
    /// Forces `proxy_http_call` to fail with this status.
    pub http_call_failure: Option<Status>,
    pub shared_data: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    pub queues: Vec<(String, VecDeque<Vec<u8>>)>,
    pub metrics: Vec<(String, i32, i64)>,
    /// `proxy_record_metric` calls (histogram samples) so far.
    pub recorded_samples: u64,
    pub tick_period_ms: Option<u32>,
    pub done_calls: u32,
    /// Host functions the module called (proxy-wasm and WASI): in Envoy each
    /// costs about a microsecond, the filter's main per-request cost.
    pub host_calls: u64,
    pub exit_code: Option<i32>,
    /// Things the module did that a real proxy would reject or that break
    /// HTTP (header values with CR/LF/NUL, a second local response, ...).
    pub violations: Vec<String>,
    pub streams: BTreeMap<u32, StreamRecord>,
    pub root_id: u32,
    pub(crate) current: u32,
    pub(crate) effective: Option<u32>,
    pub(crate) http_call_response: Option<(Headers, Vec<u8>, Headers)>,
    pub(crate) memory: Option<Memory>,
    pub(crate) malloc: Option<TypedFunc<i32, i32>>,
    rng: u64,
}

impl Default for Host {
    fn default() -> Self {
        let mut foreign_functions = BTreeMap::new();
        foreign_functions.insert("clear_route_cache".to_string(), ForeignReply::Ok(None));
        Host {
            env: BTreeMap::new(),
            // 2025-01-01T00:00:00Z
            time_ns: 1_735_689_600_000_000_000,
            stdout: Vec::new(),
            stderr: Vec::new(),
            logs: Vec::new(),
            log_level: LogLevel::Info,
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            properties: BTreeMap::new(),
            root_properties_set: Vec::new(),
            foreign_functions,
            root_foreign_calls: Vec::new(),
            http_calls: Vec::new(),
            clusters: None,
            http_call_failure: None,
            shared_data: HashMap::new(),
            queues: Vec::new(),
            metrics: Vec::new(),
            recorded_samples: 0,
            tick_period_ms: None,
            done_calls: 0,
            host_calls: 0,
            exit_code: None,
            violations: Vec::new(),
            streams: BTreeMap::new(),
            root_id: 1,
            current: 0,
            effective: None,
            http_call_response: None,
            memory: None,
            malloc: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Host {
    /// The context host calls act on: the effective one if the module set
    /// one during this callback, else the one the callback was made on.
    pub fn context(&self) -> u32 {
        self.effective.unwrap_or(self.current)
    }

    fn stream(&self) -> Option<&StreamRecord> {
        self.streams.get(&self.context())
    }

    fn stream_mut(&mut self) -> Option<&mut StreamRecord> {
        let ctx = self.context();
        self.streams.get_mut(&ctx)
    }

    fn map(&self, map: MapType) -> Option<&Headers> {
        match map {
            MapType::HttpCallResponseHeaders => self.http_call_response.as_ref().map(|r| &r.0),
            MapType::HttpCallResponseTrailers => self.http_call_response.as_ref().map(|r| &r.2),
            _ => {
                let s = self.stream()?;
                match map {
                    MapType::RequestHeaders => s.request_headers.as_ref(),
                    MapType::RequestTrailers => s.request_trailers.as_ref(),
                    MapType::ResponseHeaders => s.response_headers.as_ref(),
                    MapType::ResponseTrailers => s.response_trailers.as_ref(),
                    _ => None,
                }
            }
        }
    }

    fn map_mut(&mut self, map: MapType) -> Option<&mut Headers> {
        match map {
            MapType::HttpCallResponseHeaders => self.http_call_response.as_mut().map(|r| &mut r.0),
            MapType::HttpCallResponseTrailers => self.http_call_response.as_mut().map(|r| &mut r.2),
            _ => {
                let s = self.stream_mut()?;
                match map {
                    MapType::RequestHeaders => s.request_headers.as_mut(),
                    MapType::RequestTrailers => s.request_trailers.as_mut(),
                    MapType::ResponseHeaders => s.response_headers.as_mut(),
                    MapType::ResponseTrailers => s.response_trailers.as_mut(),
                    _ => None,
                }
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn violation(&mut self, what: String) {
        let ctx = self.context();
        self.violations.push(format!("context {ctx}: {what}"));
    }

    /// Checks a header the module writes the way an HTTP codec would.
    fn check_header(&mut self, call: &str, key: &str, value: &[u8]) {
        let key_ok = !key.is_empty()
            && key
                .bytes()
                .enumerate()
                .all(|(i, b)| (b == b':' && i == 0) || is_token_byte(b));
        if !key_ok {
            self.violation(format!("{call}: invalid header name {key:?}"));
        }
        if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            self.violation(format!(
                "{call}: header {key:?} set to a value with CR, LF or NUL: {:?}",
                String::from_utf8_lossy(value)
            ));
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------
// Guest memory helpers

type Cx<'a> = Caller<'a, Host>;

fn memory(caller: &Cx<'_>) -> Result<Memory, Error> {
    caller
        .data()
        .memory
        .ok_or_else(|| Error::new("the module exports no memory"))
}

fn read(caller: &Cx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Error> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    if l == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    let data = mem.data(caller);
    p.checked_add(l)
        .and_then(|end| data.get(p..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            Error::new(format!(
                "host: the module passed memory {p:#x}+{l} outside its {} bytes",
                data.len()
            ))
        })
}

fn read_str(caller: &Cx<'_>, ptr: i32, len: i32) -> Result<String, Error> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|e| Error::new(format!("host: writing to the module at {ptr:#x}: {e}")))
}

fn write_u32(caller: &mut Cx<'_>, ptr: i32, value: u32) -> Result<(), Error> {
    write(caller, ptr, &value.to_le_bytes())
}

fn write_u64(caller: &mut Cx<'_>, ptr: i32, value: u64) -> Result<(), Error> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into memory the module allocates with its exported
/// `proxy_on_memory_allocate`, and writes the pointer and size where asked.
fn return_bytes(
    caller: &mut Cx<'_>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<(), Error> {
    let malloc = caller
        .data()
        .malloc
        .ok_or_else(|| Error::new("the module exports no proxy_on_memory_allocate"))?;
    let addr = malloc.call(&mut *caller, bytes.len() as i32)?;
    if addr == 0 {
        return Err(Error::new(format!(
            "host: proxy_on_memory_allocate({}) returned 0",
            bytes.len()
        )));
    }
    write(caller, addr, bytes)?;
    write_u32(caller, ptr_ptr, addr as u32)?;
    write_u32(caller, size_ptr, bytes.len() as u32)
}

fn read_map(caller: &Cx<'_>, call: &str, ptr: i32, len: i32) -> Result<Headers, Error> {
    let bytes = read(caller, ptr, len)?;
    let pairs = deserialize_map(&bytes).map_err(|e| {
        Error::new(format!(
            "host: {call}: the module sent a malformed map: {e}"
        ))
    })?;
    Ok(Headers(
        pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
            .collect(),
    ))
}

fn ok() -> Result<i32, Error> {
    Ok(Status::Ok.code())
}

fn status(s: Status) -> Result<i32, Error> {
    Ok(s.code())
}

// ---------------------------------------------------------------------------
// Linking

struct Registry<'a> {
    linker: &'a mut Linker<Host>,
    defined: HashSet<(String, String)>,
}

impl Registry<'_> {
    fn add<P, R>(
        &mut self,
        module: &str,
        name: &str,
        f: impl IntoFunc<Host, P, R>,
    ) -> Result<(), Error> {
        self.linker.func_wrap(module, name, f)?;
        self.defined.insert((module.to_string(), name.to_string()));
        Ok(())
    }
}

const WASI: &str = "wasi_snapshot_preview1";
const ENV: &str = "env";
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;

/// Defines every import `module` has: the proxy-wasm host functions, WASI
/// stubs, and for any import not known here a stub (WASI: ENOSYS; anything
/// else: a trap naming it, so a test sees which one is missing). Returns
/// the imports that got such a stub, as `module.name`.
pub fn link(linker: &mut Linker<Host>, module: &Module) -> Result<Vec<String>, Error> {
    let mut reg = Registry {
        linker,
        defined: HashSet::new(),
    };
    link_wasi(&mut reg)?;
    link_proxy(&mut reg)?;
    let mut stubbed = Vec::new();
    for import in module.imports() {
        let key = (import.module().to_string(), import.name().to_string());
        if reg.defined.contains(&key) {
            continue;
        }
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        let results: Vec<ValType> = ty.results().to_vec();
        let (module_name, name) = key;
        stubbed.push(format!("{module_name}.{name}"));
        if module_name == WASI {
            reg.linker
                .func_new(WASI, &name.clone(), ty, move |_c, _p, out: &mut [Val]| {
                    if let (Some(slot), Some(ValType::I32)) = (out.first_mut(), results.first()) {
                        *slot = Val::I32(ERRNO_NOSYS);
                    }
                    Ok(())
                })?;
        } else {
            let full = format!("{module_name}.{name}");
            reg.linker
                .func_new(&module_name, &name, ty, move |_c, _p, _out| {
                    Err(Error::new(format!(
                        "host: the module called {full}, which this harness does not implement"
                    )))
                })?;
        }
    }
    Ok(stubbed)
}

fn link_wasi(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        WASI,
        "fd_write",
        |mut c: Cx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> Result<i32, Error> {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mut out = Vec::new();
            for i in 0..iovs_len.max(0) {
                let iov = read(&c, iovs.wrapping_add(i * 8), 8)?;
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                out.extend(read(&c, ptr, len)?);
            }
            let n = out.len() as u32;
            if fd == 1 {
                c.data_mut().stdout.extend(out);
            } else {
                c.data_mut().stderr.extend(out);
            }
            write_u32(&mut c, nwritten, n)?;
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "environ_sizes_get",
        |mut c: Cx<'_>, count_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            let env = &c.data().env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            write_u32(&mut c, count_ptr, count)?;
            write_u32(&mut c, size_ptr, size as u32)?;
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "environ_get",
        |mut c: Cx<'_>, environ: i32, buf: i32| -> Result<i32, Error> {
            let entries: Vec<Vec<u8>> = c
                .data()
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}\0").into_bytes())
                .collect();
            let mut at = buf;
            for (i, e) in entries.iter().enumerate() {
                write_u32(&mut c, environ.wrapping_add(i as i32 * 4), at as u32)?;
                write(&mut c, at, e)?;
                at = at.wrapping_add(e.len() as i32);
            }
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "args_sizes_get",
        |mut c: Cx<'_>, count_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            write_u32(&mut c, count_ptr, 0)?;
            write_u32(&mut c, size_ptr, 0)?;
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "args_get",
        |_c: Cx<'_>, _argv: i32, _buf: i32| -> Result<i32, Error> { Ok(0) },
    )?;
    reg.add(
        WASI,
        "clock_time_get",
        |mut c: Cx<'_>, id: i32, _precision: i64, out: i32| -> Result<i32, Error> {
            if !(0..=3).contains(&id) {
                return Ok(ERRNO_INVAL);
            }
            let now = c.data().time_ns;
            write_u64(&mut c, out, now)?;
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "clock_res_get",
        |mut c: Cx<'_>, _id: i32, out: i32| -> Result<i32, Error> {
            write_u64(&mut c, out, 1)?;
            Ok(0)
        },
    )?;
    reg.add(
        WASI,
        "random_get",
        |mut c: Cx<'_>, buf: i32, len: i32| -> Result<i32, Error> {
            let mut bytes = Vec::with_capacity(len.max(0) as usize);
            while bytes.len() < len.max(0) as usize {
                bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
            }
            bytes.truncate(len.max(0) as usize);
            write(&mut c, buf, &bytes)?;
            Ok(0)
        },
    )?;
    reg.add(WASI, "sched_yield", |_c: Cx<'_>| -> Result<i32, Error> {
        Ok(0)
    })?;
    reg.add(
        WASI,
        "proc_exit",
        |mut c: Cx<'_>, code: i32| -> Result<(), Error> {
            c.data_mut().exit_code = Some(code);
            Err(Error::i32_exit(code))
        },
    )?;
    Ok(())
}

fn link_proxy(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_log",
        |mut c: Cx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32, Error> {
            let message = read_str(&c, ptr, len)?;
            let context = c.data().context();
            c.data_mut().logs.push(LogEntry {
                level: LogLevel::from_raw(level),
                context,
                message,
            });
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_get_log_level",
        |mut c: Cx<'_>, out: i32| -> Result<i32, Error> {
            let level = match c.data().log_level {
                LogLevel::Trace => 0,
                LogLevel::Debug => 1,
                LogLevel::Info => 2,
                LogLevel::Warn => 3,
                LogLevel::Error => 4,
                LogLevel::Critical => 5,
                LogLevel::Other(n) => n,
            };
            write_u32(&mut c, out, level)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx<'_>, out: i32| -> Result<i32, Error> {
            let now = c.data().time_ns;
            write_u64(&mut c, out, now)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, period: i32| -> Result<i32, Error> {
            c.data_mut().tick_period_ms = Some(period as u32);
            ok()
        },
    )?;
    reg.add(ENV, "proxy_done", |mut c: Cx<'_>| -> Result<i32, Error> {
        c.data_mut().done_calls += 1;
        ok()
    })?;
    link_buffers(reg)?;
    link_headers(reg)?;
    link_properties(reg)?;
    link_streams(reg)?;
    link_calls(reg)?;
    link_shared(reg)?;
    Ok(())
}

fn link_buffers(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: Cx<'_>,
         ty: i32,
         start: i32,
         max: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32, Error> {
            let Some(ty) = BufferType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let h = c.data();
            let buffer: Option<&[u8]> = match ty {
                BufferType::RequestBody => h.stream().map(|s| s.request_buffer.as_slice()),
                BufferType::ResponseBody => h.stream().map(|s| s.response_buffer.as_slice()),
                BufferType::HttpCallResponseBody => {
                    h.http_call_response.as_ref().map(|r| r.1.as_slice())
                }
                BufferType::PluginConfiguration => Some(h.plugin_configuration.as_slice()),
                BufferType::VmConfiguration => Some(h.vm_configuration.as_slice()),
                _ => None,
            };
            let Some(buffer) = buffer else {
                return status(Status::NotFound);
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start.checked_add(max).is_none() {
                return status(Status::BadArgument);
            }
            let end = (start + max).min(buffer.len());
            if start >= end {
                // Envoy copies nothing and leaves the out-pointers untouched.
                return ok();
            }
            let bytes = buffer[start..end].to_vec();
            return_bytes(&mut c, &bytes, ptr_ptr, size_ptr)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: Cx<'_>,
         ty: i32,
         start: i32,
         length: i32,
         ptr: i32,
         len: i32|
         -> Result<i32, Error> {
            let Some(ty) = BufferType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let data = read(&c, ptr, len)?;
            let (start, length) = (start as u32 as usize, length as u32 as usize);
            let h = c.data_mut();
            let Some(stream) = h.stream_mut() else {
                return status(Status::NotFound);
            };
            stream.body_ops.push(BodyOp {
                buffer: ty,
                start,
                length,
                data: data.clone(),
            });
            let buffer = match ty {
                BufferType::RequestBody => &mut stream.request_buffer,
                BufferType::ResponseBody => &mut stream.response_buffer,
                _ => return status(Status::BadArgument),
            };
            // Envoy's Buffer::copyFrom: start 0 drains `length` bytes and
            // prepends; start at or past the end appends; anything else fails.
            if start == 0 {
                let over = length > buffer.len();
                let n = length.min(buffer.len());
                buffer.drain(..n);
                buffer.splice(0..0, data);
                if over {
                    h.violation(format!(
                        "proxy_set_buffer_bytes({ty:?}) drains {length} bytes of a {n}-byte buffer"
                    ));
                }
                ok()
            } else if start >= buffer.len() {
                buffer.extend(data);
                ok()
            } else {
                status(Status::BadArgument)
            }
        },
    )?;
    Ok(())
}

fn link_headers(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, ty: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            let Some(map) = MapType::from_raw(ty).and_then(|t| c.data().map(t)) else {
                return status(Status::BadArgument);
            };
            let bytes = map.serialize();
            return_bytes(&mut c, &bytes, ptr_ptr, size_ptr)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Cx<'_>, ty: i32, ptr: i32, len: i32| -> Result<i32, Error> {
            let new = read_map(&c, "proxy_set_header_map_pairs", ptr, len)?;
            let Some(ty) = MapType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let h = c.data_mut();
            for (k, v) in &new.0 {
                h.check_header("proxy_set_header_map_pairs", k, v);
            }
            let Some(map) = h.map_mut(ty) else {
                return status(Status::BadArgument);
            };
            *map = new.clone();
            if let Some(s) = h.stream_mut() {
                s.header_ops.push(HeaderOp::SetAll(ty, new));
            }
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_get_header_map_value",
        |mut c: Cx<'_>,
         ty: i32,
         kptr: i32,
         klen: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32, Error> {
            let key = read_str(&c, kptr, klen)?;
            let Some(map) = MapType::from_raw(ty).and_then(|t| c.data().map(t)) else {
                return status(Status::BadArgument);
            };
            let Some(value) = map.get_bytes(&key).map(<[u8]>::to_vec) else {
                return status(Status::NotFound);
            };
            return_bytes(&mut c, &value, ptr_ptr, size_ptr)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Cx<'_>, ty: i32, kptr: i32, klen: i32| -> Result<i32, Error> {
            let key = read_str(&c, kptr, klen)?.to_ascii_lowercase();
            let Some(ty) = MapType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let h = c.data_mut();
            let Some(map) = h.map_mut(ty) else {
                return status(Status::BadArgument);
            };
            map.remove(&key);
            if let Some(s) = h.stream_mut() {
                s.header_ops.push(HeaderOp::Remove(ty, key));
            }
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_replace_header_map_value",
        |mut c: Cx<'_>,
         ty: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> Result<i32, Error> { set_header(&mut c, false, ty, kptr, klen, vptr, vlen) },
    )?;
    reg.add(
        ENV,
        "proxy_add_header_map_value",
        |mut c: Cx<'_>,
         ty: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> Result<i32, Error> { set_header(&mut c, true, ty, kptr, klen, vptr, vlen) },
    )?;
    Ok(())
}

fn set_header(
    c: &mut Cx<'_>,
    add: bool,
    ty: i32,
    kptr: i32,
    klen: i32,
    vptr: i32,
    vlen: i32,
) -> Result<i32, Error> {
    let key = read_str(c, kptr, klen)?.to_ascii_lowercase();
    let value = read(c, vptr, vlen)?;
    let Some(ty) = MapType::from_raw(ty) else {
        return status(Status::BadArgument);
    };
    let call = if add {
        "proxy_add_header_map_value"
    } else {
        "proxy_replace_header_map_value"
    };
    let h = c.data_mut();
    h.check_header(call, &key, &value);
    let Some(map) = h.map_mut(ty) else {
        return status(Status::BadArgument);
    };
    if add {
        map.add(&key, &value);
    } else {
        map.replace(&key, &value);
    }
    if let Some(s) = h.stream_mut() {
        s.header_ops.push(if add {
            HeaderOp::Add(ty, key, value)
        } else {
            HeaderOp::Replace(ty, key, value)
        });
    }
    ok()
}

fn link_properties(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_get_property",
        |mut c: Cx<'_>, pptr: i32, plen: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            let key = read_str(&c, pptr, plen)?;
            let h = c.data();
            let value = h
                .stream()
                .and_then(|s| s.properties.get(&key))
                .or_else(|| h.properties.get(&key))
                .cloned();
            let Some(value) = value else {
                return status(Status::NotFound);
            };
            return_bytes(&mut c, &value, ptr_ptr, size_ptr)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_property",
        |mut c: Cx<'_>, pptr: i32, plen: i32, vptr: i32, vlen: i32| -> Result<i32, Error> {
            let key = read_str(&c, pptr, plen)?;
            let value = if vptr == 0 && vlen == 0 {
                None
            } else {
                Some(read(&c, vptr, vlen)?)
            };
            let path: Vec<String> = key.split('\0').map(str::to_string).collect();
            let h = c.data_mut();
            match h.stream_mut() {
                Some(s) => {
                    s.properties.insert(key, value.clone().unwrap_or_default());
                    s.properties_set.push((path, value));
                }
                None => {
                    h.properties.insert(key, value.clone().unwrap_or_default());
                    h.root_properties_set.push((path, value));
                }
            }
            ok()
        },
    )?;
    Ok(())
}

fn link_streams(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_continue_stream",
        |mut c: Cx<'_>, ty: i32| -> Result<i32, Error> {
            let Some(ty) = StreamType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let Some(s) = c.data_mut().stream_mut() else {
                return status(Status::BadArgument);
            };
            s.continued.push(ty);
            match ty {
                StreamType::HttpRequest => {
                    s.request_paused = false;
                    let body = std::mem::take(&mut s.request_buffer);
                    s.request_body_sent.extend(body);
                }
                StreamType::HttpResponse => {
                    s.response_paused = false;
                    let body = std::mem::take(&mut s.response_buffer);
                    s.response_body_sent.extend(body);
                }
                _ => {}
            }
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_close_stream",
        |mut c: Cx<'_>, ty: i32| -> Result<i32, Error> {
            let Some(ty) = StreamType::from_raw(ty) else {
                return status(Status::BadArgument);
            };
            let Some(s) = c.data_mut().stream_mut() else {
                return status(Status::BadArgument);
            };
            s.closed.push(ty);
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_send_local_response",
        |mut c: Cx<'_>,
         code: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         grpc: i32|
         -> Result<i32, Error> {
            let details = read_str(&c, dptr, dlen)?;
            let body = read(&c, bptr, blen)?;
            let headers = read_map(&c, "proxy_send_local_response", hptr, hlen)?;
            let h = c.data_mut();
            for (k, v) in &headers.0 {
                h.check_header("proxy_send_local_response", k, v);
            }
            if !(100..=599).contains(&code) {
                h.violation(format!("proxy_send_local_response with status {code}"));
            }
            let response = LocalResponse {
                status: code as u32,
                details,
                headers,
                body,
                grpc_status: grpc,
            };
            let Some(s) = h.stream_mut() else {
                return status(Status::BadArgument);
            };
            let again = !s.local_responses.is_empty();
            s.local_responses.push(response);
            if again {
                h.violation("a second proxy_send_local_response on one stream".into());
            }
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_effective_context",
        |mut c: Cx<'_>, id: i32| -> Result<i32, Error> {
            let id = id as u32;
            let h = c.data_mut();
            if id != h.root_id && h.streams.get(&id).is_none_or(|s| s.deleted) {
                return status(Status::BadArgument);
            }
            h.effective = Some(id);
            ok()
        },
    )?;
    Ok(())
}

fn link_calls(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_http_call",
        |mut c: Cx<'_>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout: i32,
         token_ptr: i32|
         -> Result<i32, Error> {
            let cluster = read_str(&c, uptr, ulen)?;
            let headers = read_map(&c, "proxy_http_call", hptr, hlen)?;
            let body = read(&c, bptr, blen)?;
            let trailers = read_map(&c, "proxy_http_call", tptr, tlen)?;
            let h = c.data_mut();
            for (k, v) in &headers.0 {
                h.check_header("proxy_http_call", k, v);
            }
            if let Some(s) = h.http_call_failure {
                return status(s);
            }
            if h.clusters
                .as_ref()
                .is_some_and(|known| !known.contains(&cluster))
            {
                return status(Status::BadArgument);
            }
            // Envoy refuses a call without these.
            if [":method", ":path", ":authority"]
                .iter()
                .any(|k| !headers.contains(k))
            {
                return status(Status::BadArgument);
            }
            let token = h.http_calls.len() as u32 + 1;
            let context = h.context();
            h.http_calls.push(HttpCall {
                token,
                context,
                cluster,
                headers,
                body,
                trailers,
                timeout_ms: timeout as u32,
                answered: false,
            });
            write_u32(&mut c, token_ptr, token)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_call_foreign_function",
        |mut c: Cx<'_>,
         nptr: i32,
         nlen: i32,
         aptr: i32,
         alen: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32, Error> {
            let name = read_str(&c, nptr, nlen)?;
            let args = read(&c, aptr, alen)?;
            let h = c.data_mut();
            let call = ForeignCall {
                context: h.context(),
                name: name.clone(),
                args,
            };
            match h.stream_mut() {
                Some(s) => s.foreign_calls.push(call),
                None => h.root_foreign_calls.push(call),
            }
            match h.foreign_functions.get(&name).cloned() {
                None => status(Status::NotFound),
                Some(ForeignReply::Err(s)) => status(s),
                Some(ForeignReply::Ok(None)) => ok(),
                Some(ForeignReply::Ok(Some(bytes))) => {
                    return_bytes(&mut c, &bytes, ptr_ptr, size_ptr)?;
                    ok()
                }
            }
        },
    )?;
    // gRPC is not offered by this harness: calls fail the way a proxy
    // without the cluster would answer.
    reg.add(
        ENV,
        "proxy_grpc_call",
        |_c: Cx<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _t: i32,
         _r: i32|
         -> Result<i32, Error> { status(Status::InternalFailure) },
    )?;
    reg.add(
        ENV,
        "proxy_grpc_stream",
        |_c: Cx<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _r: i32|
         -> Result<i32, Error> { status(Status::InternalFailure) },
    )?;
    reg.add(
        ENV,
        "proxy_grpc_send",
        |_c: Cx<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> Result<i32, Error> {
            status(Status::NotFound)
        },
    )?;
    reg.add(
        ENV,
        "proxy_grpc_cancel",
        |_c: Cx<'_>, _t: i32| -> Result<i32, Error> { status(Status::NotFound) },
    )?;
    reg.add(
        ENV,
        "proxy_grpc_close",
        |_c: Cx<'_>, _t: i32| -> Result<i32, Error> { status(Status::NotFound) },
    )?;
    reg.add(
        ENV,
        "proxy_get_status",
        |mut c: Cx<'_>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            write_u32(&mut c, code_ptr, 0)?;
            write_u32(&mut c, ptr_ptr, 0)?;
            write_u32(&mut c, size_ptr, 0)?;
            ok()
        },
    )?;
    Ok(())
}

fn link_shared(reg: &mut Registry<'_>) -> Result<(), Error> {
    reg.add(
        ENV,
        "proxy_get_shared_data",
        |mut c: Cx<'_>,
         kptr: i32,
         klen: i32,
         ptr_ptr: i32,
         size_ptr: i32,
         cas_ptr: i32|
         -> Result<i32, Error> {
            let key = read(&c, kptr, klen)?;
            let Some((value, cas)) = c.data().shared_data.get(&key).cloned() else {
                return status(Status::NotFound);
            };
            return_bytes(&mut c, &value, ptr_ptr, size_ptr)?;
            write_u32(&mut c, cas_ptr, cas)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_set_shared_data",
        |mut c: Cx<'_>,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32,
         cas: i32|
         -> Result<i32, Error> {
            let key = read(&c, kptr, klen)?;
            let value = read(&c, vptr, vlen)?;
            let h = c.data_mut();
            let current = h.shared_data.get(&key).map_or(0, |e| e.1);
            if cas != 0 && cas as u32 != current {
                return status(Status::CasMismatch);
            }
            h.shared_data
                .insert(key, (value, current.wrapping_add(1).max(1)));
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_register_shared_queue",
        |mut c: Cx<'_>, nptr: i32, nlen: i32, id_ptr: i32| -> Result<i32, Error> {
            let name = read_str(&c, nptr, nlen)?;
            let h = c.data_mut();
            let id = match h.queues.iter().position(|q| q.0 == name) {
                Some(i) => i + 1,
                None => {
                    h.queues.push((name, VecDeque::new()));
                    h.queues.len()
                }
            };
            write_u32(&mut c, id_ptr, id as u32)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: Cx<'_>,
         _vptr: i32,
         _vlen: i32,
         nptr: i32,
         nlen: i32,
         id_ptr: i32|
         -> Result<i32, Error> {
            let name = read_str(&c, nptr, nlen)?;
            let Some(i) = c.data().queues.iter().position(|q| q.0 == name) else {
                return status(Status::NotFound);
            };
            write_u32(&mut c, id_ptr, i as u32 + 1)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Cx<'_>, id: i32, vptr: i32, vlen: i32| -> Result<i32, Error> {
            let value = read(&c, vptr, vlen)?;
            let Some(q) = (id as usize)
                .checked_sub(1)
                .and_then(|i| c.data_mut().queues.get_mut(i))
            else {
                return status(Status::NotFound);
            };
            q.1.push_back(value);
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: Cx<'_>, id: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            let Some(q) = (id as usize)
                .checked_sub(1)
                .and_then(|i| c.data_mut().queues.get_mut(i))
            else {
                return status(Status::NotFound);
            };
            let Some(value) = q.1.pop_front() else {
                return status(Status::Empty);
            };
            return_bytes(&mut c, &value, ptr_ptr, size_ptr)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_define_metric",
        |mut c: Cx<'_>, ty: i32, nptr: i32, nlen: i32, id_ptr: i32| -> Result<i32, Error> {
            let name = read_str(&c, nptr, nlen)?;
            let h = c.data_mut();
            let id = match h.metrics.iter().position(|m| m.0 == name) {
                Some(i) => i + 1,
                None => {
                    h.metrics.push((name, ty, 0));
                    h.metrics.len()
                }
            };
            write_u32(&mut c, id_ptr, id as u32)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_get_metric",
        |mut c: Cx<'_>, id: i32, out: i32| -> Result<i32, Error> {
            let Some(value) = (id as usize)
                .checked_sub(1)
                .and_then(|i| c.data().metrics.get(i))
                .map(|m| m.2)
            else {
                return status(Status::NotFound);
            };
            write_u64(&mut c, out, value as u64)?;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_record_metric",
        |mut c: Cx<'_>, id: i32, value: i64| -> Result<i32, Error> {
            let Some(m) = (id as usize)
                .checked_sub(1)
                .and_then(|i| c.data_mut().metrics.get_mut(i))
            else {
                return status(Status::NotFound);
            };
            m.2 = value;
            c.data_mut().recorded_samples += 1;
            ok()
        },
    )?;
    reg.add(
        ENV,
        "proxy_increment_metric",
        |mut c: Cx<'_>, id: i32, by: i64| -> Result<i32, Error> {
            let Some(m) = (id as usize)
                .checked_sub(1)
                .and_then(|i| c.data_mut().metrics.get_mut(i))
            else {
                return status(Status::NotFound);
            };
            m.2 = m.2.wrapping_add(by);
            ok()
        },
    )?;
    Ok(())
}
