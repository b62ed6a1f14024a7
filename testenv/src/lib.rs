//! Test support for end-to-end tests of the clothjob operator.
//!
//! It runs a real `etcd` + `kube-apiserver` (RBAC on) + `kube-controller-manager` on loopback
//! ([`ControlPlane`]); a real one-node cluster (that control plane plus kube-scheduler,
//! kube-proxy, a kubelet, containerd and runc) in private namespaces ([`Cluster`]); a fake
//! kubelet that runs pods as local processes, for fast tests of the test support itself
//! ([`FakeNode`]); and an S3-compatible server backed by a directory ([`S3Server`], `s3s-fs`).
//!
//! Binaries are located or built by the [`bins`] module.
//!
//! ```no_run
//! use std::time::Duration;
//! use clothjob_testenv::{ControlPlane, FakeNode, NodeConfig, wait_for};
//! use k8s_openapi::api::batch::v1::Job;
//! use kube::api::{Api, PostParams};
//!
//! # async fn example(job: Job) -> anyhow::Result<()> {
//! let cp = ControlPlane::shared().await?; // one per test binary; or ControlPlane::start()
//! cp.install_crds(clothjob_testenv::bins::workspace_root().join("crds")).await?;
//! let ns = cp.create_namespace("my-test").await?;
//! let node = FakeNode::start(cp, NodeConfig::new().namespace(&ns)
//!     .image("ghcr.io/example/runner:dev", "/path/to/clothjob-runner")).await?;
//! let jobs: Api<Job> = Api::namespaced(cp.client().await?, &ns);
//! jobs.create(&PostParams::default(), &job).await?;
//! wait_for("job done", Duration::from_secs(60), Duration::from_millis(200), || async {
//!     let s = jobs.get("name").await?.status.unwrap_or_default();
//!     Ok((s.succeeded == Some(1)).then_some(()))
//! }).await?;
//! println!("{}", node.logs(&ns, "pod-name"));
//! # Ok(()) }
//! ```
//!
//! Environment variables honoured:
//! - `CLOTHJOB_K8S_BIN_DIR`: directory holding `etcd`, `kube-apiserver`,
//!   `kube-controller-manager` and `kubectl` (checked first, per binary);
//! - `KUBEBUILDER_ASSETS`: envtest assets directory (checked second, per binary);
//! - `XDG_CACHE_HOME` (or `HOME`): the build cache lives in `${XDG_CACHE_HOME:-~/.cache}/clothjob`;
//! - `CLOTHJOB_KEEP_TESTENV=1`: keep the temporary directories (logs, certs, pod dirs) and print
//!   their paths;
//! - `CLOTHJOB_TESTENV_START_TIMEOUT`: seconds to wait for the control plane (default 120);
//! - `RUST_LOG`, `RUST_BACKTRACE`, `LLVM_PROFILE_FILE`: passed through to pod processes.

pub mod bins;
mod certs;
pub mod cluster;
mod control_plane;
mod kubeconfig;
mod launcher;
pub mod node;
mod proc;
mod s3;
mod util;

pub use bins::{
    K8sBins, NodeBins, ensure_helm, ensure_k8s_binaries, ensure_node_binaries, ensure_s3_server,
};
pub use cluster::Cluster;
pub use control_plane::ControlPlane;
pub use node::{FakeNode, NodeConfig};
pub use s3::S3Server;
pub use util::{run_checked, wait_for};
