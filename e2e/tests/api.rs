//! End-to-end: the API contract on the real node's apiserver: schema and CEL validation at
//! apply time, `kubectl explain`, and the runner's least-privilege RBAC.

use std::time::Duration;

use anyhow::{Context, Result};
use clothjob_api::ClothJob;
use clothjob_e2e::Case;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

fn apply(case: &Case, name: &str, spec: &str) -> Result<(bool, String)> {
    let yaml = format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    );
    let path = case.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    let out = case
        .cp
        .kubectl()
        .args(["apply", "-n", &case.ns, "-f"])
        .arg(&path)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_rejected_at_apply_with_a_clear_message() -> Result<()> {
    let case = Case::new("invalid").await?;
    let out = "  output: {uri: 'file:///tmp/out'}\n";
    let cases = [
        ("no-source", format!("  source: {{}}\n{out}"), "exactly one of url, uri, secretRef or configMapRef"),
        (
            "two-sources",
            format!("  source: {{url: 'https://x.test/a.jpg', uri: 's3://b/a.jpg'}}\n{out}"),
            "exactly one of url, uri, secretRef or configMapRef",
        ),
        ("ftp-url", format!("  source: {{url: 'ftp://x.test/a.jpg'}}\n{out}"), "url must be an http:// or https:// URL"),
        ("bad-uri", format!("  source: {{uri: 'http://x.test/a.jpg'}}\n{out}"), "uri must be s3://bucket/key"),
        (
            "quality-0",
            "  source: {url: 'https://x.test/a.jpg'}\n  output: {uri: 'file:///o', jpegQuality: 0}\n".into(),
            "jpegQuality",
        ),
        (
            "quality-101",
            "  source: {url: 'https://x.test/a.jpg'}\n  output: {uri: 'file:///o', jpegQuality: 101}\n".into(),
            "jpegQuality",
        ),
        ("negative-retries", format!("  source: {{url: 'https://x.test/a.jpg'}}\n{out}  retries: -1\n"), "retries"),
        (
            "unknown-backend",
            format!("  source: {{url: 'https://x.test/a.jpg'}}\n{out}  pipeline: {{backgroundRemoval: {{backend: magic}}}}\n"),
            "Unsupported value: \"magic\"",
        ),
        (
            "onnx-without-model",
            format!("  source: {{url: 'https://x.test/a.jpg'}}\n{out}  pipeline: {{backgroundRemoval: {{backend: onnx}}}}\n"),
            "backgroundRemoval.onnx is required when backend is onnx",
        ),
        ("no-output", "  source: {url: 'https://x.test/a.jpg'}\n".into(), "output"),
    ];
    for (name, spec, want) in &cases {
        let (ok, stderr) = apply(&case, name, spec)?;
        assert!(!ok, "{name} was accepted");
        assert!(
            stderr.contains(want),
            "{name}: expected {want:?} in:\n{stderr}"
        );
    }
    // None of them exists; a valid one is accepted.
    let api: Api<ClothJob> = case.clothjobs();
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    let (ok, stderr) = apply(
        &case,
        "valid",
        &format!("  source: {{url: 'https://x.test/a.jpg'}}\n{out}"),
    )?;
    assert!(ok, "{stderr}");
    // The source is immutable once created.
    let (ok, stderr) = apply(
        &case,
        "valid",
        &format!("  source: {{url: 'https://x.test/b.jpg'}}\n{out}"),
    )?;
    assert!(
        !ok && stderr.contains("spec.source is immutable"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_documents_the_spec() -> Result<()> {
    let case = Case::new("explain").await?;
    let out = case
        .cp
        .kubectl()
        .args(["explain", "clothjob.spec"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for field in [
        "source",
        "output",
        "pipeline",
        "retries",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "runner",
    ] {
        assert!(text.contains(field), "explain lacks {field}:\n{text}");
    }
    assert!(text.contains("exactly one of"), "{text}");
    let out = case
        .cp
        .kubectl()
        .args(["explain", "clothjob.spec.output.jpegQuality"])
        .output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("JPEG quality (1-100)"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_may_patch_clothjob_status_and_nothing_more() -> Result<()> {
    let case = Case::new("rbac").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(200, 300)?, 0, Duration::ZERO).await?;
    let cj = format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: perms}}\nspec:\n  source: {{url: '{}'}}\n  output: {}\n  pipeline: {{backgroundRemoval: {{enabled: false}}, segmentation: {{enabled: false}}, expansion: {{enabled: false}}}}\n",
        src.url("photo.jpg"),
        case.output()
    );
    case.create(&cj).await?;
    // The operator makes the runner's own service account: its prefix and the Job's name.
    let clothjobs = case.clothjobs();
    let sas: Api<ServiceAccount> = Api::namespaced(case.client.clone(), &case.ns);
    let sa = clothjob_testenv::wait_for(
        "the runner's service account",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let Some(job) = clothjobs
                .get("perms")
                .await?
                .status
                .and_then(|s| s.job_name)
            else {
                return Ok(None);
            };
            let name = format!("{}{job}", clothjob_api::contract::RUNNER_SA_PREFIX);
            Ok(sas.get_opt(&name).await?.map(|_| name))
        },
    )
    .await?;
    let runner = case.cp.client_for_service_account(&case.ns, &sa).await?;
    let api: Api<ClothJob> = Api::namespaced(runner.clone(), &case.ns);
    api.get("perms")
        .await
        .context("runner reads its ClothJob")?;
    let body = serde_json::json!({
        "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
        "status": {"stage": "rbac-check"},
    });
    api.patch_status(
        "perms",
        &PatchParams::apply("rbac-test").force(),
        &Patch::Apply(&body),
    )
    .await
    .context("runner patches status")?;
    let denied = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let secrets: Api<Secret> = Api::namespaced(runner.clone(), &case.ns);
    assert!(
        denied(secrets.list(&ListParams::default()).await.map(|_| ())),
        "runner can list secrets"
    );
    assert!(
        denied(secrets.get("anything").await.map(|_| ())),
        "runner can read a secret"
    );
    let pods: Api<Pod> = Api::namespaced(runner.clone(), &case.ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sneaky"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))?;
    assert!(
        denied(pods.create(&PostParams::default(), &pod).await.map(|_| ())),
        "runner can create pods"
    );
    // Nor may it change the spec.
    let spec_patch = serde_json::json!({"spec": {"retries": 5}});
    assert!(denied(
        api.patch("perms", &PatchParams::default(), &Patch::Merge(&spec_patch))
            .await
            .map(|_| ())
    ));
    Ok(())
}
