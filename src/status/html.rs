//! The status report as one self-contained HTML page: inline CSS and SVG
//! charts, no scripts, no external assets, so it can be mailed or archived
//! with a job's records and still open anywhere. Written by hand (a
//! template engine would be a dependency for three tables and three charts);
//! every lake-supplied string goes through [`esc`].

use std::fmt::Write;

use super::tables::Group;
use super::{JobStatus, LakeStatus, TableStatus, Version};

/// At most this many jobs in the loads chart (the latest); the jobs table
/// lists them all.
const CHART_JOBS: usize = 60;
/// Points of a table's rows-over-versions line; longer histories are sampled.
const SPARK_POINTS: usize = 200;

pub fn render(status: &LakeStatus) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let title = format!("fhirlake status — {}", status.lake);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(
        page,
        "<header><h1>fhirlake status</h1><p>Lake <code id=\"lake\">{}</code> · generated {} · fhirlake {}</p></header>",
        esc(&status.lake),
        esc(&status.generated_at),
        esc(&status.fhirlake_version)
    );
    if let Some(segregated) = &status.segregated_lake {
        let _ = writeln!(
            page,
            "<p id=\"segregated-lake\">Segregated tables are kept in <code>{}</code>{}</p>",
            esc(&segregated.uri),
            if segregated.read {
                "."
            } else {
                ": not read for this page (give <code>--segregated-lake</code>)."
            }
        );
    }
    summary(&mut page, status);
    verify(&mut page, status);
    tables(&mut page, status);
    quarantine(&mut page, status);
    loads(&mut page, status);
    page.push_str("</body></html>\n");
    page
}

fn summary(page: &mut String, status: &LakeStatus) {
    let of = |group| status.tables.iter().filter(move |t| t.group() == group);
    let resource_rows: u64 = of(Group::Resources).map(|t| t.rows).sum();
    let resource_tables = of(Group::Resources).count();
    let segregated_rows: u64 = of(Group::Segregated).map(|t| t.rows).sum();
    page.push_str("<section id=\"summary\" class=\"cards\">");
    for (id, label, value) in [
        ("resource-rows", "resource rows", thousands(resource_rows)),
        (
            "segregated-rows",
            "rows segregated",
            thousands(segregated_rows),
        ),
        (
            "resource-tables",
            "resource tables",
            resource_tables.to_string(),
        ),
        ("jobs", "jobs", status.jobs.len().to_string()),
        (
            "quarantined",
            "rows in quarantine",
            thousands(status.quarantine.rows),
        ),
    ] {
        let _ = write!(
            page,
            "<div class=\"card\" id=\"card-{id}\"><span class=\"value\">{value}</span><span class=\"label\">{label}</span></div>"
        );
    }
    page.push_str("</section>\n");
}

fn verify(page: &mut String, status: &LakeStatus) {
    let v = &status.verify;
    let (class, verdict) = if v.clean {
        ("ok", "verifies")
    } else {
        ("bad", "does NOT verify")
    };
    let _ = write!(
        page,
        "<section id=\"verify\" class=\"{class}\"><h2>Audit trail</h2><p>The lake <strong id=\"verify-verdict\">{verdict}</strong>: \
         {} audit events, {} anchors, {} Delta commits and {} manifests checked, {} \
         (<code>fhirlake verify</code>); {} problem(s).</p>",
        v.events,
        v.anchors,
        v.commits,
        v.manifests,
        v.raw_files(),
        v.problems.len()
    );
    if !v.problems.is_empty() {
        page.push_str("<ul class=\"problems\">");
        for problem in &v.problems {
            let _ = write!(page, "<li>{}</li>", esc(problem));
        }
        page.push_str("</ul>");
    }
    page.push_str("</section>\n");
}

