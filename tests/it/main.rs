//! Integration tests: one binary, a module per area (see STYLE.md).

mod common;
mod load;
mod s3;
mod sof;
mod views;
