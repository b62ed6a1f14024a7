//! `clothjob-runner process` with the gemini expansion backend against a fake Gemini on
//! loopback (the built binary, as a user runs it): outputs and report, and the exit code
//! of each kind of failure (42 bad input and 43 invalid spec fail at once, 75 is retried).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../backends/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clothjob_api::contract::{EXIT_BAD_INPUT, EXIT_INVALID_SPEC, EXIT_TRANSIENT};
use serde_json::json;
use support::gemini::{Behaviour, FakeGemini, ratio_colour};
use support::{MockServer, Reply};

const KEY: &str = "runner-test-key";
const MODEL: &str = "gemini-2.5-flash-image";

/// Runs `process` on a T-shirt photo with gemini at `endpoint`; `key` is GEMINI_API_KEY.
fn process(dir: &Path, endpoint: &str, key: Option<&str>, extra: &[&str]) -> Output {
    let (input, _) = common::write_photo(dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clothjob-runner"));
    cmd.arg("process")
        .arg(&input)
        .arg("--out")
        .arg(dir.join("out"))
        .env_remove("GEMINI_API_KEY")
        // The fakes serve on loopback: allowed as the operator's --allowed-networks would.
        .env(clothjob_api::contract::ENV_ALLOWED_NETWORKS, "127.0.0.0/8")
        .env("RUST_LOG", "warn");
    for set in [
        "expansion.backend=gemini".to_string(),
        format!("expansion.gemini.model={MODEL}"),
        format!("expansion.gemini.endpoint={endpoint}"),
    ]
    .iter()
    .map(String::as_str)
    .chain(extra.iter().copied())
    {
        cmd.args(["--set", set]);
    }
    if let Some(key) = key {
        cmd.env("GEMINI_API_KEY", key);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn process_with_gemini_writes_the_catalog_images_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGemini::start(Behaviour::Image);
    let out = process(dir.path(), &fake.endpoint(), Some(KEY), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let report = common::report(dir.path());
    let stages = report["stages"].as_array().unwrap();
    let expansion = stages.iter().find(|s| s["name"] == "expansion").unwrap();
    assert_eq!(expansion["backend"], "gemini");
    for (role, ratio, size) in [
        ("catalog", "3:4", json!([768, 1024])),
        ("square", "1:1", json!([1024, 1024])),
    ] {
        let o = report["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["role"] == role)
            .unwrap_or_else(|| panic!("no {role} in {report}"));
        assert_eq!(json!([o["width"], o["height"]]), size, "{role}");
        let file = dir.path().join("out").join(o["file"].as_str().unwrap());
        let img = image::open(&file).unwrap().to_rgb8();
        let colour = ratio_colour(ratio);
        let worst = img
            .pixels()
            .flat_map(|p| (0..3).map(move |c| p.0[c].abs_diff(colour[c])))
            .max()
            .unwrap();
        assert!(
            worst <= 6,
            "{role}: a pixel is {worst} off the fake's colour"
        );
    }

    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c.api_key.as_deref(), Some(KEY));
        assert_eq!(c.path, format!("/v1beta/models/{MODEL}:generateContent"));
    }
}

#[test]
fn a_safety_block_fails_at_once_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGemini::start(Behaviour::Blocked("IMAGE_SAFETY"));
    let out = process(dir.path(), &fake.endpoint(), Some(KEY), &[]);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{}", stderr(&out));
    let err = stderr(&out);
    eprintln!("process said: {err}");
    assert!(err.contains("error (BadInput)"), "{err}");
    assert!(err.contains("IMAGE_SAFETY"), "{err}");
    assert_eq!(fake.calls().len(), 1);
    assert!(!dir.path().join("out/report.json").exists());
}

#[test]
fn a_rejected_key_is_an_invalid_spec() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start(|_, _| {
        Reply::json(
            403,
            &json!({ "error": { "code": 403, "message": "Method doesn't allow unregistered callers.", "status": "PERMISSION_DENIED" } }),
        )
    });
    let out = process(dir.path(), &server.url(), Some("wrong-key"), &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_INVALID_SPEC),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("error (InvalidSpec)"), "{err}");
    assert!(err.contains("403"), "{err}");
    assert_eq!(server.count(), 1, "a rejected key was retried");
}

#[test]
fn a_gemini_that_stays_unavailable_past_the_cap_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGemini::start(Behaviour::Unavailable);
    let started = Instant::now();
    let out = process(
        dir.path(),
        &fake.endpoint(),
        Some(KEY),
        &["expansion.gemini.timeoutSeconds=2"],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(EXIT_TRANSIENT), "{}", stderr(&out));
    let err = stderr(&out);
    eprintln!("process said: {err}");
    assert!(err.contains("error (Backend)"), "{err}");
    assert!(err.contains("503") && err.contains("overloaded"), "{err}");
    // Attempts at ~0 s and ~1 s (Retry-After: 1); a third would start past the 2 s cap.
    assert_eq!(fake.calls().len(), 2, "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_missing_key_is_a_config_error_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGemini::start(Behaviour::Image);
    let out = process(dir.path(), &fake.endpoint(), None, &[]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_INVALID_SPEC),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    eprintln!("process said: {err}");
    assert!(err.contains("error (InvalidSpec)"), "{err}");
    assert!(err.contains("GEMINI_API_KEY"), "{err}");
    assert_eq!(fake.calls().len(), 0);
}
