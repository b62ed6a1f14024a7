//! The ClothJob custom resource (`closetconnect.io/v1alpha1`) and the contract shared by the
//! operator, the runner and the CLI: spec and status types, stage weights, condition helpers,
//! environment variable names and exit codes.

pub mod conditions;
pub mod contract;
pub mod progress;
pub mod spec;
pub mod status;

pub use spec::*;
pub use status::*;

/// The API group of every resource in this crate.
pub const GROUP: &str = "closetconnect.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

pub mod crd;
