//! An S3-compatible server for tests: the `s3s-fs` binary (see [`crate::ensure_s3_server`])
//! serving a directory on a free loopback port. Buckets are directories under the root.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::util::{
    free_port, make_temp_dir, persist_temp_dir, remove_or_keep, tail_file, wait_for,
};
use crate::{bins, proc};

/// A running `s3s-fs`; killed on drop (the data root is left alone, the log dir is removed).
pub struct S3Server {
    child: Mutex<Child>,
    endpoint: String,
    root: PathBuf,
    log_dir: PathBuf,
}

impl S3Server {
    /// Access key accepted by the server.
    pub const ACCESS_KEY: &'static str = "clothjob-test";
    /// Secret key accepted by the server.
    pub const SECRET_KEY: &'static str = "clothjob-test-secret";
    /// Region to sign requests with (not checked by the server beyond the signature).
    pub const REGION: &'static str = "us-east-1";

    /// Starts `s3s-fs` serving `root` (created if missing) on `127.0.0.1:<free port>`.
    pub async fn start(root: impl AsRef<Path>) -> Result<S3Server> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let bin = tokio::task::spawn_blocking(bins::ensure_s3_server)
            .await
            .context("s3s-fs lookup task panicked")??;
        let log_dir = persist_temp_dir(make_temp_dir("s3")?);
        let log = log_dir.join("s3s-fs.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let port = free_port()?;
        let mut cmd = proc::command(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                Self::ACCESS_KEY,
                "--secret-key",
                Self::SECRET_KEY,
            ])
            .arg(&root)
            .env_clear()
            .env(
                "RUST_LOG",
                std::env::var("CLOTHJOB_S3_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = proc::spawn(cmd).context("starting s3s-fs")?;
        let server = S3Server {
            child: Mutex::new(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            log_dir,
        };
        wait_for(
            "s3s-fs to listen",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                if let Ok(Some(status)) = server
                    .child
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .try_wait()
                {
                    bail!("s3s-fs exited ({status}): {}", tail_file(&log, 20));
                }
                Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
            },
        )
        .await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>` (path-style requests).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Access key id.
    pub fn access_key(&self) -> &str {
        Self::ACCESS_KEY
    }

    /// Secret access key.
    pub fn secret_key(&self) -> &str {
        Self::SECRET_KEY
    }

    /// Region.
    pub fn region(&self) -> &str {
        Self::REGION
    }

    /// Data root (one directory per bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket (a directory under the root) and returns its path.
    pub fn create_bucket(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating bucket dir {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            proc::stop_child(&mut child, Duration::from_secs(2), false);
        }
        remove_or_keep(&self.log_dir, "s3s-fs log");
    }
}
