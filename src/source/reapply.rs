//! `fhirlake policy apply`: the rows a lake already holds, as one more
//! source of the one load job, re-evaluated under a new policy.
//!
//! The scan reads every main table and every `_segregated/<table>` (`id`,
//! `meta_last_updated`, `resource`) and decides each row again:
//! - main rows the policy now changes (a label, a redaction) are fed back
//!   and replace their stored version;
//! - main rows it now segregates, denies or quarantines are fed back (the
//!   job stores, counts or quarantines them) and deleted from the main table;
//! - segregated rows (without the tag their rule added) it now keeps are fed
//!   back into the main table and deleted from the segregated one; rows it
//!   denies are deleted; rows it still segregates stay as they are.
//!
//! The fed resources and the deletions are written to the lake
//! (`_fhirlake/policy-apply/<plan>/`) before any commit. The job's type
//! tables commit independently, so a crash between them can leave a moved
//! row in neither table; the plan is what a re-run finishes first (under
//! the same policy version), which converges because every step of it is
//! idempotent: a fed row of the stored version replaces it
//! ([`Job::with_same_version_replacing`]) and a deletion of what is gone
//! deletes nothing. `applied.json` marks a plan done.

use std::collections::{BTreeMap, HashSet};

use bumpalo::Bump;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use deltalake::arrow::array::AsArray;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::fhir::{self, is_segregated_table, segregated_table};
use crate::lake::{Deletion, Lake, LakeError};
use crate::ledger::{ManifestKind, store_err};
use crate::load::{
    Input, Job, LoadError, LoadOptions, LoadReport, ProgressSink, SourceKind, new_job_id,
};
use crate::policy::compartment::Survey;
use crate::policy::{Decision, Policy, Subject, edit, tree};
use crate::view::Json;

/// Where plans are kept, one directory per plan.
pub const PLAN_DIR: &str = "_fhirlake/policy-apply";

/// A row to take out of a table, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedDeletion {
    pub id: String,
    /// The stored row's `meta.lastUpdated` (UTC µs): newer rows stay.
    pub last_updated: i64,
    pub why: String,
}

/// What moves, per direction (for the summary).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moves {
    /// Main rows stored again changed (labelled, redacted).
    pub changed: u64,
    /// Main rows moved to `_segregated`.
    pub segregated: u64,
    /// Rows removed (denied or quarantined now), from either place.
    pub removed: u64,
    /// Segregated rows moved back to the main tables.
    pub restored: u64,
}

/// One re-evaluation, as written to the lake before it is applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub plan_id: String,
    pub created_at: String,
    /// Where the policy came from (`part2`, a file path) and its SHA-256.
    pub policy: String,
    pub policy_version: String,
    /// Rows read from the lake.
    pub rows_scanned: u64,
    /// Rows stored without their source resource (`[tables.T] raw =
    /// false`): nothing left to decide on, so they stay as they are.
    #[serde(default)]
    pub raw_omitted: u64,
    /// Resources in `resources.ndjson`.
    pub resources: u64,
    pub moves: Moves,
    /// Main-table rows to delete, by resource type.
    pub deletions: BTreeMap<String, Vec<PlannedDeletion>>,
    /// Segregated-table rows to delete, by table (`_segregated/<table>`).
    pub segregated_deletions: BTreeMap<String, Vec<PlannedDeletion>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.resources == 0 && self.deletions.is_empty() && self.segregated_deletions.is_empty()
    }

    fn dir(&self) -> String {
        format!("{PLAN_DIR}/{}", self.plan_id)
    }

    fn resources_path(&self) -> String {
        format!("{}/resources.ndjson", self.dir())
    }
}

/// What `apply` did.
#[derive(Debug)]
pub struct Applied {
    pub plan: Plan,
    /// A plan an earlier run left unfinished, finished by this one.
    pub resumed: bool,
    /// `None`: a dry run, or nothing to change.
    pub report: Option<LoadReport>,
}

