//! Views: golden rows of the default views, `view run`, and views in loads.

mod golden;
mod load;
mod run;

use serde_json::Value;

/// Each non-blank line of `text` as JSON.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
