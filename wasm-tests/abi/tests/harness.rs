//! Checks of the harness itself: traps are reported with the module's last
//! words, a dead VM stays dead, a missing build says how to make one, and a
//! bad plugin configuration is refused without a trap.

mod common;

use aigw_wasm_abi_tests::{LogLevel, Vm};
use common::*;

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, content: &[u8]) -> Vec<u8> {
    let mut s = vec![id];
    leb(content.len(), &mut s);
    s.extend_from_slice(content);
    s
}

fn name(n: &str) -> Vec<u8> {
    let mut v = Vec::new();
    leb(n.len(), &mut v);
    v.extend_from_slice(n.as_bytes());
    v
}

/// A module whose `proxy_on_context_create` logs "boom" at Critical (as the
/// SDK's panic hook does) and then executes `unreachable` (as a panic with
/// panic=abort does).
fn panicking_module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = (i32 i32 i32) -> i32, 1 = (i32 i32) -> ().
    m.extend(section(
        1,
        &[
            2, 0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 0,
        ],
    ));
    // Import env.proxy_log as function 0.
    let mut imports = vec![1];
    imports.extend(name("env"));
    imports.extend(name("proxy_log"));
    imports.extend([0, 0]);
    m.extend(section(2, &imports));
    // One function of type 1.
    m.extend(section(3, &[1, 1]));
    // One memory of one page.
    m.extend(section(5, &[1, 0, 1]));
    let mut exports = vec![2];
    exports.extend(name("memory"));
    exports.extend([2, 0]);
    exports.extend(name("proxy_on_context_create"));
    exports.extend([0, 1]);
    m.extend(section(7, &exports));
    // proxy_log(5, 16, 4); drop; unreachable
    let body = [0, 0x41, 5, 0x41, 16, 0x41, 4, 0x10, 0, 0x1a, 0x00, 0x0b];
    let mut code = vec![1];
    leb(body.len(), &mut code);
    code.extend(body);
    m.extend(section(10, &code));
    // "boom" at address 16.
    let mut data = vec![1, 0, 0x41, 16, 0x0b, 4];
    data.extend(b"boom");
    m.extend(section(11, &data));
    m
}

#[test]
fn a_trap_names_the_callback_and_carries_the_panic_message() {
    let mut vm = Vm::from_bytes(&panicking_module()).unwrap();
    let err = vm.start(b"{}").unwrap_err().to_string();
    assert!(err.contains("proxy_on_context_create"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("Critical") && err.contains("boom"), "{err}");
    assert!(vm.is_dead());
    let again = vm.create_stream().unwrap_err().to_string();
    assert!(again.contains("dead"), "{again}");
}

#[test]
fn a_missing_build_says_how_to_make_one() {
    let err = Vm::from_path("/nonexistent/aigw_filter.wasm")
        .err()
        .expect("no module there")
        .to_string();
    assert!(err.contains("scripts/build-filter.sh"), "{err}");
}

#[test]
fn every_import_of_the_built_filter_is_implemented() {
    let vm = Vm::filter().unwrap();
    assert!(vm.has_export("proxy_abi_version_0_2_1"));
    assert!(vm.has_export("proxy_on_memory_allocate"));
    assert_eq!(vm.stubbed_imports(), &[] as &[String]);
}

#[test]
fn invalid_plugin_configuration_is_refused_without_a_trap() {
    let mut vm = Vm::filter().unwrap();
    assert!(!vm.start(b"{\"role\":\"sideways\"}").unwrap());
    let errors = vm.logs_at_least(LogLevel::Error);
    assert!(
        errors
            .iter()
            .any(|m| m.contains("invalid plugin configuration")),
        "{errors:?}"
    );
    // An empty configuration is refused too.
    let mut vm = Vm::filter().unwrap();
    assert!(!vm.start(b"").unwrap());
    // A good one after a bad one is taken (a configuration update).
    let config = serde_json::to_vec(&router_config()).unwrap();
    assert!(vm.configure(&config).unwrap());
    let ctx = vm.create_stream().unwrap();
    vm.request_headers(ctx, &[(":method", "GET"), (":path", "/v1/models")], true)
        .unwrap();
    assert_eq!(vm.stream(ctx).local_response().map(|r| r.status), Some(200));
}
