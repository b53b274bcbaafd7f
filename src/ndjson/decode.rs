//! Parsing one chunk's lines into resource keys or reject reasons.

use simd_json::prelude::*;
use simd_json::tape::{Node, Tape};

use std::borrow::Cow;
use std::sync::Arc;

use bumpalo::Bump;
use deltalake::arrow::array::{ArrayRef, StringBuilder};

use super::Chunk;
use crate::code_checks::{ChunkChecker, ChunkCodes, CodeChecks};
use crate::fhir;
use crate::policy::edit::SUBSETTED_TAG as SUBSETTED;
use crate::policy::{Decision, Policy, Subject};
use crate::validation::{Finding, LineVerdict, OnInvalid, Validation, broken_profiles};
use crate::view::{CompiledView, Json, ViewArrays, ViewBuilder, ViewSet};

/// What the load path needs of a resource line before any view runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKeys {
    pub resource_type: Box<str>,
    pub id: Box<str>,
    /// `meta.lastUpdated` as UTC microseconds; `None` when the resource has none.
    pub last_updated: Option<i64>,
    pub version_id: Option<Box<str>>,
    /// Tagged `SUBSETTED` (an `_elements`/`_summary` answer): not the whole resource.
    pub subsetted: bool,
    /// Changed or segregated by the policy stage.
    pub policy: Option<PolicyMark>,
    /// Problems the code checks found; `None` when they did not run.
    pub code_issues: Option<u32>,
    /// The profile validation's verdict; `None` when it did not run.
    pub validation: Option<LineVerdict>,
}

/// What the policy stage did to a resource it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMark {
    /// The rule(s) that changed it, or the one that segregated it.
    pub by: Arc<str>,
    /// Goes to `_segregated/<table>`, not the main table.
    pub segregated: bool,
}

/// Why a line cannot be loaded. Each reason says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("not valid JSON ({detail}); fix or re-export the line")]
    InvalidJson { detail: String },
    #[error(
        "not UTF-8 (first bad byte at byte {at} of the line); FHIR JSON must be UTF-8: convert \
         the file (e.g. iconv -f latin1 -t utf-8) or re-export it"
    )]
    NotUtf8 { at: usize },
    #[error("the line is JSON but not an object; each NDJSON line must be one FHIR resource")]
    NotAnObject,
    #[error("no string \"resourceType\"; each line must be one FHIR resource")]
    MissingResourceType,
    #[error("\"resourceType\" {found:?} is not a FHIR resource type name")]
    InvalidResourceType { found: String },
    #[error("no string \"id\"; Bulk Data resources must carry their server id")]
    MissingId,
    #[error(
        "id {found} is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .); fix the resource or the export"
    )]
    InvalidId { found: String },
    #[error(
        "the member name {member:?} appears twice in one object; FHIR JSON forbids duplicate \
         names (readers disagree on which one holds), fix or re-export the line"
    )]
    DuplicateKey { member: String },
    #[error(
        "resourceType {found:?} in a file named for {expected:?}; the file mixes types or is misnamed"
    )]
    TypeMismatch { expected: String, found: String },
    #[error("meta.lastUpdated {value:?} is not a FHIR instant (e.g. 2024-01-31T12:00:00Z)")]
    BadLastUpdated { value: String },
    #[error("view {view:?} on {resource_type}/{id}: {message}")]
    View {
        view: String,
        resource_type: String,
        id: String,
        message: String,
    },
    #[error("policy on {resource_type}/{id}: {reason}")]
    Policy {
        code: &'static str,
        resource_type: String,
        id: String,
        reason: String,
    },
    #[error(
        "{resource_type}/{id} does not conform to {}: {findings}; fix the resource at \
         its source, or load it flagged (--on-invalid flag)",
        profiles.join(", ")
    )]
    Invalid {
        resource_type: String,
        id: String,
        /// The profiles it breaks.
        profiles: Vec<String>,
        /// Every finding, `path: message`, joined by `; `.
        findings: String,
    },
}

