//! Spawning child processes that do not outlive the test process, and stopping them.
//!
//! Every child is spawned from one long-lived "spawner" thread and, where util-linux
//! `setpriv --pdeathsig` is available, wrapped so that the kernel sends it SIGKILL when that
//! thread (i.e. the test process) dies. Linux delivers the parent-death signal when the *thread*
//! that forked the child exits, which is why spawning is not done from short-lived test threads.
//! This keeps the crate free of `unsafe` (no `pre_exec` + `prctl`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

type Reply = mpsc::Sender<std::io::Result<Child>>;

static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, Reply)>>> = OnceLock::new();
static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();

fn setpriv() -> Option<&'static Path> {
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| {
                    Command::new(p)
                        .args(["--pdeathsig", "KILL", "--", "true"])
                        .status()
                        .is_ok_and(|s| s.success())
                })
        })
        .as_deref()
}

/// A [`Command`] running `program`, wrapped in `setpriv --pdeathsig KILL` when available.
pub(crate) fn command(program: &Path) -> Command {
    match setpriv() {
        Some(sp) => {
            let mut cmd = Command::new(sp);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn spawner() -> &'static Mutex<mpsc::Sender<(Command, Reply)>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, Reply)>();
        let spawned = std::thread::Builder::new()
            .name("clothjob-testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

/// Spawns `cmd` from the long-lived spawner thread (see the module docs).
pub(crate) fn spawn(cmd: Command) -> Result<Child> {
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| anyhow!("spawner lock poisoned"))?
        .send((cmd, reply_tx))
        .map_err(|_| anyhow!("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| anyhow!("spawner thread is gone"))?
        .with_context(|| format!("spawning {what}"))
}

/// Sends `signal` to the process `pid` and, if `group` is set, to its process group.
pub(crate) fn signal(pid: u32, signal: Signal, group: bool) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if group {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
    let _ = kill(Pid::from_raw(raw), signal);
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; reaps it.
pub(crate) fn stop_child(child: &mut Child, grace: Duration, group: bool) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), Signal::SIGTERM, group);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    signal(child.id(), Signal::SIGKILL, group);
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops several children at once: SIGTERM to all, then SIGKILL to those still alive after `grace`.
pub(crate) fn stop_children(children: &mut [&mut Child], grace: Duration) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            signal(child.id(), Signal::SIGTERM, false);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|c| !matches!(c.try_wait(), Ok(None)))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
