//! End-to-end: sources and outputs in an S3-compatible store (s3s-fs on loopback) and a
//! source held in a Secret.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::conditions;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::S3Server;
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_source_and_outputs() -> Result<()> {
    let case = Case::new("s3").await?;
    let s3 = S3Server::start(case.dir.path().join("s3")).await?;
    let bucket = s3.create_bucket("closet")?;
    std::fs::create_dir_all(bucket.join("uploads"))?;
    std::fs::write(bucket.join("uploads/tshirt.jpg"), tshirt_jpeg(400, 500)?)?;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s3-creds, namespace: {}}}\nstringData:\n  AWS_ACCESS_KEY_ID: {}\n  AWS_SECRET_ACCESS_KEY: {}\n  AWS_REGION: {}\n  AWS_ENDPOINT: {}\n  AWS_ALLOW_HTTP: 'true'\n",
        case.ns,
        s3.access_key(),
        s3.secret_key(),
        s3.region(),
        s3.endpoint()
    );
    case.cp.apply_yaml(&secret).await?;
    case.create(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: from-s3}\nspec:\n  source: {uri: 's3://closet/uploads/tshirt.jpg'}\n  output: {uri: 's3://closet/catalog/', credentialsSecretName: s3-creds}\n",
    )
    .await?;
    let cj = wait_condition(
        &case.clothjobs(),
        "from-s3",
        conditions::COMPLETE,
        Duration::from_secs(120),
    )
    .await
    .with_context(|| case.diagnostics())?;
    let outputs = cj.status.and_then(|s| s.outputs).unwrap_or_default();
    assert_eq!(outputs.len(), 7);
    for o in outputs {
        let key = o.uri.strip_prefix("s3://closet/").context("s3 uri")?;
        assert!(
            key.starts_with(&format!("catalog/{}/from-s3/", case.ns)),
            "{key}"
        );
        let bytes = std::fs::read(bucket.join(key)).with_context(|| o.uri.clone())?;
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
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: from-secret}}\nspec:\n  source: {{secretRef: {{name: photos, key: shirt.jpg}}}}\n  output: {{uri: '{}'}}\n  pipeline: {{expansion: {{enabled: false}}}}\n",
        case.output_uri()
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
    Ok(())
}
