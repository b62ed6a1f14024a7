//! Harness of the end-to-end tests: a real one-node cluster per test binary (kubelet,
//! containerd, runc) with the CRDs, the chart's RBAC and the runner image installed and an S3
//! server its pods reach; per test a namespace with its own bucket, the operator as a local
//! process with its own service account, and HTTP source servers exposed to the pods.

pub mod harness;
pub mod operator;
pub mod sample;
pub mod source_server;

pub use harness::{Case, wait_condition};
