//! Harness of the end-to-end tests: a shared real control plane with the CRDs and the chart's
//! RBAC installed, and per test a namespace, a fake node running pods as local processes, the
//! operator as a local process with its own service account, and an HTTP source server.

pub mod harness;
pub mod operator;
pub mod sample;
pub mod source_server;

pub use harness::{Case, wait_condition};
