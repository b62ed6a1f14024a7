//! TCP forwards across the cluster's network namespace, through Unix sockets in the cluster's
//! directory (a Unix socket is a file, so both sides reach it): `socat` on each side.
//!
//! - [`Forward::into_netns`]: a loopback port on the host reaches an address inside (the test
//!   process's clients reach the apiserver this way);
//! - [`Forward::out_of_netns`]: an address inside reaches a loopback port on the host (pods reach
//!   a server the test runs on the host this way).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::launcher::Launcher;
use crate::proc;
use crate::util::free_port;

/// A forward: two `socat` processes, stopped on drop.
pub struct Forward {
    children: Vec<Child>,
    /// The listening side: `127.0.0.1:<port>` on the host, or `<node ip>:<port>` inside.
    pub listen: String,
}

fn socat(launcher: &Launcher, args: [String; 2], log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut cmd = launcher.command(Path::new("/usr/bin/socat"));
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    proc::spawn(cmd).context("starting socat")
}

fn wait_socket(path: &Path, children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("socat exited early ({status})");
            }
        }
        if Instant::now() > deadline {
            bail!("socat did not create {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Forward {
    /// Listens on `127.0.0.1:<free port>` on the host and forwards to `target` (`ip:port`)
    /// inside the namespaces of `inside`.
    pub(crate) fn into_netns(
        inside: &Launcher,
        dir: &Path,
        name: &str,
        target: &str,
    ) -> Result<Self> {
        let sock: PathBuf = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut children = vec![socat(
            inside,
            [
                format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()),
                format!("TCP:{target}"),
            ],
            &log,
        )?];
        wait_socket(&sock, &mut children)?;
        let port = free_port()?;
        children.push(socat(
            &Launcher::Host,
            [
                format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
                format!("UNIX-CONNECT:{}", sock.display()),
            ],
            &log,
        )?);
        let fwd = Forward {
            children,
            listen: format!("127.0.0.1:{port}"),
        };
        fwd.wait_listening(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())?;
        Ok(fwd)
    }

    /// Listens on `listen` (`ip:port`) inside the namespaces of `inside` and forwards to
    /// `127.0.0.1:<host_port>` on the host.
    pub(crate) fn out_of_netns(
        inside: &Launcher,
        dir: &Path,
        name: &str,
        listen: &str,
        host_port: u16,
    ) -> Result<Self> {
        let sock: PathBuf = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut children = vec![socat(
            &Launcher::Host,
            [
                format!("UNIX-LISTEN:{},fork,unlink-early", sock.display()),
                format!("TCP:127.0.0.1:{host_port}"),
            ],
            &log,
        )?];
        wait_socket(&sock, &mut children)?;
        let (ip, port) = listen
            .rsplit_once(':')
            .with_context(|| format!("{listen} is not ip:port"))?;
        children.push(socat(
            inside,
            [
                format!("TCP-LISTEN:{port},bind={ip},reuseaddr,fork"),
                format!("UNIX-CONNECT:{}", sock.display()),
            ],
            &log,
        )?);
        Ok(Forward {
            children,
            listen: listen.to_string(),
        })
    }

    fn wait_listening(&self, probe: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe() {
            if Instant::now() > deadline {
                bail!("forward to {} is not listening", self.listen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let mut children: Vec<&mut Child> = self.children.iter_mut().collect();
        proc::stop_children(&mut children, Duration::from_secs(1));
    }
}
