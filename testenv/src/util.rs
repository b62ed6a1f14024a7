//! Small helpers: free loopback ports, temp dirs, log tails and polling with a timeout.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Prefix of every temporary directory created by this crate.
pub(crate) const TMP_PREFIX: &str = "clothjob-testenv-";

/// Picks a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `CLOTHJOB_KEEP_TESTENV=1` asks to keep temporary directories.
pub(crate) fn keep_testenv() -> bool {
    std::env::var("CLOTHJOB_KEEP_TESTENV").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Creates a temporary directory `clothjob-testenv-<pid>-<what>-XXXX` in the system temp dir,
/// after removing stale ones left behind by test processes that no longer exist
/// (a shared control plane lives in a `static` and is never dropped).
pub(crate) fn make_temp_dir(what: &str) -> Result<tempfile::TempDir> {
    sweep_stale_dirs();
    tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{}-{what}-", std::process::id()))
        .tempdir()
        .context("creating temporary directory")
}

fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && !entry.path().join(".keep").exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Turns a temp dir into a plain path that is removed (or kept, see [`keep_testenv`]) later.
pub(crate) fn persist_temp_dir(dir: tempfile::TempDir) -> PathBuf {
    dir.keep()
}

/// Removes `dir` unless `CLOTHJOB_KEEP_TESTENV=1`, in which case its path is printed.
pub(crate) fn remove_or_keep(dir: &Path, what: &str) {
    if keep_testenv() {
        let _ = std::fs::write(dir.join(".keep"), b"");
        eprintln!(
            "clothjob-testenv: keeping {what} directory {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Last `max_lines` lines of a text file (empty if unreadable).
pub(crate) fn tail_file(path: &Path, max_lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

/// Polls `check` every `interval` until it returns `Ok(Some(v))` or `timeout` elapses.
///
/// `Ok(None)` means "not yet"; an `Err` is remembered and reported if the timeout elapses.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs `cmd` to completion: its stdout, or an error naming `what` with its status and
/// output.
pub fn run_checked(what: &str, cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
