//! A progress bar on stderr, only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::load::{Progress, ProgressSink};

pub struct Display {
    bar: Option<ProgressBar>,
}

impl Display {
    pub fn for_stderr() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                    .expect("valid template"),
            );
            bar
        });
        Self { bar }
    }

    pub fn sink(&self) -> Option<ProgressSink> {
        let bar = self.bar.clone()?;
        Some(Arc::new(move |event| match event {
            Progress::Started { bytes, .. } => bar.set_length(bytes),
            Progress::File { name } => bar.set_message(
                name.rsplit(['/', '\\'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Progress::Bytes(n) => bar.inc(n),
            Progress::Committing => bar.set_message("committing"),
        }))
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
