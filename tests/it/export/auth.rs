//! SMART Backend Services: signed assertions verify, tokens refresh mid-download.

use super::*;

#[test]
fn smart_backend_assertions_verify_and_tokens_refresh_during_downloads() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    for (key, jwks, kid, alg) in [
        ("rs384.jwks.json", "rs384.jwks.json", None, "RS384"),
        ("es384.pem", "es384.jwks.json", Some("test-es384"), "ES384"),
    ] {
        let rt = runtime();
        let jwks: Value = serde_json::from_slice(&std::fs::read(keys.join(jwks)).unwrap()).unwrap();
        let server = rt.block_on(BulkServer::start(Config {
            files: sample(&["Patient", "Condition", "Immunization", "Encounter"]),
            requires_access_token: true,
            smart: Some(Smart {
                client_id: "fhirlake-test".into(),
                jwks,
                token_ttl: Duration::from_secs(1),
            }),
            // Slow enough that later files start after the first token expired.
            throttle: Some(Duration::from_millis(25)),
            ..Default::default()
        }));
        let tmp = tempfile::tempdir().unwrap();
        let lake = tmp.path().join("lake");
        let mut command = export(&server, &lake);
        command
            .args([
                "--auth",
                "smart-backend",
                "--client-id",
                "fhirlake-test",
                "--scope",
                "system/*.rs",
            ])
            .arg("--key")
            .arg(keys.join(key))
            .args(["--parallel", "1"]);
        if let Some(kid) = kid {
            command.args(["--kid", kid]);
        }
        let (json, out) = run(&mut command, 0);
        assert_eq!(json["job"]["phase"], "finished");
        let log = server.log.lock().unwrap();
        assert!(
            log.rejected_assertions.is_empty(),
            "{:?}",
            log.rejected_assertions
        );
        assert!(log.verified_assertions.iter().all(|(a, _)| a == alg));
        assert!(
            log.tokens.len() >= 2,
            "{alg}: the 1 s token was refreshed during the downloads ({} tokens)",
            log.tokens.len()
        );
        assert_eq!(
            log.unauthorized, 0,
            "{alg}: no request went out with an expired token"
        );
        let tokens: Vec<String> = log.tokens.keys().cloned().collect();
        drop(log);
        let files = server.requests("/files/");
        assert!(files.iter().all(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|a| a.starts_with("Bearer tok-"))
        }));
        let token_requests = server.requests("/auth/token");
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&token_requests[0].body)
                .into_owned()
                .collect();
        assert_eq!(form["scope"], "system/*.rs");
        // The status report (text, JSON and page) is read from the lake:
        // written beside it, it is searched with everything else.
        let page = lake.join("status.html");
        let report = crate::common::fhirlake()
            .args(["status", "--json", "--lake"])
            .arg(&lake)
            .arg("--html")
            .arg(&page)
            .output()
            .unwrap();
        assert_eq!(
            report.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&report.stderr)
        );
        for token in &tokens {
            assert_nowhere(token, &lake, &out);
            assert_nowhere(token, &lake, &report);
        }
        assert_nowhere(&form["client_assertion"], &lake, &out);
        assert_nowhere(&form["client_assertion"], &lake, &report);

        // The audit trail names the client and the scope its token granted.
        let events = crate::common::audit_events(&lake, &[]);
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e["principal"] == "fhirlake-test"));
        assert!(
            events[0]["event"].to_string().contains("system/*.rs"),
            "the granted scope is recorded: {}",
            events[0]["event"]
        );
        // The request to the server opens the job's trail, before any
        // download; the load's kick-off follows at hand-over.
        let kickoffs: Vec<usize> = (0..events.len())
            .filter(|&i| events[i]["step"] == "kickoff")
            .collect();
        let first_input = events
            .iter()
            .position(|e| e["step"] == "input-file")
            .unwrap();
        assert_eq!(kickoffs.len(), 2, "server request and hand-over");
        assert!(kickoffs[0] == 0 && kickoffs[1] < first_input && kickoffs[1] > 0);
        let request = events[0]["event"].to_string();
        assert!(
            request.contains("$export") && !request.contains("\"inputs\""),
            "{request}"
        );
        assert_eq!(events[0]["job"], events[first_input]["job"]);
    }
}
