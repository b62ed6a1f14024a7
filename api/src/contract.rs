//! Names both sides agree on: environment variables given to the runner pod, exit codes,
//! field managers, labels and annotations.

/// Env var: namespace of the ClothJob the runner works for.
pub const ENV_NAMESPACE: &str = "CLOTHJOB_NAMESPACE";
/// Env var: name of the ClothJob the runner works for.
pub const ENV_NAME: &str = "CLOTHJOB_NAME";
/// Env var: uid of the ClothJob (guards against a recreated object of the same name).
pub const ENV_UID: &str = "CLOTHJOB_UID";
/// Env var: the attempt number (1-based) as the operator last saw it; informational.
pub const ENV_POD_NAME: &str = "POD_NAME";

/// The runner exits with this code when the input can never succeed (not an image, too large,
/// unsupported source): the Job's podFailurePolicy fails the Job at once instead of retrying.
pub const EXIT_BAD_INPUT: i32 = 42;
/// The runner exits with this code when the ClothJob's spec can never work (a missing model
/// file, an option the backend rejects, a missing key): the Job fails at once, reason
/// `InvalidSpec`.
pub const EXIT_INVALID_SPEC: i32 = 43;
/// The runner exits with this code on failures worth retrying (network, object store, apiserver).
pub const EXIT_TRANSIENT: i32 = 75;

/// Env var: the networks and hosts the runner may reach although they are not public
/// (comma-separated CIDRs such as `127.0.0.0/8` and host names), from the operator's
/// `--allowed-networks`. Unset: only public addresses.
pub const ENV_ALLOWED_NETWORKS: &str = "CLOTHJOB_ALLOWED_NETWORKS";
/// Env var of the runner: the W3C trace context (`traceparent`) of the job, so the
/// operator's and the runner's logs of one ClothJob share one trace id.
pub const ENV_TRACEPARENT: &str = "TRACEPARENT";
/// Annotation on a ClothJob carrying the W3C `traceparent` of the request that made it (for
/// example set by the service that submitted the job); passed to the runner as
/// [`ENV_TRACEPARENT`]. Without a valid one, the trace id is the ClothJob's uid.
pub const TRACEPARENT_ANNOTATION: &str = "closetconnect.io/traceparent";
/// Env var: the directory the runner may use for scratch files (an emptyDir; the root
/// filesystem is read-only).
pub const ENV_SCRATCH_DIR: &str = "CLOTHJOB_SCRATCH_DIR";
/// Env var: `true` when the operator decides duplicate reuse for this job (its reuse window is
/// above 0 and the ClothJob does not say `reuse: Never`): the runner then reports its
/// `reuseKey` and waits for the decision. Unset: the runner runs the pipeline at once.
pub const ENV_REUSE: &str = "CLOTHJOB_REUSE";
/// Prefix of the per-job runner service accounts (the rest is the Job's name).
pub const RUNNER_SA_PREFIX: &str = "clothjob-runner-";

/// Server-side apply field manager of the operator (lifecycle fields of the status).
pub const OPERATOR_MANAGER: &str = "clothjob-operator";
/// Server-side apply field manager of the runner (progress fields of the status).
pub const RUNNER_MANAGER: &str = "clothjob-runner";

/// Label put on every object the operator creates for a ClothJob: the ClothJob's name.
pub const LABEL_CLOTHJOB: &str = "closetconnect.io/clothjob";
/// Label with the ClothJob's uid.
pub const LABEL_CLOTHJOB_UID: &str = "closetconnect.io/clothjob-uid";
/// `app.kubernetes.io/name` value for the runner pods.
pub const APP_NAME: &str = "clothjob-runner";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "clothjob-operator";

/// The container name of the runner inside the Job's pod template.
pub const RUNNER_CONTAINER: &str = "runner";
/// Default runner image.
pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/closetconnect/clothjob-runner:0.1.0";
/// Path the runner writes its termination message to.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
