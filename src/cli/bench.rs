//! `fhirlake bench`: generate the synthetic set (or reuse it), load it into
//! a fresh lake, print the figures. With `--base`, the set is a nightly-style
//! delta loaded into a lake that already holds the base set: the base lake is
//! built first, and each load runs in a process of its own, so the delta's
//! peak memory is its own.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{LakeArgs, policy_for, runtime, views_for};
use crate::bench::{BenchResult, Dataset, generate, parse_size, summarize, walk_ndjson};
use crate::lake::Lake;
use crate::load::Job;
use crate::source::discover;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Size of the synthetic dataset: 200MB, 1GB, 4GB (decimal units).
    #[arg(long, default_value = "1GB")]
    pub size: String,
    /// Lake to load into (default: a fresh directory under --work-dir, removed after).
    #[arg(long)]
    pub lake: Option<String>,
    /// Where the dataset is generated (kept, and reused when it already has the size).
    #[arg(long, default_value = "target/fhirlake-bench")]
    pub work_dir: PathBuf,
    /// Sample NDJSON directories to replicate.
    #[arg(long, default_value = "data/bulk")]
    pub sample: PathBuf,
    /// Seed of the generated ids. A delta (`--base`) needs one other than
    /// the base's: its first round is the sample itself, so those rows are
    /// newer versions of the base's (by file time), the rest new ids.
    #[arg(long, default_value_t = BASE_SEED)]
    pub seed: u64,
    /// Load the set as a delta into a lake holding the BASE set (e.g. 4GB;
    /// 0 for an empty lake). The base lake is built under --work-dir first.
    #[arg(long, value_name = "BASE")]
    pub base: Option<String>,
    /// Only generate the dataset and print its directory.
    #[arg(long)]
    pub generate_only: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Load without view columns (to measure what the views cost).
    #[arg(long)]
    pub no_views: bool,
    /// Load through this policy (to measure what it costs): a TOML file or `part2` / `research`.
    #[arg(long, value_name = "NAME_OR_FILE")]
    pub policy: Option<String>,
    /// Code checks as a load has them (`--no-code-checks` measures without).
    #[command(flatten)]
    pub codes: super::CodeCheckFlags,
}

/// The seed of base sets.
const BASE_SEED: u64 = 20261126;

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(base) = &args.base {
        return run_delta(&args, base);
    }
    let target = parse_size(&args.size)?;
    let data_dir = data_dir(&args.work_dir, &args.size, args.seed);
    let reuse = std::fs::read_to_string(data_dir.join(".complete")).is_ok();
    let dataset = if reuse {
        let mut dataset = Dataset {
            dir: data_dir.clone(),
            bytes: 0,
            lines: 0,
            files: 0,
        };
        for file in walk_ndjson(&data_dir)? {
            dataset.bytes += std::fs::metadata(&file)?.len();
            dataset.files += 1;
        }
        dataset
    } else {
        eprintln!(
            "generating {} of synthetic Bulk NDJSON in {}",
            args.size,
            data_dir.display()
        );
        let dataset = generate(&args.sample, &data_dir, target, args.seed)?;
        std::fs::write(data_dir.join(".complete"), b"")?;
        dataset
    };
    if args.generate_only {
        println!("{}", dataset.dir.display());
        return Ok(());
    }
    let lake_uri = match &args.lake {
        Some(uri) => uri.clone(),
        None => {
            let dir = args
                .work_dir
                .join(format!("lake-{}", uuid::Uuid::new_v4().simple()));
            dir.display().to_string()
        }
    };
    let lake = LakeArgs {
        lake: lake_uri.clone(),
        storage_options: Vec::new(),
        segregated_lake: None,
        segregated_credentials: None,
    }
    .open()?;
    let started = Instant::now();
    let runtime = runtime()?;
    let inputs = runtime.block_on(discover(
        std::slice::from_ref(&dataset.dir),
        lake.storage_options(),
    ))?;
    let job = Job::new(&lake)
        .with_inputs(inputs)
        .with_views(views_for(args.no_views, None)?)
        .with_policy(policy_for(args.policy.as_deref())?)
        .with_code_checks(args.codes.compile()?)
        .with_validation(args.codes.validation()?);
    let report = runtime.block_on(job.into_future())?;
    let seconds = started.elapsed().as_secs_f64();
    let result = summarize(dataset, &report, seconds);
    if args.lake.is_none() {
        let _ = std::fs::remove_dir_all(&lake_uri);
    }
    print_result(&result, &lake, args.json)
}

