//! End-to-end on the real node: sources and outputs in an S3-compatible store (s3s-fs on the
//! host, exposed to the pods) and a source held in a Secret, mounted by the kubelet.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::conditions;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::{Case, wait_condition};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_and_outputs() -> Result<()> {
    // The case's bucket and its `s3-creds` Secret (endpoint http://198.18.0.2:9000).
    let case = Case::new("s3").await?;
    let bucket = &case.bucket;
    let upload = case.s3_path(&format!("s3://{bucket}/uploads/tshirt.jpg"))?;
    std::fs::create_dir_all(upload.parent().context("upload dir")?)?;
    let photo = tshirt_jpeg(400, 500)?;
    std::fs::write(&upload, &photo)?;
    case.create(&format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: from-s3}}\nspec:\n  source: {{uri: 's3://{bucket}/uploads/tshirt.jpg'}}\n  output: {{uri: 's3://{bucket}/catalog/', credentialsSecretName: s3-creds}}\n",
    ))
    .await?;
    let cj = wait_condition(
        &case.clothjobs(),
        "from-s3",
        conditions::COMPLETE,
        Duration::from_secs(120),
    )
    .await
    .with_context(|| case.diagnostics())?;
    let uid = cj.metadata.uid.clone().context("uid")?;
    let outputs = cj.status.and_then(|s| s.outputs).unwrap_or_default();
    assert_eq!(outputs.len(), 7);
    // The runner's record of the attempt, beside the outputs (it outlives the ClothJob).
    let record: serde_json::Value = serde_json::from_slice(&case.read_output(&format!(
        "s3://{bucket}/catalog/{}/from-s3/{uid}/status.json",
        case.ns
    ))?)?;
    assert_eq!(record["kind"], "ClothJobResult", "{record}");
    assert_eq!(record["outcome"], "Succeeded", "{record}");
    assert_eq!(record["uid"], uid.as_str());
    assert_eq!(
        record["outputs"],
        serde_json::to_value(&outputs)?,
        "the record lists the status's outputs"
    );
    assert_eq!(
        record["source"]["sha256"],
        hex::encode(Sha256::digest(&photo))
    );
    for o in outputs {
        let key = o
            .uri
            .strip_prefix(&format!("s3://{bucket}/"))
            .context("s3 uri")?;
        assert!(
            key.starts_with(&format!("catalog/{}/from-s3/", case.ns)),
            "{key}"
        );
        let bytes = case.read_output(&o.uri)?;
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_in_a_secret_is_mounted_for_the_runner() -> Result<()> {
    let case = Case::new("secret").await?;
    let photo = tshirt_jpeg(300, 400)?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "photos", "namespace": case.ns},
        "data": {"shirt.jpg": BASE64_STANDARD.encode(&photo)},
    });
    case.cp.apply_yaml(&serde_json::to_string(&secret)?).await?;
    let cj = format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: from-secret}}\nspec:\n  source: {{secretRef: {{name: photos, key: shirt.jpg}}}}\n  output: {}\n  pipeline: {{expansion: {{enabled: false}}}}\n",
        case.output()
    );
    case.create(&cj).await?;
    let cj = wait_condition(
        &case.clothjobs(),
        "from-secret",
        conditions::COMPLETE,
        Duration::from_secs(120),
    )
    .await
    .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    let original = status
        .outputs
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.name == "original")
        .context("original")?;
    assert_eq!((original.width, original.height), (300, 400));
    // The original written to S3 is the Secret's photo.
    let bytes = case.read_output(&original.uri)?;
    assert_eq!(hex::encode(Sha256::digest(&bytes)), original.sha256);
    Ok(())
}
