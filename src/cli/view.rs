//! `fhirlake view run`: flags → a compiled view, an input and an output;
//! the runner is [`crate::view::runner`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::load::{Input, SourceKind};
use crate::view::CompiledView;
use crate::view::runner::{self, Output};

#[derive(Debug, Subcommand)]
pub enum ViewCommand {
    /// Run a ViewDefinition over NDJSON, a Bundle or one resource, print its rows.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// ViewDefinition JSON file.
    #[arg(long)]
    view: PathBuf,
    /// Resources: NDJSON (one per line), a Bundle, or a single resource.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, value_enum, default_value = "ndjson")]
    format: Format,
    /// Write here instead of stdout (required for parquet).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(command: ViewCommand) -> Result<()> {
    let ViewCommand::Run(args) = command;
    let view_text = std::fs::read_to_string(&args.view)
        .with_context(|| format!("reading view {}", args.view.display()))?;
    let view =
        CompiledView::parse(&view_text).with_context(|| format!("view {}", args.view.display()))?;
    let create = |path: &PathBuf| {
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
    };
    let mut output = match (args.format, &args.out) {
        (Format::Parquet, None) => bail!("--format parquet needs --out FILE"),
        (Format::Parquet, Some(out)) => Output::parquet(create(out)?, &view)?,
        (format, out) => {
            let sink: Box<dyn Write + Send> = match out {
                Some(path) => Box::new(std::io::BufWriter::new(create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            Output::text(sink, matches!(format, Format::Csv), &view)?
        }
    };
    let input_name = args.input.display().to_string();
    let input = Input::local(args.input.clone(), SourceKind::Files)
        .with_context(|| format!("reading input {input_name}"))?;
    let ran = runner::run(&view, &input, &mut output).and_then(|()| output.finish());
    match ran {
        // `fhirlake view run ... | head` closes the pipe early: not an error.
        Err(e) if e.is_broken_pipe() => Ok(()),
        other => other.with_context(|| format!("input {input_name}")),
    }
}
