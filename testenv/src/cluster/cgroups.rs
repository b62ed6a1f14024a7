//! The cluster's own cgroup root (`/clothjob-<pid>-<n>` under every hierarchy): the kubelet's
//! `cgroupRoot`, and the home of every process of the cluster, so teardown can kill them all
//! (containerd's shims and containers included) and remove the cgroups, also those left by a
//! test process that died.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CGROUP_FS: &str = "/sys/fs/cgroup";
/// Prefix of the cgroup roots of clusters.
pub(crate) const PREFIX: &str = "clothjob-";

/// Every hierarchy mounted under `/sys/fs/cgroup` (cgroup v1 controllers, `systemd`, `unified`).
fn hierarchies() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(CGROUP_FS)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A cgroup root of one cluster.
#[derive(Debug)]
pub(crate) struct CgroupRoot {
    name: String,
}

impl CgroupRoot {
    /// Creates `/<name>` and `/<name>/system` in every hierarchy.
    pub(crate) fn create(name: &str) -> Result<Self> {
        let root = CgroupRoot {
            name: name.to_string(),
        };
        let hs = hierarchies();
        if !hs.iter().any(|h| h.ends_with("pids")) {
            bail!(
                "no cgroup v1 `pids` hierarchy under {CGROUP_FS}: the real node expects this machine's \
                 hybrid cgroup v1 layout"
            );
        }
        for h in &hs {
            for rel in [name.to_string(), format!("{name}/system")] {
                let dir = h.join(&rel);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
                if h.ends_with("cpuset") {
                    // A new cpuset is empty: no process may join until it has CPUs and nodes.
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let parent = dir.parent().map(|p| p.join(f));
                        if let Some(parent) = parent {
                            let v = std::fs::read_to_string(&parent)
                                .with_context(|| format!("reading {}", parent.display()))?;
                            std::fs::write(dir.join(f), v.trim())
                                .with_context(|| format!("writing {}/{f}", dir.display()))?;
                        }
                    }
                }
            }
        }
        Ok(root)
    }

    /// The kubelet's `cgroupRoot`: `/<name>`.
    pub(crate) fn kubelet_root(&self) -> String {
        format!("/{}", self.name)
    }

    /// Where the cluster's own processes live: `<name>/system` (relative).
    pub(crate) fn system(&self) -> String {
        format!("{}/system", self.name)
    }

    /// Kills every process under the root and removes the cgroups.
    pub(crate) fn destroy(&self) -> Result<()> {
        destroy(&self.name)
    }
}

/// All PIDs in the cgroup `dir` and below.
fn pids_below(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(pids_below(&e.path()));
            }
        }
    }
    out
}

/// Sub-directories of `dir`, deepest first, `dir` last.
fn dirs_deepest_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs_deepest_first(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn destroy(name: &str) -> Result<()> {
    let hs = hierarchies();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Freeze first where possible so nothing forks while we kill.
    let freezer = Path::new(CGROUP_FS).join("freezer").join(name);
    if freezer.join("freezer.state").exists() {
        let _ = std::fs::write(freezer.join("freezer.state"), "FROZEN");
    }
    loop {
        let mut pids: Vec<i32> = hs.iter().flat_map(|h| pids_below(&h.join(name))).collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if freezer.join("freezer.state").exists() {
            let _ = std::fs::write(freezer.join("freezer.state"), "THAWED");
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} in cgroup {name} survive SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut left = Vec::new();
    for h in &hs {
        let top = h.join(name);
        if !top.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        dirs_deepest_first(&top, &mut dirs);
        for d in dirs {
            // The kernel may take a moment to let go of a cgroup whose last task just died.
            let mut removed = false;
            while Instant::now() < deadline {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    removed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !removed {
                left.push(d);
            }
        }
    }
    if !left.is_empty() {
        bail!("cgroups left behind: {left:?}");
    }
    Ok(())
}

/// Waits for this test process to end, then kills what is left in cgroup `$2` and removes it
/// and the cluster directory `$3` (kept when it holds `.keep`).
const REAPER: &str = r#"pid="$1"; cg="$2"; dir="$3"
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
for i in $(seq 1 200); do
  left=$(find /sys/fs/cgroup/pids/"$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
  [ -z "$left" ] && break
  kill -9 $left 2>/dev/null
  sleep 0.05
done
for i in $(seq 1 50); do
  find /sys/fs/cgroup/*/"$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  ls -d /sys/fs/cgroup/*/"$cg" >/dev/null 2>&1 || break
  sleep 0.1
done
[ -e "$dir/.keep" ] || rm -rf "$dir"
"#;

/// Starts the reaper of this cluster: a detached shell that tears the cluster down once the
/// test process has ended, however it ended (a cluster in a `static` is never dropped; a
/// killed test process drops nothing).
pub(crate) fn spawn_reaper(root: &CgroupRoot, dir: &Path) -> Result<()> {
    std::process::Command::new("/bin/sh")
        .args(["-c", REAPER, "sh"])
        .arg(std::process::id().to_string())
        .arg(&root.name)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the cluster's reaper")?;
    Ok(())
}

/// Destroys the cgroup roots of clusters whose test process (`clothjob-<pid>-<n>`) is gone.
pub(crate) fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir(Path::new(CGROUP_FS).join("pids")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && let Err(e) = destroy(&name)
        {
            tracing::warn!("removing stale cluster cgroup {name}: {e:#}");
        }
    }
}
