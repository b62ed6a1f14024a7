//! Library side of `cargo xtask`: tasks that other Rust code (and tests) can call.
//!
//! - [`images`]: the operator and runner container images as deterministic OCI archives,
//!   built without a container engine (`cargo xtask images`).
//! - [`dashboard`]: README's dashboard picture, drawn from a real run's Prometheus data
//!   (`cargo xtask dashboard-picture`).
//! - [`lanes`]: `cargo xtask test`'s test run in concurrent lanes.

pub mod dashboard;
pub mod images;
pub mod lanes;

/// The workspace root.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
