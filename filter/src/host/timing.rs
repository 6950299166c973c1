//! Built with the `callback-timing` feature only (the benchmark's probe,
//! never the shipped filter): each callback of both roles is timed inside
//! the VM with the host clock, and every `REPORT_EVERY` requests each worker
//! logs what a request spent per callback, as one JSON line
//! (`scripts/bench/run.py` reads it). What the times leave out is Envoy's
//! own work around the callbacks: entering the VM, buffering, routing.

use super::*;

const REPORT_EVERY: u64 = 2000;
const CALLBACKS: [&str; 5] = [
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "log",
];

#[derive(Default)]
struct Totals {
    /// (role 0 router / 1 upstream, callback) -> (calls, nanoseconds).
    times: [[(u64, u64); 5]; 2],
    requests: u64,
    /// What one clock read costs, subtracted from every callback's time.
    clock_ns: Option<u64>,
}

thread_local! {
    static TOTALS: RefCell<Totals> = RefCell::new(Totals::default());
}

fn clock_cost(ctx: &dyn Context) -> u64 {
    let start = now_ns(ctx);
    for _ in 0..100 {
        now_ns(ctx);
    }
    now_ns(ctx).saturating_sub(start) / 101
}

/// A filter of either role, timed.
pub(super) struct Timed<T> {
    pub(super) inner: T,
    /// 0: router, 1: upstream.
    pub(super) role: usize,
}

impl<T: Context> Timed<T> {
    fn time<R>(&mut self, callback: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let start = now_ns(&self.inner);
        let out = f(&mut self.inner);
        let spent = now_ns(&self.inner).saturating_sub(start);
        TOTALS.with(|t| {
            let mut t = t.borrow_mut();
            let clock_ns = *t.clock_ns.get_or_insert_with(|| clock_cost(&self.inner));
            let slot = &mut t.times[self.role][callback];
            slot.0 += 1;
            slot.1 += spent.saturating_sub(clock_ns);
            if self.role == 0 && callback == 4 {
                t.requests += 1;
                if t.requests == REPORT_EVERY {
                    log(LogLevel::Warn, &report(&t));
                    *t = Totals {
                        clock_ns: t.clock_ns,
                        ..Totals::default()
                    };
                }
            }
        });
        out
    }
}

/// Microseconds per request, by role and callback.
fn report(t: &Totals) -> String {
    let per_request = |ns: u64| ns as f64 / 1000.0 / t.requests.max(1) as f64;
    let mut roles = serde_json::Map::new();
    let mut total = 0.0;
    for (role, name) in ["router", "upstream"].iter().enumerate() {
        let mut callbacks = serde_json::Map::new();
        for (callback, (calls, ns)) in t.times[role].iter().enumerate() {
            if *calls > 0 {
                total += per_request(*ns);
                callbacks.insert(
                    CALLBACKS[callback].into(),
                    serde_json::json!({"us": per_request(*ns), "calls": *calls as f64 / t.requests as f64}),
                );
            }
        }
        roles.insert((*name).into(), callbacks.into());
    }
    let line = serde_json::json!({
        "requests": t.requests,
        "clock_read_us": t.clock_ns.unwrap_or(0) as f64 / 1000.0,
        "in_vm_us_per_request": total,
        "roles": roles,
    });
    format!("aigw callback timing {line}")
}

impl<T: Context> Context for Timed<T> {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        self.inner
            .on_http_call_response(token, headers, body, trailers)
    }
}

impl<T: HttpContext> HttpContext for Timed<T> {
    fn on_http_request_headers(&mut self, n: usize, end: bool) -> Action {
        self.time(0, |f| f.on_http_request_headers(n, end))
    }
    fn on_http_request_body(&mut self, n: usize, end: bool) -> Action {
        self.time(1, |f| f.on_http_request_body(n, end))
    }
    fn on_http_response_headers(&mut self, n: usize, end: bool) -> Action {
        self.time(2, |f| f.on_http_response_headers(n, end))
    }
    fn on_http_response_body(&mut self, n: usize, end: bool) -> Action {
        self.time(3, |f| f.on_http_response_body(n, end))
    }
    fn on_log(&mut self) {
        self.time(4, |f| f.on_log())
    }
}
