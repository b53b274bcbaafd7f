//! What an export asks for and how it runs (resume, parallelism, raw files),
//! and what it reports.

use std::path::PathBuf;

use url::Url;

use super::job::{JobState, Scope};
use super::kickoff::KickoffMethod;
use super::status::PollPolicy;
use crate::load::{LoadOptions, LoadReport};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    None,
    /// The transactionTime of the last finished export of the same request.
    Auto,
    At(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Resume an open job for the same request if there is one, else start.
    Auto,
    /// Fail unless there is an open job to resume.
    Require,
    /// Always kick off a new job.
    Fresh,
}

pub struct ExportPlan {
    pub server: Url,
    pub scope: Scope,
    /// Kick-off parameters other than `_since`.
    pub params: Vec<(String, String)>,
    pub since: Since,
    pub method: KickoffMethod,
    pub parallel: usize,
    pub keep_raw: bool,
    /// Parent of the job's raw folder (`<lake>/_raw` for a local lake; a
    /// local staging folder for a remote one: the CLI picks it).
    pub raw_dir: PathBuf,
    pub poll: PollPolicy,
    pub keep_server_job: bool,
    pub resume: Resume,
    /// Mode, views and policy of the load.
    pub load: LoadOptions,
}

#[derive(Debug)]
pub struct ExportReport {
    pub job: JobState,
    pub load: Option<LoadReport>,
    pub resumed: bool,
    pub warnings: Vec<String>,
}