fn tables(page: &mut String, status: &LakeStatus) {
    page.push_str("<section id=\"tables\"><h2>Tables</h2>");
    for (group, heading, note) in [
        (Group::Resources, "Resource tables", ""),
        (
            Group::Segregated,
            "Segregated by policy or validation",
            "Kept out of the main tables; see the rule in each resource's meta.tag.",
        ),
        (
            Group::Fhirlake,
            "fhirlake's own tables",
            "Quarantine, findings, curation queue, audit copies.",
        ),
    ] {
        let rows: Vec<&TableStatus> = status
            .tables
            .iter()
            .filter(|t| t.group() == group)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(page, "<h3>{heading}</h3>");
        if !note.is_empty() {
            let _ = write!(page, "<p class=\"note\">{note}</p>");
        }
        page.push_str(
            "<table class=\"tables\"><thead><tr><th>table</th><th class=\"num\">rows</th>\
             <th class=\"num\">version</th><th>last change</th><th>by job</th>\
             <th>rows over Delta versions</th></tr></thead><tbody>",
        );
        for t in rows {
            let _ = write!(
                page,
                "<tr data-table=\"{name}\"><td class=\"name\">{name}</td><td class=\"num rows\">{rows}</td>\
                 <td class=\"num version\">{version}</td><td class=\"when\">{last}</td><td class=\"job\">{job}</td><td class=\"chart\">",
                name = esc(&t.name),
                rows = thousands(t.rows),
                version = t.version,
                last = esc(t.last_change.as_deref().unwrap_or("—")),
                job = esc(t.last_job.as_deref().unwrap_or("—")),
            );
            sparkline(page, &t.name, &t.history);
            page.push_str("</td></tr>");
        }
        page.push_str("</tbody></table>");
    }
    page.push_str("</section>\n");
}

/// Rows after each version as a line; a table of one version is a dot.
fn sparkline(page: &mut String, table: &str, history: &[Version]) {
    const W: f64 = 180.0;
    const H: f64 = 36.0;
    if history.is_empty() {
        page.push_str(
            "<span class=\"note\">no history: the log is not whole from version 0, or lacks statistics</span>",
        );
        return;
    }
    let step = history.len().div_ceil(SPARK_POINTS).max(1);
    let mut points: Vec<Version> = history.iter().step_by(step).copied().collect();
    if points.last() != history.last() {
        points.extend(history.last().copied());
    }
    let max_rows = points.iter().map(|v| v.rows).max().unwrap_or(0).max(1) as f64;
    let (first, last) = (
        points[0].version as f64,
        points[points.len() - 1].version as f64,
    );
    let span = (last - first).max(1.0);
    let xy = |v: &Version| {
        (
            2.0 + (v.version as f64 - first) / span * (W - 4.0),
            H - 2.0 - v.rows as f64 / max_rows * (H - 4.0),
        )
    };
    let end = history[history.len() - 1];
    let _ = write!(
        page,
        "<svg class=\"spark\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <title>{}: {} rows at version {}, {} versions</title>",
        esc(table),
        thousands(end.rows),
        end.version,
        history.len()
    );
    if points.len() == 1 {
        let (x, y) = xy(&points[0]);
        let _ = write!(page, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\"/>");
    } else {
        page.push_str("<polyline points=\"");
        for v in &points {
            let (x, y) = xy(v);
            let _ = write!(page, "{x:.1},{y:.1} ");
        }
        page.push_str("\"/>");
    }
    page.push_str("</svg>");
}

fn quarantine(page: &mut String, status: &LakeStatus) {
    let q = &status.quarantine;
    let _ = write!(
        page,
        "<section id=\"quarantine\"><h2>Quarantine</h2><p><span id=\"quarantine-rows\">{}</span> rows in <code>_quarantine</code>, by reason.</p>",
        thousands(q.rows)
    );
    if q.by_reason.is_empty() {
        page.push_str("<p class=\"note\">Nothing quarantined.</p></section>\n");
        return;
    }
    const BAR: f64 = 360.0;
    const ROW: f64 = 22.0;
    let max = q
        .by_reason
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let height = ROW * q.by_reason.len() as f64 + 4.0;
    let _ = write!(
        page,
        "<svg class=\"bars\" width=\"640\" height=\"{height}\" viewBox=\"0 0 640 {height}\" role=\"img\"><title>quarantined rows by reason</title>"
    );
    for (i, (reason, n)) in q.by_reason.iter().enumerate() {
        let y = 2.0 + ROW * i as f64;
        let w = (*n as f64 / max * BAR).max(1.0);
        let _ = write!(
            page,
            "<text x=\"0\" y=\"{ty:.1}\">{r}</text><rect x=\"200\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bh:.1}\"><title>{r}: {n}</title></rect>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\">{nt}</text>",
            ty = y + 14.0,
            r = esc(reason),
            bh = ROW - 6.0,
            tx = 206.0 + w,
            nt = thousands(*n),
        );
    }
    page.push_str("</svg><table class=\"reasons\"><thead><tr><th>reason</th><th class=\"num\">rows</th></tr></thead><tbody>");
    for (reason, n) in &q.by_reason {
        let _ = write!(
            page,
            "<tr data-reason=\"{r}\"><td class=\"name\">{r}</td><td class=\"num count\">{}</td></tr>",
            thousands(*n),
            r = esc(reason)
        );
    }
    page.push_str("</tbody></table></section>\n");
}

