//! Fixture access for unit tests (`tests/fixtures/hl7v2`, see its SOURCES.md).

use std::path::PathBuf;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7v2")
}

/// Bytes of `messages/<name>` (or another sub-path).
pub fn read(rel: &str) -> Vec<u8> {
    let p = dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

pub fn message(name: &str) -> Vec<u8> {
    read(&format!("messages/{name}"))
}

/// Every file in `messages/`, sorted, as (name, bytes).
pub fn all_messages() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir().join("messages"))
        .expect("fixture dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).expect("fixture");
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}