/// Re-evaluates the lake under `policy` (named `policy_name`) and applies
/// the plan; with `dry_run`, only plans. An unfinished plan is finished
/// first (and alone), under the policy version it was made with.
pub async fn apply(
    lake: &Lake,
    policy: &Policy,
    policy_name: &str,
    options: &LoadOptions,
    dry_run: bool,
    progress: Option<ProgressSink>,
) -> Result<Applied, LoadError> {
    let policy = crate::load::with_lake_consents(lake, policy).await?;
    if let Some((plan, resources)) = pending(lake).await? {
        if plan.policy_version != policy.version() {
            return Err(LoadError::Policy(format!(
                "{}/plan.json: an earlier `policy apply` of policy {} (sha256 {}) did not finish; \
                 run `fhirlake policy apply` with that policy first so no row is left between \
                 tables, then with this one",
                plan.dir(),
                plan.policy,
                plan.policy_version
            )));
        }
        if dry_run {
            return Ok(Applied {
                plan,
                resumed: true,
                report: None,
            });
        }
        let report = run(lake, &plan, resources, &policy, options, progress).await?;
        return Ok(Applied {
            plan,
            resumed: true,
            report: Some(report),
        });
    }
    let plan_id = new_job_id(Utc::now());
    let (plan, resources) = plan(lake, &policy, policy_name, &plan_id).await?;
    if dry_run || plan.is_empty() {
        return Ok(Applied {
            plan,
            resumed: false,
            report: None,
        });
    }
    put_new(lake, &plan.resources_path(), resources.clone()).await?;
    let body = serde_json::to_vec_pretty(&plan).expect("a plan serializes");
    put_new(lake, &format!("{}/plan.json", plan.dir()), body.into()).await?;
    let report = run(lake, &plan, resources, &policy, options, progress).await?;
    Ok(Applied {
        plan,
        resumed: false,
        report: Some(report),
    })
}

