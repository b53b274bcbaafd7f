//! Benchmark data and figures for `fhirlake bench`: synthetic Bulk data of a
//! chosen size, and the throughput, peak memory and time per stage of a load.
//!
//! The dataset replicates the bundled sample (`data/bulk`): round *k* of every
//! line has each UUID rewritten by a deterministic function of (uuid, k, seed),
//! so ids stay unique per round and references still point at the right
//! resources. Nothing generated is committed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::load::{LoadReport, StageTimings};

/// Parses `500MB`, `1GB`, `1.5GB`, `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_uppercase();
    let (number, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("size {text:?}: use B, KB, MB or GB"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("size {text:?} is not a number"))?;
    Ok((value * scale) as u64)
}

/// A sample line and where its UUIDs are, so each round only patches bytes.
struct Template {
    line: Vec<u8>,
    uuid_at: Vec<usize>,
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn uuid_positions(line: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut i = 0;
    while i + 36 <= line.len() {
        let w = &line[i..i + 36];
        let dashes = w[8] == b'-' && w[13] == b'-' && w[18] == b'-' && w[23] == b'-';
        if dashes
            && w.iter()
                .enumerate()
                .all(|(j, &b)| matches!(j, 8 | 13 | 18 | 23) || is_hex(b))
        {
            found.push(i);
            i += 36;
        } else {
            i += 1;
        }
    }
    found
}

fn mix(uuid_head: u32, round: u64, seed: u64) -> u32 {
    let x = (round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).rotate_left(17);
    uuid_head ^ (x as u32) ^ ((x >> 32) as u32)
}

/// Writes round `round` of `template` into `out`.
fn write_round(template: &Template, round: u64, seed: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&template.line);
    if round == 0 {
        return;
    }
    for &at in &template.uuid_at {
        let head = &mut out[start + at..start + at + 8];
        let value = u32::from_str_radix(std::str::from_utf8(head).unwrap_or("0"), 16).unwrap_or(0);
        head.copy_from_slice(format!("{:08x}", mix(value, round, seed)).as_bytes());
    }
}

/// What the generator wrote.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Dataset {
    pub dir: PathBuf,
    pub bytes: u64,
    pub lines: u64,
    pub files: usize,
}

/// Generates about `target_bytes` of NDJSON into `dir`, one file per type.
pub fn generate(sample: &Path, dir: &Path, target_bytes: u64, seed: u64) -> Result<Dataset> {
    let mut by_type: BTreeMap<String, Vec<Template>> = BTreeMap::new();
    let mut sample_bytes = 0u64;
    for entry in walk_ndjson(sample)? {
        if entry.file_name().is_some_and(|n| n == "log.ndjson") {
            continue;
        }
        let name = entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(kind) = crate::fhir::type_from_file_name(name) else {
            continue;
        };
        let reader = BufReader::new(
            File::open(&entry).with_context(|| format!("reading sample {}", entry.display()))?,
        );
        for line in reader.split(b'\n') {
            let mut line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            line.push(b'\n');
            sample_bytes += line.len() as u64;
            let uuid_at = uuid_positions(&line);
            by_type
                .entry(kind.to_owned())
                .or_default()
                .push(Template { line, uuid_at });
        }
    }
    if sample_bytes == 0 {
        bail!(
            "no NDJSON resources found under {}; pass --sample DIR",
            sample.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let rounds = target_bytes.div_ceil(sample_bytes).max(1);
    let mut dataset = Dataset {
        dir: dir.to_path_buf(),
        bytes: 0,
        lines: 0,
        files: 0,
    };
    let mut buf = Vec::with_capacity(8 << 20);
    for (kind, templates) in &by_type {
        let path = dir.join(format!("{kind}.000.ndjson"));
        let mut out = BufWriter::with_capacity(8 << 20, File::create(&path)?);
        for round in 0..rounds {
            for template in templates {
                write_round(template, round, seed, &mut buf);
                dataset.lines += 1;
            }
            if buf.len() >= 4 << 20 {
                dataset.bytes += buf.len() as u64;
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        dataset.bytes += buf.len() as u64;
        out.write_all(&buf)?;
        buf.clear();
        out.flush()?;
        dataset.files += 1;
    }
    Ok(dataset)
}

/// The `.ndjson` files under `root`, sorted.
pub fn walk_ndjson(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "ndjson") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct BenchResult {
    pub dataset: Dataset,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub rows_per_s: f64,
    pub peak_rss_mb: Option<f64>,
    pub threads: usize,
    pub stages: StageTimings,
    pub rows: RowFigures,
}

/// What the load did to the lake's rows, from its manifest and the Delta
/// commits' metrics.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct RowFigures {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Stored rows written again unchanged (a copy-on-write MERGE's cost).
    pub rewritten: u64,
    /// Stored files replaced by rewritten ones.
    pub files_rewritten: u64,
    /// Stored files whose deletion vector a commit set.
    pub deletion_vectors: u64,
}

impl RowFigures {
    fn of(report: &LoadReport) -> Self {
        let totals = &report.manifest.totals;
        let mut figures = RowFigures {
            inserted: totals.inserted,
            updated: totals.updated,
            unchanged: totals.unchanged,
            ..Default::default()
        };
        let metrics = report.manifest.tables.values().flat_map(|t| &t.commits);
        for merge in metrics.filter_map(|c| c.merge.as_ref()) {
            figures.rewritten += merge.rows_copied;
            figures.files_rewritten += merge.files_removed;
            figures.deletion_vectors += merge.deletion_vectors;
        }
        figures
    }
}

/// The figures of one benchmark load.
pub fn summarize(mut dataset: Dataset, report: &LoadReport, seconds: f64) -> BenchResult {
    let rows = report.manifest.totals.total();
    dataset.lines = rows;
    BenchResult {
        mb_per_s: dataset.bytes as f64 / 1e6 / seconds,
        rows_per_s: rows as f64 / seconds,
        peak_rss_mb: peak_rss_bytes().map(|b| b as f64 / 1e6),
        threads: rayon::current_num_threads(),
        stages: report.stages.clone(),
        rows: RowFigures::of(report),
        dataset,
        seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("200mb").unwrap(), 200_000_000);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn rounds_rewrite_uuids_consistently() {
        let line = b"{\"id\":\"0a1b2c3d-0000-4000-8000-000000000001\",\"subject\":{\"reference\":\"Patient/0a1b2c3d-0000-4000-8000-000000000001\"}}\n".to_vec();
        let template = Template {
            uuid_at: uuid_positions(&line),
            line,
        };
        assert_eq!(template.uuid_at.len(), 2);
        let mut round0 = Vec::new();
        write_round(&template, 0, 1, &mut round0);
        assert_eq!(round0, template.line);
        let mut round1 = Vec::new();
        write_round(&template, 1, 1, &mut round1);
        assert_ne!(round1, template.line);
        let a = &round1[template.uuid_at[0]..template.uuid_at[0] + 36];
        let b = &round1[template.uuid_at[1]..template.uuid_at[1] + 36];
        assert_eq!(a, b, "a reference follows its resource's new id");
    }
}
