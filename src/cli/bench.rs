//! `fhirlake bench`: generate the synthetic set (or reuse it), load it into
//! a fresh lake, print the figures.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::{LakeArgs, runtime, views_for};
use crate::bench::{BenchResult, Dataset, generate, parse_size, summarize, walk_ndjson};
use crate::lake::Lake;
use crate::load::Job;
use crate::source::discover;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Size of the synthetic dataset: 200MB, 1GB, 4GB (decimal units).
    #[arg(long, default_value = "1GB")]
    pub size: String,
    /// Lake to load into (default: a fresh directory under --work-dir). Must be empty.
    #[arg(long)]
    pub lake: Option<String>,
    /// Where the dataset is generated (kept, and reused when it already has the size).
    #[arg(long, default_value = "target/fhirlake-bench")]
    pub work_dir: PathBuf,
    /// Sample NDJSON directories to replicate.
    #[arg(long, default_value = "data/bulk")]
    pub sample: PathBuf,
    #[arg(long, default_value_t = 20261126)]
    pub seed: u64,
    /// Only generate the dataset and print its directory.
    #[arg(long)]
    pub generate_only: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Load without view columns (to measure what the views cost).
    #[arg(long)]
    pub no_views: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let target = parse_size(&args.size)?;
    let data_dir = args
        .work_dir
        .join(format!("data-{}", args.size.to_ascii_lowercase()));
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
        .with_views(views_for(args.no_views, None)?);
    let report = runtime.block_on(job.into_future())?;
    let seconds = started.elapsed().as_secs_f64();
    let result = summarize(dataset, &report, seconds);
    if args.lake.is_none() {
        let _ = std::fs::remove_dir_all(&lake_uri);
    }
    print_result(&result, &lake, args.json)
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