/// Runs the plan's one load job, then marks the plan done.
async fn run(
    lake: &Lake,
    plan: &Plan,
    resources: Bytes,
    policy: &Policy,
    options: &LoadOptions,
    progress: Option<ProgressSink>,
) -> Result<LoadReport, LoadError> {
    let source = plan.resources_path();
    let deletions = |planned: &BTreeMap<String, Vec<PlannedDeletion>>| {
        planned
            .iter()
            .map(|(name, list)| {
                let list = list
                    .iter()
                    .map(|d| Deletion {
                        id: d.id.clone(),
                        deleted_at: d.last_updated,
                        record: serde_json::json!({"policy_apply": plan.plan_id, "why": d.why})
                            .to_string(),
                        source: source.clone(),
                        line: 0,
                    })
                    .collect();
                (name.clone(), list)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let main_deletions = deletions(&plan.deletions);
    let segregated_deletions = deletions(&plan.segregated_deletions);
    let mut options = options.clone();
    options.policy = std::sync::Arc::new(policy.clone());
    let report = Job::new(lake)
        .with_options(options)
        .with_kind(ManifestKind::PolicyApply)
        .with_same_version_replacing()
        .without_loaded_markers()
        .with_inputs(vec![Input::memory(source, SourceKind::Files, resources)])
        .with_deletions(main_deletions)
        .with_segregated_deletions(segregated_deletions)
        .with_progress(progress)
        .await?;
    let done = serde_json::json!({
        "job_id": report.manifest.job_id,
        "manifest": report.manifest_path,
    });
    let path = format!("{}/applied.json", plan.dir());
    put(
        lake,
        &path,
        serde_json::to_vec_pretty(&done).expect("json").into(),
    )
    .await?;
    Ok(report)
}

/// Reads the lake and decides every row again.
async fn plan(
    lake: &Lake,
    policy: &Policy,
    policy_name: &str,
    plan_id: &str,
) -> Result<(Plan, Bytes), LoadError> {
    let mut plan = Plan {
        plan_id: plan_id.to_owned(),
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        policy: policy_name.to_owned(),
        policy_version: policy.version().to_owned(),
        rows_scanned: 0,
        raw_omitted: 0,
        resources: 0,
        moves: Moves::default(),
        deletions: BTreeMap::new(),
        segregated_deletions: BTreeMap::new(),
    };
    let policy = &with_encounter_compartments(lake, policy).await?;
    let mut out = String::new();
    let mut arena = Bump::new();
    for table in crate::lake::list_tables(lake).await? {
        if table.starts_with('_') && !is_segregated_table(&table) {
            continue;
        }
        for row in scan(lake, &table).await? {
            arena.reset();
            plan.rows_scanned += 1;
            decide_row(&mut plan, &mut out, policy, &table, &row, &arena)?;
        }
    }
    Ok((plan, Bytes::from(out)))
}

/// `policy` matching also by the compartments of the Encounters it would
/// segregate among those the lake holds, in its main table or segregated.
async fn with_encounter_compartments(lake: &Lake, policy: &Policy) -> Result<Policy, LoadError> {
    let Some(rules) = policy.rule_set().filter(|r| r.has_compartment_rules()) else {
        return Ok(policy.clone());
    };
    let mut survey = Survey::default();
    let mut arena = Bump::new();
    for table in [fhir::table_name("Encounter"), segregated_table("Encounter")] {
        if !lake.has_table(&table).await? {
            continue;
        }
        for row in scan(lake, &table).await? {
            arena.reset();
            crate::load::observe_stored(
                rules,
                &mut survey,
                &row.resource,
                row.last_updated,
                is_segregated_table(&table),
                &arena,
            );
        }
    }
    Ok(policy.with_compartments(std::sync::Arc::new(survey.finish())))
}

/// One stored row.
struct Row {
    id: String,
    last_updated: i64,
    resource: String,
}

/// Adds what `row` of `table` needs under `policy` to the plan.
fn decide_row(
    plan: &mut Plan,
    out: &mut String,
    policy: &Policy,
    table: &str,
    row: &Row,
    arena: &Bump,
) -> Result<(), LoadError> {
    let segregated = is_segregated_table(table);
    let unreadable = |why: String| {
        LoadError::Policy(format!(
            "table {table}, id {}: the stored resource {why}; fix or delete the row, then run \
             `policy apply` again (nothing was changed)",
            row.id
        ))
    };
    let stored = Json::parse(&row.resource, arena).map_err(|e| unreadable(e.to_string()))?;
    if edit::is_raw_omitted(&stored) {
        plan.raw_omitted += 1;
        return Ok(());
    }
    let instant = Utc
        .timestamp_micros(row.last_updated)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let restored = edit::restored(&stored, &instant);
    let text = restored.as_deref().unwrap_or(&row.resource);
    let json = match &restored {
        Some(text) => Json::parse(text, arena).map_err(|e| unreadable(e.to_string()))?,
        None => stored,
    };
    let Some(resource_type) = tree::member(&json, "resourceType").and_then(tree::string) else {
        return Err(unreadable("has no resourceType".into()));
    };
    // A view's own table (not a resource table) is not the policy's.
    let home = if segregated {
        segregated_table(resource_type)
    } else {
        fhir::table_name(resource_type)
    };
    if home != table {
        return Ok(());
    }
    let subject = Subject {
        resource_type,
        id: &row.id,
        last_updated: Some(row.last_updated),
    };
    let decision = policy.decide(&json, &subject);
    let mut feed = |text: &str| {
        out.push_str(text);
        out.push('\n');
        plan.resources += 1;
    };
    let deletion = |why: String| PlannedDeletion {
        id: row.id.clone(),
        last_updated: row.last_updated,
        why,
    };
    match (segregated, decision) {
        (false, Decision::Keep) => {}
        (false, Decision::Change { json: changed, .. }) => {
            if !same_resource(&changed, &row.resource) {
                feed(&changed);
                plan.moves.changed += 1;
            }
        }
        // The job segregates the fed row itself, and takes the main
        // table's row of that version out as every segregating load does.
        (false, Decision::Segregate { .. }) => {
            feed(text);
            plan.moves.segregated += 1;
        }
        (false, Decision::Filter { reason }) => {
            feed(text);
            plan.moves.removed += 1;
            plan.deletions
                .entry(resource_type.to_owned())
                .or_default()
                .push(deletion(format!("denied: {reason}")));
        }
        (false, Decision::Quarantine { code, .. }) => {
            feed(text);
            plan.moves.removed += 1;
            plan.deletions
                .entry(resource_type.to_owned())
                .or_default()
                .push(deletion(format!("quarantined: {code}")));
        }
        // Still segregated, whichever rule matches now (the labels an
        // earlier rule added may make another match first): it stays.
        (true, Decision::Segregate { .. }) => {}
        (true, decision) => {
            let why = match &decision {
                Decision::Filter { reason } => {
                    plan.moves.removed += 1;
                    format!("denied: {reason}")
                }
                Decision::Quarantine { code, .. } => {
                    plan.moves.removed += 1;
                    format!("quarantined: {code}")
                }
                _ => {
                    plan.moves.restored += 1;
                    "no longer segregated".to_owned()
                }
            };
            feed(text);
            plan.segregated_deletions
                .entry(table.to_owned())
                .or_default()
                .push(deletion(why));
        }
    }
    Ok(())
}

/// Whether two JSON texts hold the same resource (compact or not).
fn same_resource(a: &str, b: &str) -> bool {
    a == b
        || serde_json::from_str::<serde_json::Value>(a).ok()
            == serde_json::from_str::<serde_json::Value>(b).ok()
}

/// Every row of a current-mode resource table; tables that are not one
/// (no `resource` column) are skipped, history-mode tables refused.
async fn scan(lake: &Lake, name: &str) -> Result<Vec<Row>, LoadError> {
    let table = crate::lake::open_table(lake, name).await?;
    let has = |column| crate::lake::table_has_column(&table, column);
    if !["id", "meta_last_updated", "resource"].into_iter().all(has) {
        return Ok(Vec::new());
    }
    // Tombstones or two versions of an id: a history-mode table.
    let tombstone = if has(crate::lake::DELETED_COLUMN) {
        format!("{} IS TRUE", crate::lake::DELETED_COLUMN)
    } else {
        "false".to_owned()
    };
    let sql = format!(
        "SELECT id, meta_last_updated, resource, {tombstone} FROM t WHERE resource IS NOT NULL"
    );
    let batches = crate::lake::query(&table, name, &sql).await?;
    let mut rows = Vec::new();
    let mut ids = HashSet::new();
    for batch in batches {
        let arrow_err = |source| LakeError::Arrow {
            table: name.to_owned(),
            source,
        };
        let id = cast(batch.column(0), &DataType::Utf8).map_err(arrow_err)?;
        let at = cast(batch.column(1), &DataType::Int64).map_err(arrow_err)?;
        let resource = cast(batch.column(2), &DataType::Utf8).map_err(arrow_err)?;
        let (id, at, resource) = (
            id.as_string::<i32>(),
            at.as_primitive::<Int64Type>(),
            resource.as_string::<i32>(),
        );
        let tombstone = batch.column(3).as_boolean();
        for i in 0..batch.num_rows() {
            if tombstone.value(i) || !ids.insert(id.value(i).to_owned()) {
                return Err(history_mode(name));
            }
            rows.push(Row {
                id: id.value(i).to_owned(),
                last_updated: at.value(i),
                resource: resource.value(i).to_owned(),
            });
        }
    }
    Ok(rows)
}

fn history_mode(table: &str) -> LoadError {
    LoadError::Policy(format!(
        "table {table} keeps every version (history mode); `policy apply` re-evaluates \
         current-mode lakes only (one row per id). Reload the history lake with --policy instead"
    ))
}

/// The unfinished plan, if any (a `plan.json` without `applied.json`), with
/// its resources.
async fn pending(lake: &Lake) -> Result<Option<(Plan, Bytes)>, LoadError> {
    let objects = lake.list_objects(&lake.path(PLAN_DIR)).await?;
    let names: HashSet<String> = objects.iter().map(|p| p.to_string()).collect();
    let mut plans: Vec<&String> = names
        .iter()
        .filter(|p| p.ends_with("/plan.json"))
        .filter(|p| !names.contains(&p.replace("/plan.json", "/applied.json")))
        .collect();
    plans.sort();
    let Some(path) = plans.first() else {
        return Ok(None);
    };
    let object = lake.path(path);
    let read = |what: &str| {
        LoadError::Policy(format!(
            "{path}: {what}; an unfinished `policy apply` left it; restore it from a backup \
             or remove its directory after checking the tables by hand"
        ))
    };
    let body = lake
        .read_object(&object)
        .await?
        .ok_or_else(|| read("gone while reading it"))?;
    let plan: Plan = serde_json::from_slice(&body).map_err(|e| read(&e.to_string()))?;
    let resources = lake
        .read_object(&lake.path(&plan.resources_path()))
        .await?
        .ok_or_else(|| read("its resources.ndjson is missing"))?;
    Ok(Some((plan, resources)))
}

/// Writes a new object (put-if-absent: plans are never rewritten).
async fn put_new(lake: &Lake, relative: &str, body: Bytes) -> Result<(), LoadError> {
    let path = lake.path(relative);
    crate::ledger::put_new(lake, &path, PutPayload::from(body))
        .await
        .map_err(store_err(&path))?;
    Ok(())
}

async fn put(lake: &Lake, relative: &str, body: Bytes) -> Result<(), LoadError> {
    let path = lake.path(relative);
    lake.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(store_err(&path))?;
    Ok(())
}
