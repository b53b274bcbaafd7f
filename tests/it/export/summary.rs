//! The text summary names the job, its files and tables.

use super::*;

#[test]
fn the_text_summary_names_the_job_its_files_and_tables() {
    let rt = runtime();
    let server = rt.block_on(BulkServer::start(Config {
        files: sample(&["Patient"]),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let lake = tmp.path().join("lake");
    let out = fhirlake()
        .args(["export", "--poll-interval", "0", "--server", &server.base])
        .arg("--lake")
        .arg(&lake)
        .env_remove("FHIRLAKE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(stdout.starts_with("export export-"), "{stdout}");
    assert!(stdout.contains(&format!("transactionTime {TRANSACTION_TIME}")));
    assert!(stdout.contains("1 file(s)"));
    assert!(stdout.contains("patient"), "per-table summary: {stdout}");
    // A second run without --fresh finds nothing open and starts a new export.
    let again = fhirlake()
        .args([
            "export",
            "--poll-interval",
            "0",
            "--resume",
            "--server",
            &server.base,
        ])
        .arg("--lake")
        .arg(&lake)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no unfinished export"));
}
