//! Library side of `cargo xtask`: tasks that other Rust code (and tests) can call.
//!
//! - [`images`]: the operator and runner container images as deterministic OCI archives,
//!   built without a container engine (`cargo xtask images`).

pub mod images;