impl RejectReason {
    /// Stable machine-readable code, stored in the quarantine table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotAnObject => "not_an_object",
            Self::MissingResourceType => "missing_resource_type",
            Self::InvalidResourceType { .. } => "invalid_resource_type",
            Self::MissingId => "missing_id",
            Self::InvalidId { .. } => "invalid_id",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::TypeMismatch { .. } => "type_mismatch",
            Self::BadLastUpdated { .. } => "bad_last_updated",
            Self::View { .. } => "view_error",
            Self::Policy { code, .. } => code,
            Self::Invalid { .. } => "invalid_profile",
        }
    }

    /// The resource type and id, when the line was a resource.
    pub fn resource(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::TypeMismatch { found, .. } => (Some(found), None),
            Self::View {
                resource_type, id, ..
            }
            | Self::Policy {
                resource_type, id, ..
            }
            | Self::Invalid {
                resource_type, id, ..
            } => (Some(resource_type), Some(id)),
            _ => (None, None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// Empty or whitespace only: not a record, not an error.
    Blank,
    Resource(ResourceKeys),
    Rejected(RejectReason),
    /// A resource the policy stage filtered out, with its reason.
    Filtered(ResourceKeys, Cow<'static, str>),
}

/// One line of a chunk: where it is and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedLine {
    /// 1-based line number in the input.
    pub line: u64,
    /// Byte offset of the line's first byte in the input.
    pub offset: u64,
    /// The line's bytes within `Chunk::data`, without `\n` or a trailing `\r`.
    pub start: usize,
    pub end: usize,
    pub kind: LineKind,
    /// The row of the type's view, when the type has one and it produced a row.
    pub view_row: Option<ViewRows>,
    /// Rows of the type's own-table views, in `ViewSet::extras_for` order.
    pub extra_rows: Vec<ViewRows>,
}

/// Rows `start..start + len` of the chunk's view columns in `slot`: where a
/// line's view rows are. Views are evaluated on the decode threads straight
/// into Arrow builders, one set per view per chunk; the loader picks rows
/// from them by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewRows {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
}

/// A decoded chunk: its lines, and the columns they point into.
#[derive(Debug)]
pub struct DecodedChunk {
    pub lines: Vec<DecodedLine>,
    pub views: Vec<ViewArrays>,
    /// One column: row `i` is line `i`'s text when it is a resource ("" for
    /// other lines). Copied while the decoder has the line in cache and
    /// knows it is UTF-8; batches of whole chunks then slice it, no copy.
    pub resources: ViewArrays,
    /// What the code checks found in the chunk (when they ran).
    pub codes: Option<Box<ChunkCodes>>,
}

impl DecodedChunk {
    /// Shifts line numbers by `first_line`: for a chunk decoded before its
    /// place in the input was known (its `first_line` was 0).
    pub fn number_from(&mut self, first_line: u64) {
        for line in &mut self.lines {
            line.line += first_line;
        }
    }
}

/// A policy that produced JSON that does not parse: quarantined, never kept.
fn policy_bug<'b>(
    keys: ResourceKeys,
    error: crate::view::json::JsonError,
) -> (Decoded, Option<Cow<'b, str>>) {
    let reason = RejectReason::Policy {
        code: "policy_error",
        resource_type: keys.resource_type.to_string(),
        id: keys.id.to_string(),
        reason: format!("the policy produced invalid JSON ({error}); this is a fhirlake bug"),
    };
    ((LineKind::Rejected(reason), None, Vec::new()), None)
}

/// Decodes chunks; holds one thread's reusable parse buffers (simd-json
/// parses in place, so each line is copied into a scratch buffer first).
pub struct ChunkDecoder {
    buffers: simd_json::Buffers,
    scratch: Vec<u8>,
    tape: Option<Tape<'static>>,
    views: Arc<ViewSet>,
    policy: Arc<Policy>,
    /// The job's code checks (`None`: off).
    codes: Option<Arc<CodeChecks>>,
    /// The job's profile validation (`None`: off).
    validation: Option<Arc<Validation>>,
    /// Holds each line's view tree; reset per line.
    arena: Bump,
    /// This chunk's view columns, one builder per view met so far.
    builders: Vec<(Arc<CompiledView>, ViewBuilder)>,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        Self::with_views(Arc::new(ViewSet::none()))
    }
}

