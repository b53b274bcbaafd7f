//! Where unit tests find their data: `tests/fixtures/terminology` of the
//! repository, and the project's `../shared/data` beside it (as CI lays it).
//!
//! The repository root comes from `file!()` when it is absolute (the module
//! built alone in a scratch crate through `#[path]`), else from the crate.

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    let here = Path::new(file!());
    match here.ancestors().nth(3) {
        Some(root) if here.is_absolute() => root.to_path_buf(),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

pub fn shared(rel: &str) -> PathBuf {
    repo().join("../shared/data").join(rel)
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures/terminology").join(rel)
}
