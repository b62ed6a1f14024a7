//! `cargo xtask demo`: the whole system locally on built-in defaults: a real control plane,
//! the operator, the sample ClothJob with the bundled photo, live progress until it completes,
//! then where the outputs are.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_e2e::harness::{SYSTEM_NAMESPACE, setup};
use clothjob_e2e::operator::OperatorProcess;
use clothjob_testenv::{ControlPlane, FakeNode, NodeConfig};
use kube::Api;

use crate::root;

/// Runs the demo.
pub fn run() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(demo())
}

async fn demo() -> Result<()> {
    let started = Instant::now();
    println!("starting a local control plane (etcd, kube-apiserver, kube-controller-manager)...");
    let cp = ControlPlane::start().await?;
    let b = setup(&cp).await?;
    let ns = "demo";
    cp.apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    ))
    .await?;
    let _node = FakeNode::start(
        &cp,
        NodeConfig::new()
            .namespace(ns)
            .image(contract::DEFAULT_RUNNER_IMAGE, &b.runner),
    )
    .await?;
    let work = root().join("target/demo");
    std::fs::create_dir_all(&work)?;
    let kubeconfig = cp
        .write_kubeconfig_for_service_account(SYSTEM_NAMESPACE, "clothjob-operator")
        .await?;
    let _operator =
        OperatorProcess::start(&b.operator, &kubeconfig, ns, &work.join("operator.log")).await?;
    println!(
        "control plane and operator ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The sample photo goes into a ConfigMap; the example's outputs go under target/demo.
    let photo = std::fs::read(root().join("examples/tshirt.jpg"))?;
    let cm = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "tshirt-photo", "namespace": ns},
        "binaryData": {"tshirt.jpg": BASE64_STANDARD.encode(&photo)},
    });
    cp.apply_yaml(&serde_json::to_string(&cm)?).await?;
    let out_dir = work.join("outputs").canonicalize().or_else(|_| {
        std::fs::create_dir_all(work.join("outputs"))?;
        work.join("outputs").canonicalize()
    })?;
    let manifest = std::fs::read_to_string(root().join("examples/clothjob.yaml"))?.replace(
        "file:///tmp/clothjob-outputs",
        &format!("file://{}", out_dir.display()),
    );
    let path = work.join("clothjob.yaml");
    std::fs::write(&path, manifest)?;
    println!("$ kubectl apply -f examples/clothjob.yaml");
    let out = cp
        .kubectl()
        .args(["apply", "-n", ns, "-f"])
        .arg(&path)
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    let api: Api<ClothJob> = Api::namespaced(cp.client().await?, ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    let cj = loop {
        let cj = api.get("tshirt").await?;
        let s = cj.status.clone().unwrap_or_default();
        let p = s.progress.unwrap_or(0).clamp(0, 100) as usize;
        let line = format!(
            "\r[{}{}] {:>3}% {:<18} attempt {}",
            "#".repeat(p * 40 / 100),
            " ".repeat(40 - p * 40 / 100),
            p,
            s.stage.as_deref().unwrap_or("pending"),
            s.attempts.unwrap_or(0)
        );
        if line != last {
            print!("{line}");
            std::io::stdout().flush()?;
            last = line;
        }
        let conds = s.conditions.unwrap_or_default();
        if conditions::is_true(&conds, conditions::COMPLETE)
            || conditions::is_true(&conds, conditions::FAILED)
        {
            println!();
            break cj;
        }
        if Instant::now() > deadline {
            bail!(
                "the demo job did not finish in time; see {}",
                work.join("operator.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = cp
        .kubectl()
        .args(["get", "clothjobs", "-n", ns, "-o", "wide"])
        .output()?;
    println!(
        "$ kubectl get clothjobs -o wide\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let s = cj.status.context("status")?;
    if s.phase.map(|p| p.as_str()) != Some("Succeeded") {
        bail!("the job failed: {}", s.message.unwrap_or_default());
    }
    println!("{:<20} {:>9}", "stage", "seconds");
    for st in s.stages.unwrap_or_default() {
        println!(
            "{:<20} {:>9.3}",
            st.name,
            st.duration_ms.unwrap_or(0) as f64 / 1000.0
        );
    }
    println!("\noutputs:");
    for o in s.outputs.unwrap_or_default() {
        println!(
            "  {:<9} {:>5}x{:<5} {:>8} B  {}",
            o.name, o.width, o.height, o.bytes, o.uri
        );
    }
    println!(
        "\ndone in {:.1} s; outputs in {}",
        started.elapsed().as_secs_f64(),
        out_dir.join(ns).join("tshirt").display()
    );
    Ok(())
}