impl ChunkDecoder {
    /// A decoder that also evaluates each type's view on its lines.
    pub fn with_views(views: Arc<ViewSet>) -> Self {
        Self {
            buffers: simd_json::Buffers::new(64 * 1024),
            scratch: Vec::with_capacity(64 * 1024),
            tape: Some(Tape::null().reset()),
            views,
            policy: Arc::new(Policy::none()),
            codes: None,
            validation: None,
            arena: Bump::new(),
            builders: Vec::new(),
        }
    }

    /// Passes every resource through `policy` before its views run.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// Checks the codes of every resource it keeps, after the policy.
    pub fn with_code_checks(mut self, codes: Option<Arc<CodeChecks>>) -> Self {
        self.codes = codes;
        self
    }

    /// Validates every resource it keeps against its profile, last (on
    /// the resource as stored, mapped codings included).
    pub fn with_validation(mut self, validation: Option<Arc<Validation>>) -> Self {
        self.validation = validation;
        self
    }

    /// Decodes every line of `chunk`. `expected_type` is the type the file's
    /// name promises, if any; lines of another type are rejected.
    pub fn decode(&mut self, chunk: &Chunk, expected_type: Option<&str>) -> DecodedChunk {
        let data = &chunk.data;
        let mut out = Vec::with_capacity(data.len() / 512 + 1);
        let mut resources = StringBuilder::with_capacity(data.len() / 512 + 1, data.len());
        let mut start = 0;
        let mut line = chunk.first_line;
        let codes = self.codes.clone();
        let mut checker = codes.as_deref().map(CodeChecks::checker);
        while start < data.len() {
            let newline = memchr::memchr(b'\n', &data[start..]).map(|p| start + p);
            let stop = newline.unwrap_or(data.len());
            let mut end = stop;
            if end > start && data[end - 1] == b'\r' {
                end -= 1;
            }
            let bytes = &data[start..end];
            let ((kind, view_row, extra_rows), text) = if bytes.iter().all(u8::is_ascii_whitespace)
            {
                ((LineKind::Blank, None, Vec::new()), None)
            } else {
                if let Some(checker) = checker.as_mut() {
                    checker.at_line(out.len());
                }
                self.decode_line(bytes, expected_type, checker.as_mut())
            };
            if let LineKind::Resource(_) = kind {
                // The parser validated the bytes as UTF-8 (simd-json does as it parses).
                match text {
                    Some(text) => resources.append_value(text),
                    None => resources
                        .append_value(std::str::from_utf8(bytes).expect("parsed JSON is UTF-8")),
                }
            } else {
                resources.append_value("");
            }
            out.push(DecodedLine {
                line,
                offset: chunk.first_offset + start as u64,
                start,
                end,
                kind,
                view_row,
                extra_rows,
            });
            line += 1;
            start = stop + 1;
        }
        if let Some(checker) = checker.as_mut() {
            // Codes the terminology server had not answered yet: asked now,
            // before the chunk's lines leave the decoder.
            for (slot, problems) in checker.resolve_pending() {
                if let LineKind::Resource(keys) = &mut out[slot].kind
                    && let Some(issues) = keys.code_issues.as_mut()
                {
                    *issues = issues.saturating_add(problems);
                }
            }
        }
        let views = self
            .builders
            .drain(..)
            .map(|(_, mut builder)| ViewArrays::from(builder.finish()))
            .collect();
        let resources = ViewArrays::from(vec![Arc::new(resources.finish()) as ArrayRef]);
        DecodedChunk {
            lines: out,
            views,
            resources,
            codes: checker.map(|c| Box::new(c.finish())),
        }
    }

