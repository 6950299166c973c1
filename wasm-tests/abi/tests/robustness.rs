//! Garbage in, no trap out: thousands of random requests and responses
//! through the router role of one VM, which must then still work.
//!
//! A panic in the filter kills the worker's VM in Envoy, so no input may
//! reach one. Inputs are deterministic (fixed seed), so a failure names the
//! iteration and replays.
//!
//! Header values here are what Envoy's codecs pass to filters: request
//! pseudo-headers and `content-length` in ASCII (codecs reject the rest);
//! other headers may carry any bytes but CR, LF and NUL, including bytes
//! that are not UTF-8. A response `content-type` that is not UTF-8 has its
//! own test in `known_bugs.rs`.

mod common;

use aigw_wasm_abi_tests::{Action, Flow, Headers, Vm, VmError};
use common::*;

/// xorshift64*: small, deterministic, good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn ascii(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b' ' + self.below(95) as u8) as char)
            .collect()
    }
    /// Text with JSON-hostile characters: quotes, escapes, control
    /// characters, multi-byte and astral code points.
    fn nasty_text(&mut self, len: usize) -> String {
        let pieces = [
            "a",
            "Z",
            "0",
            " ",
            "\"",
            "\\",
            "/",
            "\n",
            "\r",
            "\t",
            "\u{0}",
            "\u{1f}",
            "é",
            "€",
            "𝄞",
            "\u{fffd}",
            "\u{202e}",
            "claude-",
            "gpt-4o-mini",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
        ];
        (0..len).map(|_| self.pick(&pieces)).collect()
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A random JSON-ish value, sometimes not valid JSON at all.
fn json_soup(rng: &mut Rng, depth: usize) -> String {
    let choice = if depth > 6 {
        rng.below(6)
    } else {
        rng.below(10)
    };
    match choice {
        0 => "null".into(),
        1 => rng.pick(&["true", "false", "tru", "nul"]).into(),
        2 => rng
            .pick(&[
                "0",
                "-1",
                "1e999",
                "18446744073709551616",
                "-0.0",
                "1.5",
                "0x10",
                "NaN",
            ])
            .into(),
        3 => json_string(&rng.nasty_text(12)),
        4 => format!("\"{}\"", rng.nasty_text(6)),
        5 => String::from_utf8_lossy(&rng.bytes(4)).into_owned(),
        6 | 7 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| json_soup(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let keys = [
                "model",
                "stream",
                "stream_options",
                "include_usage",
                "messages",
                "usage",
                "x",
            ];
            let n = rng.below(5);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "{}:{}",
                        json_string(rng.pick(&keys)),
                        json_soup(rng, depth + 1)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn request_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => {
            let n = rng.below(1500);
            rng.bytes(n)
        }
        1 | 2 => json_soup(rng, 0).into_bytes(),
        3 => Vec::new(),
        4 => {
            let depth = 1 + rng.below(5000);
            let open = if rng.chance(50) { "[" } else { "{\"model\":" };
            let mut b = String::from("{\"model\":\"gpt-4o-mini\",\"x\":");
            b.push_str(&open.repeat(depth));
            b.into_bytes()
        }
        5 => {
            // Over the limit, valid or not.
            let mut b = br#"{"model":"gpt-4o-mini","messages":[{"content":""#.to_vec();
            b.extend(std::iter::repeat_n(
                b'x',
                MAX_BYTES as usize + rng.below(2000),
            ));
            b.extend_from_slice(br#""}]}"#);
            b
        }
        _ => {
            // Almost valid: real field names with random values.
            let model = match rng.below(8) {
                0 => json_string(&rng.nasty_text(10)),
                1 => json_string(&format!("claude-{}", rng.nasty_text(8))),
                2 => rng.pick(&["7", "null", "[]", "{}", "\"\"", "true"]).into(),
                3 => json_string(rng.pick(&["gpt-4o-mini", "llama-3"])),
                4 => json_string(&"claude-".repeat(1 + rng.below(100))),
                5 => json_string(&format!("claude-{}", rng.ascii(20))),
                _ => json_string(rng.pick(&["gpt-4o-mini", "claude-3-opus", "unknown"])),
            };
            let mut fields = vec![format!("\"model\":{model}")];
            if rng.chance(60) {
                fields.push(format!(
                    "\"stream\":{}",
                    rng.pick(&["true", "false", "\"yes\"", "1", "null"])
                ));
            }
            if rng.chance(40) {
                fields.push(format!("\"stream_options\":{}", json_soup(rng, 3)));
            }
            if rng.chance(50) {
                fields.push(format!("\"messages\":{}", json_soup(rng, 2)));
            }
            if rng.chance(20) {
                // Duplicate keys.
                fields.push(format!("\"model\":{}", json_soup(rng, 5)));
            }
            let mut b = format!("{{{}}}", fields.join(",")).into_bytes();
            if rng.chance(10) {
                let cut = rng.below(b.len());
                b.truncate(cut);
            }
            b
        }
    }
}

fn request_headers(rng: &mut Rng, body_len: usize) -> Headers {
    let method = rng.pick(&["POST", "POST", "POST", "POST", "POST", "GET", "PUT", "post"]);
    let path = match rng.below(16) {
        0 => "/v1/completions".to_string(),
        1 => "/v1/embeddings".to_string(),
        2 => "/anthropic/v1/messages".to_string(),
        3 => "/anthropic/v1/messages/count_tokens".to_string(),
        4 => "/v1/models".to_string(),
        5 => {
            let n = rng.below(40);
            format!("/{}", rng.ascii(n).replace(' ', ""))
        }
        6 => "/v1/chat/completions/?".to_string() + &rng.ascii(10).replace(' ', ""),
        7 => "/anthropic/".to_string() + &rng.ascii(8).replace(' ', ""),
        8 => String::new(),
        _ => "/v1/chat/completions".to_string(),
    };
    let mut h = Headers::new();
    if !rng.chance(3) {
        h.add(":method", method.as_bytes());
    }
    if !rng.chance(3) {
        h.add(":path", path.as_bytes());
    }
    h.add(":authority", b"gw");
    match rng.below(6) {
        0 => {}
        1 => h.add("content-length", rng.ascii(6).as_bytes()),
        2 => h.add(
            "content-length",
            (rng.next() % 100_000).to_string().as_bytes(),
        ),
        3 => h.add("content-length", b"18446744073709551616"),
        _ => h.add("content-length", body_len.to_string().as_bytes()),
    }
    for _ in 0..rng.below(4) {
        let name = rng.pick(&[
            "x-ai-eg-model",
            "x-aigw-endpoint",
            "user-agent",
            "x-user-id",
            "content-type",
            "authorization",
        ]);
        // Any bytes a codec lets through: no CR, LF or NUL.
        let n = rng.below(30);
        let value: Vec<u8> = rng
            .bytes(n)
            .into_iter()
            .map(|b| {
                if matches!(b, b'\r' | b'\n' | 0) {
                    b'_'
                } else {
                    b
                }
            })
            .collect();
        h.add(name, &value);
    }
    h
}

fn sse_body(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(8) {
        let sep = rng.pick(&["\n\n", "\r\n\r\n", "\r\r", "\n", ""]);
        let line = match rng.below(7) {
            0 => "data: [DONE]".to_string(),
            1 => format!(
                "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}",
                rng.pick(&["1", "12", "40", "-5", "1.5", "18446744073709551615", "\"x\"", "null"]),
                rng.next() % 1000,
                rng.pick(&["3", "50", "", "99999999999999999999", "[]"])
            ),
            2 => format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":{}}}}}],\"usage\":null}}",
                json_string(&rng.nasty_text(8))
            ),
            3 => format!("event: {}\ndata: {}", rng.ascii(5), json_soup(rng, 2)),
            4 => format!(": {}", rng.ascii(20)),
            5 => String::from_utf8_lossy(&rng.bytes(20)).into_owned(),
            _ => format!("data: {}", json_soup(rng, 0)),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(sep.as_bytes());
    }
    out
}

fn response(rng: &mut Rng) -> (Headers, Vec<u8>) {
    let mut h = Headers::new();
    let status = rng.pick(&[
        "200", "200", "200", "200", "200", "200", "400", "500", "", "2000",
    ]);
    if !rng.chance(3) {
        h.add(":status", status.as_bytes());
    }
    let content_type = match rng.below(5) {
        0 => "application/json".to_string(),
        1 => "text/plain".to_string(),
        2 => format!(
            "text/event-stream{}",
            rng.nasty_text(3).replace(['\r', '\n', '\0'], "")
        ),
        _ => "text/event-stream".to_string(),
    };
    if !rng.chance(5) {
        h.add("content-type", content_type.as_bytes());
    }
    if rng.chance(30) {
        h.add("content-length", (rng.next() % 5000).to_string().as_bytes());
    }
    let body = match rng.below(5) {
        0 => {
            let n = rng.below(800);
            rng.bytes(n)
        }
        1 => format!("{{\"choices\":[],\"usage\":{}}}", json_soup(rng, 3)).into_bytes(),
        2 => format!(
            "{{\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{}}}}}",
            rng.next() % 10_000,
            rng.pick(&["5", "-1", "1e3", "null"])
        )
        .into_bytes(),
        _ => sse_body(rng),
    };
    (h, body)
}

fn send_chunked(
    vm: &mut Vm,
    ctx: u32,
    body: &[u8],
    chunk: usize,
    response: bool,
) -> Result<(), VmError> {
    if body.is_empty() {
        return Ok(());
    }
    let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        if response {
            vm.response_body(ctx, c, last)?;
        } else {
            vm.request_body(ctx, c, last)?;
        }
        if vm.stream(ctx).local_response().is_some() {
            break;
        }
    }
    Ok(())
}

/// A request the router accepts, so the response path gets exercised.
fn valid_request(rng: &mut Rng) -> (Headers, Vec<u8>) {
    let model = rng.pick(&["gpt-4o-mini", "llama-3", "claude-3-opus"]);
    let stream = rng.pick(&["", ",\"stream\":true", ",\"stream\":false"]);
    let usage = rng.pick(&[
        "",
        ",\"stream_options\":{\"include_usage\":true}",
        ",\"stream_options\":{\"include_usage\":false}",
        ",\"stream_options\":7",
    ]);
    let body = format!("{{\"model\":\"{model}\"{stream}{usage},\"messages\":[]}}").into_bytes();
    let path = rng.pick(&[
        "/v1/chat/completions",
        "/v1/completions",
        "/anthropic/v1/messages",
    ]);
    let mut h = Headers::new();
    h.add(":method", b"POST");
    h.add(":path", path.as_bytes());
    h.add(":authority", b"gw");
    h.add("content-length", body.len().to_string().as_bytes());
    (h, body)
}

fn one_exchange(vm: &mut Vm, rng: &mut Rng) -> Result<(), VmError> {
    let (headers, body) = if rng.chance(50) {
        let body = request_body(rng);
        (request_headers(rng, body.len()), body)
    } else {
        valid_request(rng)
    };
    let ctx = vm.create_stream()?;
    vm.request_headers_map(ctx, headers, body.is_empty())?;
    if vm.stream(ctx).local_response().is_none() {
        let chunk = 1 + rng.below(400);
        send_chunked(vm, ctx, &body, chunk, false)?;
    }
    // Sometimes the client goes away in the middle.
    if rng.chance(5) {
        return vm.finish_stream(ctx);
    }
    if vm.request_flow(ctx) == Flow::Continued || rng.chance(10) {
        let (h, b) = response(rng);
        vm.response_headers_map(ctx, h, b.is_empty())?;
        let chunk = 1 + rng.below(64);
        send_chunked(vm, ctx, &b, chunk, true)?;
    }
    vm.finish_stream(ctx)?;
    // Keep memory flat over thousands of streams.
    vm.host_mut().streams.remove(&ctx);
    Ok(())
}

fn good_request_still_works(vm: &mut Vm) -> Result<(), VmError> {
    let ctx = vm.create_stream()?;
    let body = br#"{"model":"llama-3","messages":[{"role":"user","content":"still there?"}]}"#;
    let flow = vm.send_request(ctx, &refs(&chat_headers(body.len())), body, 16)?;
    assert_eq!(flow, Flow::Continued);
    let s = vm.stream(ctx);
    assert_eq!(s.last_action(), Some(Action::Continue));
    assert_eq!(s.request_headers().get_all("x-ai-eg-model"), ["llama-3"]);
    assert!(s.called_foreign("clear_route_cache"));
    let response =
        br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
    vm.send_response(
        ctx,
        &[(":status", "200"), ("content-type", "application/json")],
        response,
        5,
    )?;
    vm.finish_stream(ctx)?;
    assert_eq!(
        vm.stream(ctx).property("llm_total_token").as_deref(),
        Some("7")
    );

    let ctx = vm.create_stream()?;
    vm.request_headers(ctx, &[(":method", "GET"), (":path", "/v1/models")], true)?;
    assert_eq!(vm.stream(ctx).local_response().map(|r| r.status), Some(200));
    Ok(())
}

#[test]
fn random_garbage_never_traps_the_router() {
    garbage_never_traps(&router_config(), 0x5EED_1234_ABCD_0001);
}

/// The same with the models served directly: the router role writes the
/// requests and guards (holds, checks, decodes) the answers.
#[test]
fn random_garbage_never_traps_the_router_serving_directly() {
    let mut config = router_config();
    config.backends = upstream_config().backends;
    config.direct = [
        ("gpt-4o-mini", "default/override"),
        ("llama-3", "default/local"),
    ]
    .into_iter()
    .map(|(m, b)| (m.to_string(), b.to_string()))
    .collect();
    garbage_never_traps(&config, 0x5EED_1234_ABCD_0002);
}

fn garbage_never_traps(config: &aigw_filter::config::PluginConfig, seed: u64) {
    const ITERATIONS: usize = 3000;
    let mut vm = vm_with(config).unwrap();
    let mut rng = Rng(seed);
    for i in 0..ITERATIONS {
        let before = rng.0;
        if let Err(e) = one_exchange(&mut vm, &mut rng) {
            panic!("iteration {i} (rng state {before:#x}) trapped the filter:\n{e}");
        }
    }
    good_request_still_works(&mut vm).unwrap();
    // The one kind of violation this input can cause is the known
    // header-injection bug (see known_bugs.rs); anything else is new.
    let other: Vec<&String> = vm
        .host()
        .violations
        .iter()
        .filter(|v| !v.contains("\"x-ai-eg-model\" set to a value with CR, LF or NUL"))
        .collect();
    assert!(other.is_empty(), "ABI violations: {other:#?}");
}

/// Valid OpenAI streams cut at random places: when the client did not ask
/// for usage, it gets every event but the usage-only one, byte for byte.
#[test]
fn random_chunking_of_streams_keeps_every_other_event() {
    let mut vm = vm_with(&router_config()).unwrap();
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    for i in 0..300 {
        let mut events = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let n = 1 + rng.below(20);
            let text = rng.nasty_text(n);
            events.push(format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}}}}],\"usage\":null}}\n\n",
                json_string(&text)
            ));
        }
        let (input, output) = (rng.next() % 5000, rng.next() % 5000);
        let usage = format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{input},\"completion_tokens\":{output},\"total_tokens\":{}}}}}\n\n",
            input + output
        );
        let stream = format!("{}{usage}data: [DONE]\n\n", events.concat());
        let want = format!("{}data: [DONE]\n\n", events.concat());

        let ctx = vm.create_stream().unwrap();
        let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
        let flow = vm
            .send_request(ctx, &refs(&chat_headers(body.len())), body, 64)
            .unwrap();
        assert_eq!(flow, Flow::Continued);
        let chunk = 1 + rng.below(80);
        vm.send_response(
            ctx,
            &[
                (":status", "200"),
                ("content-type", "text/event-stream; charset=utf-8"),
            ],
            stream.as_bytes(),
            chunk,
        )
        .unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        vm.finish_stream(ctx).unwrap();
        let s = vm.stream(ctx);
        assert_eq!(
            String::from_utf8_lossy(&s.response_body_sent),
            want,
            "iteration {i}, chunk size {chunk}"
        );
        assert_eq!(
            s.property("llm_total_token"),
            Some((input + output).to_string()),
            "iteration {i}"
        );
        vm.host_mut().streams.remove(&ctx);
    }
    vm.assert_no_violations();
}
