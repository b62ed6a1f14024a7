//! Where a component process runs: on the host (loopback control plane), or inside a real
//! cluster's private network + mount + UTS namespaces, in the cluster's own cgroup.

use std::path::Path;
use std::process::Command;

use crate::proc;

/// Joins every cgroup v1/v2 hierarchy's `$1` directory, then execs the rest of the arguments.
const JOIN_CGROUP: &str = r#"cg="$1"; shift
for d in /sys/fs/cgroup/*/"$cg"; do echo $$ > "$d/cgroup.procs" || exit 111; done
exec "$@""#;

/// How component processes are started.
#[derive(Clone, Debug, Default)]
pub(crate) enum Launcher {
    /// A plain child process on the host.
    #[default]
    Host,
    /// A child process entered into the namespaces of `holder_pid` and the cgroup `cgroup`
    /// (a path relative to each hierarchy's root, e.g. `clothjob-123-0/system`).
    Netns {
        /// PID of the process holding the namespaces.
        holder_pid: u32,
        /// Cgroup the process joins before it execs.
        cgroup: String,
    },
}

impl Launcher {
    /// A [`Command`] running `program` (with the parent-death signal, see [`proc::command`]).
    pub(crate) fn command(&self, program: &Path) -> Command {
        match self {
            Launcher::Host => proc::command(program),
            Launcher::Netns { holder_pid, cgroup } => {
                let mut cmd = proc::command(Path::new("/bin/sh"));
                cmd.args(["-c", JOIN_CGROUP, "sh", cgroup.as_str(), "nsenter"])
                    .arg(format!("--target={holder_pid}"))
                    .args(["--net", "--mount", "--uts", "--"])
                    .arg(program)
                    .env("PATH", crate::cluster::SYSTEM_PATH);
                cmd
            }
        }
    }

    /// Whether processes run inside a cluster's namespaces.
    pub(crate) fn in_netns(&self) -> bool {
        matches!(self, Launcher::Netns { .. })
    }
}
