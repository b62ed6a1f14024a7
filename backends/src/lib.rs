//! Network backends of the clothjob pipeline.
//!
//! - [`remote`]: background removal by rembg's HTTP server (`rembg s`,
//!   `POST {url}/api/remove`), a [`clothjob_pipeline::matte::BackgroundRemover`].
//! - [`gemini`]: catalog expansion by Gemini's `generateContent` REST API
//!   (image in, image out), with retries, back-off and a request-size cap; a
//!   [`clothjob_pipeline::Expander`].
//! - [`netguard`]: the request-forgery guard every outbound request goes
//!   through: only public addresses, unless the operator allowed more
//!   ([`NetworkPolicy`]).
//!
//! The two backends are synchronous (`reqwest::blocking`): call them from a blocking thread
//! (`tokio::task::spawn_blocking`), never from inside an async task.

pub mod gemini;
pub mod netguard;
pub mod remote;

pub use gemini::{ExpandRequest, Expansion, GeminiConfig, GeminiError, GeminiExpander};
pub use netguard::{ConnectRefused, NetworkPolicy, ParseNetworksError};
pub use remote::{AlphaMattingThresholds, RemoteRemover};