    /// Decodes one line; also returns its text when the parse validated it
    /// (or the text the policy changed it to).
    fn decode_line<'b>(
        &mut self,
        bytes: &'b [u8],
        expected_type: Option<&str>,
        checker: Option<&mut ChunkChecker<'_>>,
    ) -> (Decoded, Option<Cow<'b, str>>) {
        self.arena.reset();
        // A policy, code checks, or a file promising a type with views: one
        // parse (the tree) serves the keys, the policy, the checks and the views.
        if !self.policy.is_empty()
            || checker.is_some()
            || self.validation.is_some()
            || expected_type.is_some_and(|t| self.views.has_views_for(t))
        {
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    let kind = LineKind::Rejected(RejectReason::NotUtf8 {
                        at: e.valid_up_to(),
                    });
                    return ((kind, None, Vec::new()), None);
                }
            };
            let json = match Json::parse(text, &self.arena) {
                Ok(json) => json,
                Err(e) => {
                    let reason = match e.duplicate {
                        Some(member) => RejectReason::DuplicateKey {
                            member: member.into(),
                        },
                        None => RejectReason::InvalidJson {
                            detail: e.to_string(),
                        },
                    };
                    return ((LineKind::Rejected(reason), None, Vec::new()), None);
                }
            };
            let kind = keys_from_json(&json, expected_type);
            let LineKind::Resource(keys) = kind else {
                return ((kind, None, Vec::new()), None);
            };
            let subject = Subject {
                resource_type: &keys.resource_type,
                id: &keys.id,
                last_updated: keys.last_updated,
            };
            // Minimum necessary: the views are computed from the resource,
            // the main table keeps only its keys and meta.
            let omit_raw = self.policy.omits_raw(&keys.resource_type);
            return match self.policy.decide(&json, &subject) {
                Decision::Keep => {
                    let (decoded, changed) = check_and_view(
                        keys,
                        &json,
                        &self.arena,
                        &self.views,
                        &mut self.builders,
                        Checks {
                            codes: checker,
                            validation: self.validation.as_deref(),
                        },
                    );
                    let stored = match omit_raw {
                        true => Cow::Owned(crate::policy::edit::without_raw(&json)),
                        false => changed.map_or(Cow::Borrowed(text), Cow::Owned),
                    };
                    (decoded, Some(stored))
                }
                Decision::Change { json: changed, by } => {
                    match Json::parse(&changed, &self.arena) {
                        Ok(json) => {
                            let keys = ResourceKeys {
                                policy: Some(PolicyMark {
                                    by,
                                    segregated: false,
                                }),
                                ..keys
                            };
                            let (decoded, checked) = check_and_view(
                                keys,
                                &json,
                                &self.arena,
                                &self.views,
                                &mut self.builders,
                                Checks {
                                    codes: checker,
                                    validation: self.validation.as_deref(),
                                },
                            );
                            let stored = match omit_raw {
                                true => crate::policy::edit::without_raw(&json),
                                false => checked.unwrap_or(changed),
                            };
                            (decoded, Some(Cow::Owned(stored)))
                        }
                        Err(e) => policy_bug(keys, e),
                    }
                }
                // Segregated rows keep the resource only: no view columns.
                Decision::Segregate { json: changed, by } => {
                    match Json::parse(&changed, &self.arena) {
                        Ok(_) => {
                            let keys = ResourceKeys {
                                policy: Some(PolicyMark {
                                    by,
                                    segregated: true,
                                }),
                                ..keys
                            };
                            let kind = LineKind::Resource(keys);
                            ((kind, None, Vec::new()), Some(Cow::Owned(changed)))
                        }
                        Err(e) => policy_bug(keys, e),
                    }
                }
                Decision::Filter { reason } => {
                    ((LineKind::Filtered(keys, reason), None, Vec::new()), None)
                }
                Decision::Quarantine { code, reason } => {
                    let reason = RejectReason::Policy {
                        code,
                        resource_type: keys.resource_type.to_string(),
                        id: keys.id.to_string(),
                        reason,
                    };
                    ((LineKind::Rejected(reason), None, Vec::new()), None)
                }
            };
        }
        let kind = self.decode_with_tape(bytes, expected_type);
        // Mixed-type files learn the type only now: parse again for its views.
        let has_views = matches!(&kind, LineKind::Resource(keys) if self.views.has_views_for(&keys.resource_type));
        let text = has_views.then(|| std::str::from_utf8(bytes).ok()).flatten();
        match text.and_then(|t| Json::parse(t, &self.arena).ok()) {
            Some(json) => (
                apply_views(kind, &self.views, &json, &mut self.builders),
                text.map(Cow::Borrowed),
            ),
            None => ((kind, None, Vec::new()), text.map(Cow::Borrowed)),
        }
    }

    fn decode_with_tape(&mut self, bytes: &[u8], expected_type: Option<&str>) -> LineKind {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(bytes);
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(|| Tape::null().reset())
            .reset();
        let kind = match simd_json::fill_tape(&mut scratch, &mut self.buffers, &mut tape) {
            Ok(()) => match first_duplicate_name(&tape.0) {
                Some(member) => LineKind::Rejected(RejectReason::DuplicateKey {
                    member: member.to_owned(),
                }),
                None => keys_from_tape(&tape, expected_type),
            },
            // Only a failed line is checked for UTF-8 apart: the parse checked the rest.
            Err(e) => LineKind::Rejected(match std::str::from_utf8(bytes) {
                Err(utf8) => RejectReason::NotUtf8 {
                    at: utf8.valid_up_to(),
                },
                Ok(_) => RejectReason::InvalidJson {
                    detail: e.to_string(),
                },
            }),
        };
        self.tape = Some(tape.reset());
        self.scratch = scratch;
        kind
    }
}

