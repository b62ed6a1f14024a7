//! Errors of the plugin's commands, each mapped to an exit code: 1 a failed job or command,
//! 2 a usage error, 3 a time-out.

/// Exit code of a command that worked (and, for `watch`, a job that succeeded).
pub const EXIT_OK: i32 = 0;
/// Exit code of a failed job or a command that could not do its work.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a usage error (bad flags or arguments; clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when `--timeout` passed before the job finished.
pub const EXIT_TIMEOUT: i32 = 3;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The kubeconfig could not be loaded.
    #[error("loading the kubeconfig: {0}")]
    LoadKubeconfig(String),
    /// A request to the apiserver failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done, for example "creating ClothJob tshirt".
        action: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The ClothJob does not exist.
    #[error("ClothJob {name} not found in namespace {namespace}")]
    NotFound {
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The ClothJob finished Failed (or was deleted while watched).
    #[error("ClothJob {name} failed: {reason}: {message}")]
    JobFailed {
        /// Its name.
        name: String,
        /// The status reason (BadInput, Cancelled, ...).
        reason: String,
        /// The status message.
        message: String,
    },
    /// The command cannot act on the ClothJob in its present state.
    #[error("{0}")]
    WrongState(String),
    /// `--timeout` passed (exit 3).
    #[error("timed out after {0:?} waiting for ClothJob {1}")]
    TimedOut(std::time::Duration, String),
    /// Reading or writing an object store failed.
    #[error("{action}: {detail}")]
    Store {
        /// What was being done.
        action: String,
        /// Why it failed.
        detail: String,
    },
    /// A downloaded output is not what the status says.
    #[error("{uri}: {detail}")]
    Checksum {
        /// The output's URI.
        uri: String,
        /// Expected and actual sha256 or size.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Printing a result as JSON or YAML failed.
    #[error("encoding the result: {0}")]
    Encode(String),
}

impl CommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Usage(_) => EXIT_USAGE,
            CommandError::TimedOut(..) => EXIT_TIMEOUT,
            _ => EXIT_FAILED,
        }
    }

    /// An apiserver error while doing `action`.
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| CommandError::Api { action, source }
    }

    /// An I/O error while doing `action`.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| CommandError::Io { action, source }
    }
}

/// Whether a client error is the apiserver's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
