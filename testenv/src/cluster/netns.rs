//! The cluster's private network + mount + UTS namespaces, held by one `sleep` process.
//!
//! Inside: `lo` with 127.0.0.1 and the node address, a route for the service range via `lo`, no
//! default route (nothing leaves the namespace); tmpfs over `/run`, `/var/lib`, `/var/log` and
//! `/opt` (the kubelet, containerd and CNI hard-code paths there); and the three sysctls the
//! kubelet insists on writing host-wide shown to it as plain files bind-mounted over their
//! `/proc/sys` entries. Nothing on the host changes.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc;
use crate::util::tail_file;

/// Sets the namespaces up, then writes its PID (the holder's) to `$2/netns.pid` and sleeps.
const SETUP: &str = r#"set -eu
cg="$1"; dir="$2"; node_ip="$3"; svc="$4"
for d in /sys/fs/cgroup/*/"$cg"; do echo $$ > "$d/cgroup.procs"; done
ip link set lo up
ip addr add "$node_ip/32" dev lo
ip route add "$svc" dev lo
echo clothjob-node > /proc/sys/kernel/hostname
for m in /run /var/lib /var/log /opt; do
  mkdir -p "$m"
  mount -t tmpfs -o mode=0755 tmpfs "$m"
done
mkdir -p "$dir/sysctl"
for kv in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do
  k="${kv%%=*}"; v="${kv#*=}"; f="$dir/sysctl/$(echo "$k" | tr / .)"
  echo "$v" > "$f"
  mount --bind "$f" "/proc/sys/$k"
done
echo $$ > "$dir/netns.pid.tmp"
mv "$dir/netns.pid.tmp" "$dir/netns.pid"
exec sleep infinity
"#;

/// The process holding the namespaces; killed on drop (with everything else in the cluster's
/// cgroup, see [`super::cgroups`]).
pub(crate) struct Netns {
    child: Child,
    holder_pid: u32,
}

impl Netns {
    /// Creates the namespaces; the holder joins `cgroup` (relative to each hierarchy).
    pub(crate) fn create(
        dir: &Path,
        cgroup: &str,
        node_ip: &str,
        service_cidr: &str,
    ) -> Result<Self> {
        let log = dir.join("netns.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = proc::command(Path::new("unshare"));
        cmd.args([
            "--net",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "--fork",
            "--kill-child",
            "--",
            "/bin/sh",
            "-c",
            SETUP,
            "sh",
            cgroup,
        ])
        .arg(dir)
        .args([node_ip, service_cidr])
        .env("PATH", super::SYSTEM_PATH)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        let mut child = proc::spawn(cmd).context("starting unshare")?;
        let pid_file: PathBuf = dir.join("netns.pid");
        let deadline = Instant::now() + Duration::from_secs(20);
        let holder_pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "setting up the cluster's namespaces failed ({status}): {}",
                    tail_file(&log, 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster's namespaces were not ready in 20 s: {}",
                    tail_file(&log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Netns { child, holder_pid })
    }

    /// PID of the holder (for `nsenter --target`).
    pub(crate) fn holder_pid(&self) -> u32 {
        self.holder_pid
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        proc::stop_child(&mut self.child, Duration::from_secs(1), false);
    }
}
