//! End-to-end: ClothJobs whose expansion runs on Gemini — a fake `generateContent` server
//! on the host's loopback, exposed to the pods — with the API key from a Secret that the
//! kubelet hands to the runner as `GEMINI_API_KEY`. A module of the `lifecycle` test binary
//! (one binary less to link).

#[path = "../../../backends/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use clothjob_api::{StageState, conditions};
use clothjob_e2e::harness::{expose, loopback_port};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::cluster::forward::Forward;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use support::gemini::{Behaviour, FakeGemini, ratio_colour};

use super::{MINUTE, manifest, source};

const SECRET_KEY: &str = "e2e-gemini-key-7f3a";

/// Creates the Secret holding the key and a ClothJob expanding with the fake at `endpoint`.
async fn create_gemini_job(case: &Case, name: &str, photo_url: &str, endpoint: &str) -> Result<()> {
    case.cp
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: gemini, namespace: {}}}\nstringData: {{api-key: {SECRET_KEY}}}\n",
            case.ns
        ))
        .await?;
    let pipeline = format!(
        "  retries: 2\n  pipeline:\n    expansion:\n      backend: gemini\n      background: '#F4F4F2'\n      gemini:\n        model: gemini-2.5-flash-image\n        apiKeySecretRef: {{name: gemini, key: api-key}}\n        endpoint: '{endpoint}'\n        prompt: Keep the stripes straight.\n        timeoutSeconds: 60\n"
    );
    case.create(&manifest(name, photo_url, &case.output(), &pipeline))
        .await?;
    Ok(())
}

/// The API key appears nowhere a user or an operator of the cluster can read: not in the
/// ClothJob, its Events, the operator's log or metrics, the runner's log, the pods' listing.
async fn assert_key_nowhere(case: &Case, name: &str) -> Result<()> {
    let cj = serde_json::to_string(&case.clothjobs().get(name).await?)?;
    let metrics = case.operator.metrics().await?;
    let events: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    let events = serde_json::to_string(&events.list(&ListParams::default()).await?.items)?;
    let seen = format!("{cj}\n{events}\n{metrics}\n{}", case.diagnostics());
    assert!(
        seen.contains(name) && seen.contains("runner logs"),
        "the check read nothing"
    );
    assert!(!seen.contains(SECRET_KEY), "the API key leaked:\n{seen}");
    Ok(())
}

/// The fake's in-cluster endpoint and the forward to keep alive.
fn exposed(case: &Case, fake: &FakeGemini) -> Result<(String, Forward)> {
    expose(case.cluster(), loopback_port(&fake.endpoint())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_expansion_makes_the_catalog_images_with_the_secrets_key() -> Result<()> {
    let case = Case::new("gemini").await?;
    let src = source(&case, tshirt_jpeg(480, 640)?, 0, Duration::ZERO).await?;
    // 2 s a reply, 2 calls: the expansion stage runs long enough to be seen live.
    let fake = FakeGemini::start(Behaviour::SlowImage(Duration::from_secs(2)));
    let (endpoint, _forward) = exposed(&case, &fake)?;
    let seen = super::record_progress(case.clothjobs(), "gem");
    create_gemini_job(&case, "gem", &src.url("photo.jpg"), &endpoint).await?;
    let cj = wait_condition(&case.clothjobs(), "gem", conditions::COMPLETE, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(1));
    // Live progress: the watch saw the expansion stage running inside its weighted span
    // (45-95) before the end, and progress never went back.
    let seen = super::progress_to_100(&seen).await?;
    assert!(
        seen.iter()
            .any(|(p, s)| s == "expansion" && (45..95).contains(p)),
        "the expansion stage was never seen running: {seen:?}"
    );

    let stages = status.stages.clone().unwrap_or_default();
    let expansion = stages
        .iter()
        .find(|s| s.name == "expansion")
        .context("expansion stage")?;
    assert_eq!(expansion.backend.as_deref(), Some("gemini"));
    assert_eq!(expansion.state, StageState::Succeeded);

    let outputs = status.outputs.unwrap_or_default();
    for (role, ratio, size) in [
        ("catalog", "3:4", (768, 1024)),
        ("square", "1:1", (1024, 1024)),
    ] {
        let o = outputs
            .iter()
            .find(|o| o.name == role)
            .with_context(|| format!("no {role} output"))?;
        assert_eq!((o.width, o.height), size, "{role}");
        let img = image::load_from_memory(&case.read_output(&o.uri)?)?.to_rgb8();
        let colour = ratio_colour(ratio);
        let worst = img
            .pixels()
            .flat_map(|p| (0..3).map(move |c| p.0[c].abs_diff(colour[c])))
            .max()
            .unwrap_or(255);
        assert!(
            worst <= 6,
            "{role}: a pixel is {worst} off the fake's colour"
        );
    }

    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(
            c.api_key.as_deref(),
            Some(SECRET_KEY),
            "the Secret's key was not sent"
        );
        assert!(c.prompt.contains("#F4F4F2"), "{}", c.prompt);
        assert!(
            c.prompt.ends_with("Keep the stripes straight."),
            "{}",
            c.prompt
        );
    }
    assert_key_nowhere(&case, "gem").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safety_blocked_gemini_job_fails_at_once_with_the_reason() -> Result<()> {
    let case = Case::new("gemblock").await?;
    let src = source(&case, tshirt_jpeg(480, 640)?, 0, Duration::ZERO).await?;
    let fake = FakeGemini::start(Behaviour::Blocked("IMAGE_SAFETY"));
    let (endpoint, _forward) = exposed(&case, &fake)?;
    create_gemini_job(&case, "blocked", &src.url("photo.jpg"), &endpoint).await?;
    let cj = wait_condition(&case.clothjobs(), "blocked", conditions::FAILED, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(1), "a blocked reply was retried");
    assert_eq!(status.reason.as_deref(), Some("BadInput"));
    let message = status.message.clone().unwrap_or_default();
    eprintln!("status.message: {message}");
    assert!(message.contains("IMAGE_SAFETY"), "{message}");
    let failure = status.runner_failure.context("runnerFailure")?;
    assert_eq!(failure.reason, "BadInput");
    assert!(!failure.retryable);
    assert!(
        failure.message.contains("IMAGE_SAFETY"),
        "{}",
        failure.message
    );
    let expansion = status
        .stages
        .unwrap_or_default()
        .into_iter()
        .find(|s| s.name == "expansion")
        .context("expansion stage")?;
    assert_ne!(expansion.state, StageState::Succeeded);
    assert_eq!(fake.calls().len(), 1);

    // The Failed Event carries the reason too.
    let events: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    clothjob_testenv::wait_for(
        "a Failed Event naming IMAGE_SAFETY",
        MINUTE,
        Duration::from_millis(200),
        || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Failed")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("IMAGE_SAFETY"))
                })
                .then_some(()))
        },
    )
    .await?;
    assert_key_nowhere(&case, "blocked").await
}