fn loads(page: &mut String, status: &LakeStatus) {
    page.push_str("<section id=\"loads\"><h2>Loads over time</h2>");
    let charted: Vec<&JobStatus> = status.jobs.iter().filter(|j| j.rows.is_some()).collect();
    let charted = &charted[charted.len().saturating_sub(CHART_JOBS)..];
    if !charted.is_empty() {
        loads_chart(page, charted);
    }
    page.push_str(
        "<table class=\"jobs\"><thead><tr><th>job</th><th>kind</th><th>started</th><th>finished</th>\
         <th>outcome</th><th>by</th><th class=\"num\">inputs</th><th class=\"num\">inserted</th>\
         <th class=\"num\">updated</th><th class=\"num\">unchanged</th><th class=\"num\">quarantined</th>\
         <th class=\"num\">filtered</th></tr></thead><tbody>",
    );
    for job in &status.jobs {
        let count = |f: fn(&crate::ledger::RowCounts) -> u64| {
            job.rows
                .as_ref()
                .map_or_else(|| "—".to_owned(), |r| thousands(f(r)))
        };
        let _ = write!(
            page,
            "<tr data-job=\"{id}\" class=\"{outcome}\"><td class=\"name\">{id}</td><td>{kind}</td><td class=\"when\">{started}</td>\
             <td class=\"when\">{finished}</td><td class=\"outcome\">{outcome}</td><td>{by}</td><td class=\"num\">{inputs}</td>\
             <td class=\"num inserted\">{}</td><td class=\"num updated\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num quarantined\">{}</td><td class=\"num\">{}</td></tr>",
            count(|r| r.inserted),
            count(|r| r.updated),
            count(|r| r.unchanged),
            count(|r| r.quarantined),
            count(|r| r.filtered),
            id = esc(&job.job_id),
            kind = esc(&job.kind),
            started = esc(job.started.as_deref().unwrap_or("—")),
            finished = esc(job.finished.as_deref().unwrap_or("—")),
            outcome = esc(&job.outcome),
            by = esc(job.principal.as_deref().unwrap_or("—")),
            inputs = job.inputs,
        );
    }
    page.push_str("</tbody></table></section>\n");
}

