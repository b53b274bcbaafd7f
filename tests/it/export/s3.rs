//! An export into an S3 lake keeps its job state there for `--since auto`.

use super::*;

#[test]
fn export_into_an_s3_lake_keeps_its_job_state_there_for_since_auto() {
    let Some(s3) = crate::common::S3::from_env() else {
        return;
    };
    let rt = runtime();
    let files = sample(&["Patient", "Immunization"]);
    let server = rt.block_on(BulkServer::start(Config {
        files: files.clone(),
        ..Default::default()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let uri = s3.fresh_lake();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let mut command = s3.fhirlake();
        command
            .args([
                "export",
                "--json",
                "--poll-interval",
                "0",
                "--since",
                "auto",
            ])
            .args(["--server", &server.base, "--lake", &uri])
            .arg("--raw-dir")
            .arg(tmp.path());
        let (json, _) = run(&mut command, 0);
        jobs.push(json["job"]["job_id"].as_str().unwrap().to_owned());
    }
    let lake = s3.open(&uri);
    let first = rt
        .block_on(fhirlake::ledger::read_manifest(&lake, &jobs[0]))
        .unwrap();
    let total: usize = files.iter().map(|(_, b)| lines(b)).sum();
    assert_eq!(first.totals.inserted as usize, total);
    let second = rt
        .block_on(fhirlake::ledger::read_manifest(&lake, &jobs[1]))
        .unwrap();
    // Each raw file also went to <lake>/_raw/<job>/ in the bucket, byte for byte.
    let export = first.export.as_ref().unwrap();
    for file in &export.files {
        let copy = file.lake_copy.as_deref().expect("uploaded to the lake");
        assert!(
            copy.starts_with(&format!("_raw/{}/output/", jobs[0])),
            "{copy}"
        );
        let bytes = rt.block_on(async {
            use object_store::ObjectStoreExt;
            lake.store()
                .get(&lake.path(copy))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        use sha2::Digest;
        assert_eq!(Some(hex::encode(sha2::Sha256::digest(&bytes))), file.sha256);
    }
    // The same bytes again: skipped by SHA-256, never loaded twice.
    assert_eq!(second.totals.total(), 0);
    assert!(
        second
            .inputs
            .iter()
            .all(|i| i.status == fhirlake::ledger::InputStatus::SkippedAlreadyLoaded)
    );
    assert_eq!(second.inputs.len(), 2);
    // The second run found the first one's state in the bucket.
    let last = server.requests("/$export").last().unwrap().clone();
    assert!(
        last.query.contains("_since=2026-11-20T10%3A00%3A00.000Z"),
        "{}",
        last.query
    );
}