/// Where the dataset of `size` and `seed` is generated.
fn data_dir(work_dir: &Path, size: &str, seed: u64) -> PathBuf {
    let mut name = format!("data-{}", size.to_ascii_lowercase());
    if seed != BASE_SEED {
        name.push_str(&format!("-seed{seed}"));
    }
    work_dir.join(name)
}

/// Stamps the files of a generated dataset with the time now. The sample
/// has no `meta.lastUpdated`, so a file's time is its rows' stand-in: a
/// delta stamped after its base makes the rows the two share (round 0,
/// the sample's own) newer versions, as the rows of a nightly delta are.
fn stamp_now(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let now = std::time::SystemTime::now();
    for file in walk_ndjson(dir)? {
        std::fs::File::options()
            .write(true)
            .open(&file)?
            .set_modified(now)?;
    }
    Ok(())
}

/// `--base`: the base lake built (or reused, if no delta touched it since),
/// then the delta loaded into it, each in a child process.
fn run_delta(args: &BenchArgs, base: &str) -> Result<()> {
    if args.seed == BASE_SEED {
        bail!(
            "a delta needs a --seed other than the base's ({BASE_SEED}): with the same seed every row is one the base holds"
        );
    }
    let base_bytes = parse_size(base)?;
    let lake_dir = args
        .work_dir
        .join(format!("lake-base-{}", base.to_ascii_lowercase()));
    let ready = lake_dir.with_extension("ready");
    let mut base_load = None;
    if base_bytes == 0 || !ready.exists() {
        let _ = std::fs::remove_dir_all(&lake_dir);
        std::fs::create_dir_all(&lake_dir)?;
        if base_bytes > 0 {
            eprintln!("building the {base} base lake in {}", lake_dir.display());
            base_load = Some(child_bench(args, base, BASE_SEED, &lake_dir)?);
            std::fs::write(&ready, b"")?;
        }
    }
    // The delta changes the base lake: the next run builds it again.
    let _ = std::fs::remove_file(&ready);
    stamp_now(&data_dir(&args.work_dir, &args.size, args.seed))?;
    let delta = child_bench(args, &args.size, args.seed, &lake_dir)?;
    if args.json {
        let report = serde_json::json!({"base": base, "base_load": base_load, "delta": delta});
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let r = &delta.rows;
    println!(
        "{:.1} MB delta ({} rows) into a lake of the {base} set: {:.2} s, peak RSS {} MB",
        delta.dataset.bytes as f64 / 1e6,
        delta.dataset.lines,
        delta.seconds,
        delta.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
    );
    println!(
        "rows: {} inserted, {} updated, {} unchanged; stored rows rewritten {} ({} files), deletion vectors set on {} files",
        r.inserted, r.updated, r.unchanged, r.rewritten, r.files_rewritten, r.deletion_vectors
    );
    let s = &delta.stages;
    println!(
        "stages (s): read+hash {:.2} | decode {:.2} | flatten {:.2} | parquet write {:.2} | commit {:.2}",
        s.read_hash_s, s.decode_s, s.build_s, s.write_s, s.commit_s
    );
    Ok(())
}

/// Runs `fhirlake bench` for one set into `lake` in a child process.
fn child_bench(args: &BenchArgs, size: &str, seed: u64, lake: &Path) -> Result<BenchResult> {
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .arg("bench")
        .args(["--size", size, "--seed", &seed.to_string(), "--json"])
        .arg("--lake")
        .arg(lake)
        .arg("--work-dir")
        .arg(&args.work_dir)
        .arg("--sample")
        .arg(&args.sample)
        .stderr(std::process::Stdio::inherit());
    if args.no_views {
        command.arg("--no-views");
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!("the {size} load failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout).context("reading the child's figures")
}

fn print_result(result: &BenchResult, lake: &Lake, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
        return Ok(());
    }
    let s = &result.stages;
    println!(
        "loaded {:.1} MB ({} rows, {} files) into {} in {:.2} s: {:.1} MB/s, {:.0} rows/s, peak RSS {} MB, {} threads",
        result.dataset.bytes as f64 / 1e6,
        result.dataset.lines,
        result.dataset.files,
        lake.root(),
        result.seconds,
        result.mb_per_s,
        result.rows_per_s,
        result.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
        result.threads
    );
    println!(
        "stages (s): read+hash {:.2} | decode {:.2} | flatten {:.2} | parquet write {:.2} | commit+merge {:.2}",
        s.read_hash_s, s.decode_s, s.build_s, s.write_s, s.commit_s
    );
    Ok(())
}