/// One stacked bar per job: inserted, updated, quarantined rows.
fn loads_chart(page: &mut String, jobs: &[&JobStatus]) {
    const H: f64 = 160.0;
    const BAR: f64 = 18.0;
    const GAP: f64 = 8.0;
    let total = |j: &JobStatus| j.rows.map_or(0, |r| r.inserted + r.updated + r.quarantined);
    let max = jobs.iter().map(|j| total(j)).max().unwrap_or(1).max(1) as f64;
    let width = 40.0 + (BAR + GAP) * jobs.len() as f64;
    let _ = write!(
        page,
        "<svg class=\"loads\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\" role=\"img\"><title>rows per job: inserted, updated, quarantined</title>\
         <text x=\"0\" y=\"12\">{}</text><line x1=\"36\" y1=\"{H}\" x2=\"{width}\" y2=\"{H}\"/>",
        thousands(max as u64),
        h = H + 4.0
    );
    for (i, job) in jobs.iter().enumerate() {
        let Some(rows) = job.rows else { continue };
        let x = 40.0 + (BAR + GAP) * i as f64;
        let mut top = H;
        for (class, n) in [
            ("inserted", rows.inserted),
            ("updated", rows.updated),
            ("quarantined", rows.quarantined),
        ] {
            if n == 0 {
                continue;
            }
            let h = (n as f64 / max * (H - 16.0)).max(1.0);
            top -= h;
            let _ = write!(
                page,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{BAR}\" height=\"{h:.1}\"><title>{} {}: {} {class}</title></rect>",
                esc(&job.job_id),
                esc(job.finished.as_deref().unwrap_or("")),
                thousands(n),
            );
        }
    }
    page.push_str(
        "</svg><p class=\"legend\"><span class=\"key inserted\"></span>inserted \
         <span class=\"key updated\"></span>updated <span class=\"key quarantined\"></span>quarantined</p>",
    );
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
:root{--ink:#1d2330;--muted:#5b6475;--line:#d9dde5;--ok:#1f7a3f;--bad:#b3261e;--ins:#2f6fdb;--upd:#f0a030;--qua:#b3261e}\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--ink);margin:24px auto;max-width:1200px;padding:0 16px}\
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}\
header p,.note,.legend{color:var(--muted)}code{font-size:13px}\
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}\
.card{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:150px;display:flex;flex-direction:column}\
.card .value{font-size:24px;font-weight:600}.card .label{color:var(--muted)}\
#verify{border-left:4px solid var(--ok);padding:2px 12px;margin-top:20px}#verify.bad{border-color:var(--bad)}\
#verify.ok strong{color:var(--ok)}#verify.bad strong{color:var(--bad)}\
table{border-collapse:collapse;width:100%;margin:4px 0 12px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:middle}\
th{font-weight:600;color:var(--muted)}table.jobs td{font-size:12px}td.name,td.job{word-break:break-all}.num{text-align:right;font-variant-numeric:tabular-nums}td.when{white-space:nowrap}\
tr.failed td.outcome{color:var(--bad);font-weight:600}tr.unfinished td.outcome{color:var(--upd)}\
svg text{font-size:12px;fill:var(--ink)}svg line{stroke:var(--line)}\
svg.spark polyline{fill:none;stroke:var(--ins);stroke-width:1.5}svg.spark circle{fill:var(--ins)}\
svg.bars rect{fill:var(--qua)}rect.inserted,.key.inserted{fill:var(--ins);background:var(--ins)}\
rect.updated,.key.updated{fill:var(--upd);background:var(--upd)}rect.quarantined,.key.quarantined{fill:var(--qua);background:var(--qua)}\
.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;border-radius:2px}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::RowCounts;
    use crate::status::{QuarantineStatus, VerifySummary};

    fn status() -> LakeStatus {
        LakeStatus {
            lake: "s3://bucket/<lake>".into(),
            segregated_lake: Some(crate::status::SegregatedLake {
                uri: "s3://restricted/<lake>".into(),
                read: false,
            }),
            generated_at: "2026-12-03T14:00:00Z".into(),
            fhirlake_version: "0.1.0".into(),
            verify: VerifySummary {
                clean: false,
                events: 9,
                anchors: 4,
                commits: 4,
                manifests: 1,
                raw_objects: 0,
                raw_rehashed: false,
                problems: vec!["event 3 <missing>".into()],
            },
            jobs: vec![JobStatus {
                job_id: "j1".into(),
                kind: "load".into(),
                started: Some("2026-12-03T13:00:00Z".into()),
                finished: Some("2026-12-03T13:00:05Z".into()),
                outcome: "warnings".into(),
                principal: Some("alice".into()),
                policy: Some("none".into()),
                inputs: 2,
                rows: Some(RowCounts {
                    inserted: 1234,
                    updated: 5,
                    unchanged: 0,
                    quarantined: 1,
                    filtered: 0,
                }),
            }],
            tables: vec![TableStatus {
                name: "patient".into(),
                rows: 1234,
                version: 2,
                last_change: None,
                last_job: Some("j1".into()),
                history: vec![
                    Version {
                        version: 0,
                        rows: 0,
                    },
                    Version {
                        version: 1,
                        rows: 1000,
                    },
                    Version {
                        version: 2,
                        rows: 1234,
                    },
                ],
            }],
            quarantine: QuarantineStatus {
                rows: 1,
                by_reason: vec![("invalid_json".into(), 1)],
            },
        }
    }

    #[test]
    fn the_page_carries_the_numbers_escaped_and_nothing_external() {
        let page = render(&status());
        assert!(page.contains("<tr data-table=\"patient\"><td class=\"name\">patient</td><td class=\"num rows\">1,234</td>"));
        assert!(page.contains("<tr data-reason=\"invalid_json\">"));
        assert!(page.contains("does NOT verify"));
        assert!(page.contains("event 3 &lt;missing&gt;"));
        assert!(page.contains("s3://bucket/&lt;lake&gt;"));
        assert!(page.contains("kept in <code>s3://restricted/&lt;lake&gt;</code>: not read"));
        assert!(!page.contains("<lake>") && !page.contains("<missing>"));
        assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("<script"));
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "sparkline, quarantine bars, loads"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
