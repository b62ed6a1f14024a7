//! `clothjob-operator smoke-test`: the chart's `helm test`. Submits a tiny ClothJob (the sample
//! photo in a ConfigMap, outputs inside the runner pod) in its own namespace, waits for it to
//! complete, prints what happened, and cleans up; exits non-zero with the job's reason if it
//! fails or does not finish in time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use clothjob_api::{ClothJob, conditions};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// The sample photo the smoke test submits (examples/tshirt.jpg, 17 KB).
const PHOTO: &[u8] = include_bytes!("../../examples/tshirt.jpg");

/// Settings of the smoke test.
#[derive(Parser, Debug)]
#[command(
    name = "clothjob-operator smoke-test",
    about = "Runs a tiny ClothJob to completion"
)]
pub struct SmokeConfig {
    /// Namespace to run the ClothJob in (the pod's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,

    /// Name of the ClothJob and of its photo ConfigMap.
    #[arg(long, default_value = "clothjob-smoke-test")]
    pub name: String,

    /// Seconds to wait for the ClothJob to finish.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

/// Why the smoke test failed.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    /// The apiserver refused a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The ClothJob failed.
    #[error("the ClothJob failed: {reason}: {message}")]
    JobFailed {
        /// `.status.reason`.
        reason: String,
        /// `.status.message`.
        message: String,
    },
    /// The ClothJob did not finish in time.
    #[error(
        "the ClothJob did not finish in {0:?} (phase {1}); is the operator running and watching this namespace?"
    )]
    TimedOut(Duration, String),
    /// The manifest could not be built.
    #[error("building the ClothJob: {0}")]
    Manifest(#[from] serde_json::Error),
}

fn api(action: &'static str) -> impl FnOnce(kube::Error) -> SmokeError {
    move |source| SmokeError::Api { action, source }
}

/// Runs the smoke test; cleans up whatever the outcome.
pub async fn run(client: kube::Client, cfg: &SmokeConfig) -> Result<(), SmokeError> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &cfg.namespace);
    let jobs: Api<ClothJob> = Api::namespaced(client, &cfg.namespace);
    let outcome = submit_and_wait(&cms, &jobs, cfg).await;
    let dp = DeleteParams::background();
    if let Err(e) = jobs.delete(&cfg.name, &dp).await {
        println!("clean-up: ClothJob {}: {e}", cfg.name);
    }
    if let Err(e) = cms.delete(&cfg.name, &dp).await {
        println!("clean-up: ConfigMap {}: {e}", cfg.name);
    }
    outcome
}

async fn submit_and_wait(
    cms: &Api<ConfigMap>,
    jobs: &Api<ClothJob>,
    cfg: &SmokeConfig,
) -> Result<(), SmokeError> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(
            "photo.jpg".to_string(),
            ByteString(PHOTO.to_vec()),
        )])),
        ..Default::default()
    };
    // A left-over from an interrupted run is replaced.
    let _ = jobs.delete(&cfg.name, &DeleteParams::foreground()).await;
    let _ = cms.delete(&cfg.name, &DeleteParams::default()).await;
    cms.create(&PostParams::default(), &cm)
        .await
        .map_err(api("creating the photo ConfigMap"))?;
    let cj: ClothJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "closetconnect.io/v1alpha1",
        "kind": "ClothJob",
        "metadata": {"name": cfg.name},
        "spec": {
            "source": {"configMapRef": {"name": cfg.name, "key": "photo.jpg"}},
            "output": {"uri": "file:///tmp/clothjob-smoke-test", "maxSide": 256},
            "retries": 0,
        }
    }))?;
    let started = Instant::now();
    let timeout = Duration::from_secs(cfg.timeout_seconds);
    // The CRD may still be settling right after `helm install`: retry creation briefly.
    loop {
        match jobs.create(&PostParams::default(), &cj).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 404 && started.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(SmokeError::Api {
                    action: "creating the ClothJob",
                    source: e,
                });
            }
        }
    }
    println!("submitted ClothJob {}/{}", cfg.namespace, cfg.name);
    let mut last = String::new();
    loop {
        let cj = jobs
            .get(&cfg.name)
            .await
            .map_err(api("reading the ClothJob"))?;
        let s = cj.status.unwrap_or_default();
        let phase = s
            .phase
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "Pending".into());
        let line = format!(
            "{phase} {}% {}",
            s.progress.unwrap_or(0),
            s.stage.as_deref().unwrap_or("")
        );
        if line != last {
            println!("{:>6.1}s {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        let conds = s.conditions.unwrap_or_default();
        if conditions::is_true(&conds, conditions::COMPLETE) {
            let outputs = s.outputs.unwrap_or_default();
            println!(
                "completed with {} outputs in {:.1}s",
                outputs.len(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if conditions::is_true(&conds, conditions::FAILED) {
            return Err(SmokeError::JobFailed {
                reason: s.reason.unwrap_or_default(),
                message: s.message.unwrap_or_default(),
            });
        }
        if started.elapsed() > timeout {
            return Err(SmokeError::TimedOut(timeout, phase));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
