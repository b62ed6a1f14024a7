//! The ClothJob operator: reconciles each ClothJob into one batch/v1 Job running the runner,
//! and reports the job's lifecycle (conditions, phase, attempts, times) and Events.

pub mod access;
pub mod config;
pub mod decide;
pub mod error;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod own_writes;
pub mod pods;
pub mod queue;
pub mod reconcile;
pub mod reuse;
pub mod server;
pub mod smoke;
