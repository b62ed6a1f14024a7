//! The s3s-fs server accepts signed S3 requests: put and get an object with `object_store`.

use bytes::Bytes;
use clothjob_testenv::S3Server;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;

#[tokio::test]
async fn put_and_get_object() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let s3 = S3Server::start(root.path()).await?;
    s3.create_bucket("test-bucket")?;
    let store = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name("test-bucket")
        .with_region(s3.region())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_virtual_hosted_style_request(false)
        .build()?;
    let path = Path::from("dir/hello.txt");
    store
        .put(&path, Bytes::from_static(b"hello s3").into())
        .await?;
    let got = store.get(&path).await?.bytes().await?;
    assert_eq!(&got[..], b"hello s3");
    assert!(root.path().join("test-bucket/dir/hello.txt").exists());
    Ok(())
}