/// What a line decodes to: its kind, its type-table view row, its own-table view rows.
type Decoded = (LineKind, Option<ViewRows>, Vec<ViewRows>);

/// What a kept resource is checked by before its views run (each: `None` when off).
struct Checks<'a, 'c> {
    codes: Option<&'a mut ChunkChecker<'c>>,
    validation: Option<&'a Validation>,
}

/// Code checks (when on), then profile validation (when on), then views,
/// on a resource the policy keeps; also returns the resource's new text
/// when a concept map added codings (validation and views see them).
fn check_and_view(
    mut keys: ResourceKeys,
    json: &Json<'_>,
    arena: &Bump,
    views: &ViewSet,
    builders: &mut Vec<(Arc<CompiledView>, ViewBuilder)>,
    checks: Checks<'_, '_>,
) -> (Decoded, Option<String>) {
    let mut changed = None;
    if let Some(checker) = checks.codes {
        let checked = checker.check(json, arena, &keys.resource_type, &keys.id);
        keys.code_issues = Some(checked.issues);
        changed = checked.changed;
    }
    let reparsed;
    let json = match &changed {
        Some(text) => {
            reparsed = Json::parse(text, arena)
                // Written from a parsed tree: cannot fail to parse.
                .unwrap_or_else(|e| {
                    unreachable!("fhirlake wrote invalid JSON adding codings: {e}")
                });
            &reparsed
        }
        None => json,
    };
    if let Some(validation) = checks.validation {
        let verdict = validation.judge(json);
        if let LineVerdict::Invalid(findings) = &verdict {
            match validation.on_invalid {
                OnInvalid::Flag => {}
                OnInvalid::Quarantine => {
                    let reason = invalid(&keys, findings);
                    return ((LineKind::Rejected(reason), None, Vec::new()), changed);
                }
                // Like the policy's segregation: the resource only, no view rows.
                OnInvalid::Segregate => {
                    keys.policy = Some(PolicyMark {
                        by: format!("validation: {}", findings[0].profile).into(),
                        segregated: true,
                    });
                    keys.validation = Some(verdict);
                    return ((LineKind::Resource(keys), None, Vec::new()), changed);
                }
            }
        }
        keys.validation = Some(verdict);
    }
    (
        apply_views(LineKind::Resource(keys), views, json, builders),
        changed,
    )
}

