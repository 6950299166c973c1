//! Copies the protobuf descriptor set that ships inside the `envoy-types`
//! crate into OUT_DIR, so the controller can turn the Envoy configuration it
//! writes as JSON into protobuf with the exact Envoy schema (and reject a
//! misspelled field at translation time rather than in Envoy).
use std::path::PathBuf;

const ENVOY_TYPES: &str = "envoy-types-0.7.7";

fn main() {
    println!("cargo:rerun-if-env-changed=AIGW_ENVOY_DESCRIPTORS");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("envoy_types.bin");
    let source = std::env::var("AIGW_ENVOY_DESCRIPTORS")
        .map(PathBuf::from)
        .ok()
        .or_else(find_in_registry)
        .unwrap_or_else(|| panic!("cannot find {ENVOY_TYPES}/src/generated/types.bin in the cargo registry; set AIGW_ENVOY_DESCRIPTORS"));
    println!("cargo:rerun-if-changed={}", source.display());
    std::fs::copy(&source, &out).expect("copy envoy descriptor set");
}

fn find_in_registry() -> Option<PathBuf> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok()?;
    let registries = std::fs::read_dir(home.join("registry").join("src")).ok()?;
    registries
        .flatten()
        .map(|r| r.path().join(ENVOY_TYPES).join("src/generated/types.bin"))
        .find(|p| p.is_file())
}