/// The quarantine reason of a resource that breaks its profile.
fn invalid(keys: &ResourceKeys, findings: &[Finding]) -> RejectReason {
    RejectReason::Invalid {
        resource_type: keys.resource_type.to_string(),
        id: keys.id.to_string(),
        profiles: broken_profiles(findings)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        findings: findings
            .iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Runs `view` on `json`, appending its rows to the view's builder for this
/// chunk; says where they went.
fn append_rows(
    builders: &mut Vec<(Arc<CompiledView>, ViewBuilder)>,
    view: &Arc<CompiledView>,
    json: &Json<'_>,
) -> Result<ViewRows, crate::view::ViewError> {
    let found = builders.iter().position(|(v, _)| Arc::ptr_eq(v, view));
    let slot = found.unwrap_or_else(|| {
        builders.push((view.clone(), ViewBuilder::new(view)));
        builders.len() - 1
    });
    let builder = &mut builders[slot].1;
    let start = builder.len();
    let len = view.append_to(json, builder)?;
    Ok(ViewRows { slot, start, len })
}

/// Runs the type's views. A type-table view gives at most one row per
/// resource: zero rows (a `where` filtered it) leave its columns null.
/// Own-table views give any number. Any error, or extra rows from a
/// type-table view, quarantines the line, naming the view. (Rows already
/// appended for a line that is then rejected are never picked.)
fn apply_views(
    kind: LineKind,
    views: &ViewSet,
    json: &Json,
    builders: &mut Vec<(Arc<CompiledView>, ViewBuilder)>,
) -> Decoded {
    let LineKind::Resource(keys) = kind else {
        return (kind, None, Vec::new());
    };
    let reject = |view: &CompiledView, message: String| {
        LineKind::Rejected(RejectReason::View {
            view: view.name.clone().unwrap_or_else(|| view.resource.clone()),
            resource_type: keys.resource_type.to_string(),
            id: keys.id.to_string(),
            message,
        })
    };
    let mut view_row = None;
    if let Some(view) = views.for_type(&keys.resource_type) {
        match append_rows(builders, view, json) {
            Err(e) => return (reject(view, e.to_string()), None, Vec::new()),
            Ok(rows) if rows.len == 0 => {}
            Ok(rows) if rows.len == 1 => view_row = Some(rows),
            Ok(rows) => {
                let message = format!(
                    "gave {} rows; a table's view must give at most one row per resource (use .first() or collection: true)",
                    rows.len
                );
                return (reject(view, message), None, Vec::new());
            }
        }
    }
    let mut extra_rows = Vec::new();
    for (_, view) in views.extras_for(&keys.resource_type) {
        match append_rows(builders, view, json) {
            Ok(rows) => extra_rows.push(rows),
            Err(e) => return (reject(view, e.to_string()), None, Vec::new()),
        }
    }
    (LineKind::Resource(keys), view_row, extra_rows)
}

/// How `meta.lastUpdated` looked in the document.
enum LastUpdated<'a> {
    Absent,
    Text(&'a str),
    NotText(String),
}

/// The checks every line passes, whichever parser read it.
/// What each parser found of the members the loader reads.
struct Found<'a> {
    resource_type: Option<&'a str>,
    id: Option<&'a str>,
    last_updated: LastUpdated<'a>,
    version_id: Option<&'a str>,
    subsetted: bool,
}

fn make_keys(found: Found<'_>, expected_type: Option<&str>) -> LineKind {
    let Found {
        resource_type,
        id,
        last_updated,
        version_id,
        subsetted,
    } = found;
    let Some(resource_type) = resource_type else {
        return LineKind::Rejected(RejectReason::MissingResourceType);
    };
    if !fhir::is_valid_resource_type(resource_type) {
        return LineKind::Rejected(RejectReason::InvalidResourceType {
            found: resource_type.to_owned(),
        });
    }
    if let Some(expected) = expected_type
        && expected != resource_type
    {
        return LineKind::Rejected(RejectReason::TypeMismatch {
            expected: expected.to_owned(),
            found: resource_type.to_owned(),
        });
    }
    let id = match id {
        Some(id) if !id.is_empty() => id,
        _ => return LineKind::Rejected(RejectReason::MissingId),
    };
    if !fhir::is_valid_id(id) {
        // Shown escaped and cut: an id that is not one may be anything.
        let mut found: String = format!("{id:?}").chars().take(80).collect();
        if found.len() < format!("{id:?}").len() {
            found.push('…');
        }
        return LineKind::Rejected(RejectReason::InvalidId { found });
    }
    let last_updated = match last_updated {
        LastUpdated::Absent => None,
        LastUpdated::Text(text) => match fhir::parse_instant_micros(text) {
            Some(micros) => Some(micros),
            None => {
                return LineKind::Rejected(RejectReason::BadLastUpdated {
                    value: text.to_owned(),
                });
            }
        },
        LastUpdated::NotText(kind) => {
            return LineKind::Rejected(RejectReason::BadLastUpdated { value: kind });
        }
    };
    LineKind::Resource(ResourceKeys {
        resource_type: resource_type.into(),
        id: id.into(),
        last_updated,
        version_id: version_id.map(Box::from),
        subsetted,
        policy: None,
        code_issues: None,
        validation: None,
    })
}

/// The first member name that appears twice in one object, anywhere in the
/// tape. Each object's keys are compared once; values are skipped by their
/// node counts, so the walk visits every node once.
fn first_duplicate_name<'t>(nodes: &[Node<'t>]) -> Option<&'t str> {
    let mut keys: smallvec::SmallVec<[&str; 16]> = smallvec::SmallVec::new();
    for (at, node) in nodes.iter().enumerate() {
        let Node::Object { len, .. } = *node else {
            continue;
        };
        if len < 2 {
            continue;
        }
        keys.clear();
        let mut member = at + 1;
        for _ in 0..len {
            let Some(Node::String(key)) = nodes.get(member) else {
                return None;
            };
            keys.push(key);
            member += 1 + nodes.get(member + 1).map_or(1, node_count);
        }
        if let Some(key) = crate::view::json::duplicate_name(&mut keys) {
            return Some(key);
        }
    }
    None
}

/// Nodes a tape value spans, itself included.
fn node_count(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

fn keys_from_json(root: &Json, expected_type: Option<&str>) -> LineKind {
    if !matches!(root, Json::Object(_)) {
        return LineKind::Rejected(RejectReason::NotAnObject);
    }
    let meta = root.get("meta");
    let last_updated = match meta.and_then(|m| m.get("lastUpdated")) {
        None => LastUpdated::Absent,
        Some(Json::String(s)) => LastUpdated::Text(s),
        Some(other) => LastUpdated::NotText(other.to_string()),
    };
    let subsetted = is_tagged_subsetted(root);
    let found = Found {
        resource_type: root.get("resourceType").and_then(Json::as_str),
        id: root.get("id").and_then(Json::as_str),
        last_updated,
        version_id: meta.and_then(|m| m.get("versionId")).and_then(Json::as_str),
        subsetted,
    };
    make_keys(found, expected_type)
}

/// Whether `meta.tag` holds `SUBSETTED`.
fn is_tagged_subsetted(root: &Json<'_>) -> bool {
    match root.get("meta").and_then(|m| m.get("tag")) {
        Some(Json::Array(tags)) => tags.iter().any(|tag| {
            tag.get("system").and_then(Json::as_str) == Some(SUBSETTED.0)
                && tag.get("code").and_then(Json::as_str) == Some(SUBSETTED.1)
        }),
        _ => false,
    }
}

fn keys_from_tape(tape: &Tape<'_>, expected_type: Option<&str>) -> LineKind {
    let root = tape.as_value();
    if !root.is_object() {
        return LineKind::Rejected(RejectReason::NotAnObject);
    }
    // Tape values are views: keep each one bound while its &str is in use.
    let type_value = root.get("resourceType");
    let id_value = root.get("id");
    let meta = root.get("meta");
    let updated_value = meta.as_ref().and_then(|m| m.get("lastUpdated"));
    let version_value = meta.as_ref().and_then(|m| m.get("versionId"));
    let last_updated = match &updated_value {
        None => LastUpdated::Absent,
        Some(v) => match v.as_str() {
            Some(text) => LastUpdated::Text(text),
            None => LastUpdated::NotText(format!("{:?}", v.value_type())),
        },
    };
    let tags = meta.as_ref().and_then(|m| m.get("tag"));
    let subsetted = tags
        .as_ref()
        .and_then(|t| t.as_array())
        .is_some_and(|tags| {
            tags.iter().any(|tag| {
                let system = tag.get("system");
                let code = tag.get("code");
                system.as_ref().and_then(|v| v.as_str()) == Some(SUBSETTED.0)
                    && code.as_ref().and_then(|v| v.as_str()) == Some(SUBSETTED.1)
            })
        });
    let found = Found {
        resource_type: type_value.as_ref().and_then(|v| v.as_str()),
        id: id_value.as_ref().and_then(|v| v.as_str()),
        last_updated,
        version_id: version_value.as_ref().and_then(|v| v.as_str()),
        subsetted,
    };
    make_keys(found, expected_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(line: &str, expected: Option<&str>) -> LineKind {
        let chunk = Chunk {
            data: line.as_bytes().to_vec(),
            first_line: 7,
            first_offset: 100,
        };
        let mut lines = ChunkDecoder::default().decode(&chunk, expected).lines;
        assert_eq!(lines.len(), 1);
        lines.remove(0).kind
    }

    #[test]
    fn extracts_keys() {
        let kind = decode_one(
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2024-01-01T00:00:00Z"}}"#,
            Some("Patient"),
        );
        assert_eq!(
            kind,
            LineKind::Resource(ResourceKeys {
                resource_type: "Patient".into(),
                id: "p1".into(),
                last_updated: Some(1_704_067_200_000_000),
                version_id: Some("3".into()),
                subsetted: false,
                policy: None,
                code_issues: None,
                validation: None,
            })
        );
    }

    #[test]
    fn rejects_with_reasons() {
        let cases = [
            (r#"{"resourceType":"Patient","id":"p1""#, "invalid_json"),
            (r#"[1,2]"#, "not_an_object"),
            (r#"{"id":"p1"}"#, "missing_resource_type"),
            (
                r#"{"resourceType":"../x","id":"p1"}"#,
                "invalid_resource_type",
            ),
            (r#"{"resourceType":"Patient"}"#, "missing_id"),
            (r#"{"resourceType":"Patient","id":""}"#, "missing_id"),
            (
                r#"{"resourceType":"Observation","id":"o1"}"#,
                "type_mismatch",
            ),
            (
                r#"{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"2024-13-01"}}"#,
                "bad_last_updated",
            ),
        ];
        for (line, code) in cases {
            match decode_one(line, Some("Patient")) {
                LineKind::Rejected(reason) => assert_eq!(reason.code(), code, "{line}"),
                other => panic!("{line}: expected {code}, got {other:?}"),
            }
        }
    }

    #[test]
    fn positions_blank_lines_and_crlf() {
        let chunk = Chunk {
            data: b"{\"resourceType\":\"Patient\",\"id\":\"a\"}\r\n\n  \n{\"resourceType\":\"Patient\",\"id\":\"b\"}".to_vec(),
            first_line: 1,
            first_offset: 0,
        };
        let lines = ChunkDecoder::default().decode(&chunk, None).lines;
        let summary: Vec<(u64, u64, bool)> = lines
            .iter()
            .map(|l| (l.line, l.offset, matches!(l.kind, LineKind::Blank)))
            .collect();
        assert_eq!(
            summary,
            vec![(1, 0, false), (2, 37, true), (3, 38, true), (4, 41, false)]
        );
        assert_eq!(
            &chunk.data[lines[0].start..lines[0].end],
            br#"{"resourceType":"Patient","id":"a"}"#
        );
    }
}
