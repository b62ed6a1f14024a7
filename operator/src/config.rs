//! Operator settings, from flags or environment variables.

use clap::Parser;

/// Settings of the operator process.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "clothjob-operator",
    version,
    about = "Reconciles ClothJobs into runner Jobs"
)]
pub struct OperatorConfig {
    /// Runner image used when a ClothJob does not name one.
    #[arg(long, env = "CLOTHJOB_RUNNER_IMAGE", default_value = clothjob_api::contract::DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,

    /// OTLP/HTTP endpoint (e.g. `http://otel-collector:4318`) to export traces to, the
    /// operator's and, passed as OTEL_EXPORTER_OTLP_ENDPOINT, its runners'. Unset or empty:
    /// no export. Operator configuration only; a ClothJob cannot set it.
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,

    /// Runner images a ClothJob may name in `spec.runner.image` besides --runner-image (which
    /// is always allowed), comma separated. Any other image fails the ClothJob with reason
    /// InvalidSpec.
    #[arg(
        long = "allowed-runner-images",
        env = "CLOTHJOB_ALLOWED_RUNNER_IMAGES",
        value_delimiter = ',',
        value_name = "IMAGE,..."
    )]
    pub allowed_runner_images: Vec<String>,

    /// Service accounts a ClothJob may name in `spec.runner.serviceAccountName` (in its own
    /// namespace), comma separated; none by default. Without one, each ClothJob's runner runs
    /// as its own service account, which may read only that ClothJob and patch only its
    /// status. Any other name fails the ClothJob with reason InvalidSpec.
    #[arg(
        long = "allowed-runner-service-accounts",
        env = "CLOTHJOB_ALLOWED_RUNNER_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        value_name = "NAME,..."
    )]
    pub allowed_runner_service_accounts: Vec<String>,

    /// Networks and hosts the runner may reach although they are not public (CIDRs such as
    /// `10.0.0.0/8` or host names), comma separated; handed to runner pods as
    /// CLOTHJOB_ALLOWED_NETWORKS. Empty: `url` sources, `remote.url` and `gemini.endpoint`
    /// must resolve to public addresses.
    #[arg(
        long = "allowed-networks",
        env = "CLOTHJOB_ALLOWED_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR|HOST,..."
    )]
    pub allowed_networks: Vec<String>,

    /// Wall-clock limit in seconds of a ClothJob that sets no `spec.activeDeadlineSeconds`
    /// (its own value wins); 0 means no limit.
    #[arg(
        long,
        env = "CLOTHJOB_DEFAULT_ACTIVE_DEADLINE_SECONDS",
        default_value_t = 3600
    )]
    pub default_active_deadline_seconds: i64,

    /// Only watch these namespaces, comma separated (all namespaces when empty). With a list,
    /// every watch is namespaced, so a Role in each listed namespace is all the access needed.
    #[arg(
        long = "watch-namespaces",
        env = "CLOTHJOB_WATCH_NAMESPACES",
        value_delimiter = ',',
        value_name = "NS,..."
    )]
    pub watch_namespaces: Vec<String>,

    /// Deprecated: one namespace to watch, added to --watch-namespaces.
    #[arg(
        long = "namespace",
        env = "CLOTHJOB_WATCH_NAMESPACE",
        value_name = "NS",
        hide = true
    )]
    pub namespace: Option<String>,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "CLOTHJOB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,

    /// Seconds of silence after which a running job is reconciled again anyway.
    #[arg(long, env = "CLOTHJOB_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,

    /// Seconds a runner pod may wait to start (image pull errors, a missing Secret or
    /// ConfigMap, no node that fits, a pod the Job controller cannot create) before the
    /// ClothJob fails with the waiting reason.
    #[arg(long, env = "CLOTHJOB_PENDING_TIMEOUT_SECONDS", default_value_t = 600)]
    pub pending_timeout_seconds: u64,

    /// At most this many ClothJobs run a Job at once, over every watched namespace; the others
    /// wait in phase Queued (by `spec.priority`, then creation) and start as slots free up.
    /// 0: no limit. ClothJobs with a Kueue queue name are left to Kueue and not counted.
    #[arg(long, env = "CLOTHJOB_MAX_CONCURRENT_JOBS", default_value_t = 0)]
    pub max_concurrent_jobs: usize,

    /// At most this many ClothJobs run a Job at once in one namespace (0: no limit); a full
    /// namespace does not hold back the ClothJobs of others.
    #[arg(
        long,
        env = "CLOTHJOB_MAX_CONCURRENT_JOBS_PER_NAMESPACE",
        default_value_t = 0
    )]
    pub max_concurrent_jobs_per_namespace: usize,

    /// Seconds after which a finished ClothJob (with its Job and pods) is deleted when it sets
    /// no `spec.ttlSecondsAfterFinished` (its own value wins); 0 keeps them forever.
    #[arg(
        long,
        env = "CLOTHJOB_DEFAULT_TTL_SECONDS_AFTER_FINISHED",
        default_value_t = 21600
    )]
    pub default_ttl_seconds_after_finished: u32,

    /// Seconds after it succeeded that a ClothJob's outputs are reused by an identical
    /// ClothJob of the same namespace (same source bytes, pipeline and output settings)
    /// instead of running the pipeline again (and an identical ClothJob that is running is
    /// waited for); 0 turns reuse off. A ClothJob deleted by its TTL is not
    /// reused: the effective window is at most the TTL.
    #[arg(long, env = "CLOTHJOB_REUSE_WINDOW_SECONDS", default_value_t = 86400)]
    pub reuse_window_seconds: u64,

    /// ClothJobs reconciled at once (never two reconciles of the same one).
    #[arg(long, env = "CLOTHJOB_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,

    /// Milliseconds a change to a ClothJob (or its Job or pods) waits for more before it is
    /// reconciled, so a burst of runner writes costs one reconcile; every reconcile is delayed
    /// this long. 0: no debounce.
    #[arg(long, env = "CLOTHJOB_RECONCILE_DEBOUNCE_MS", default_value_t = 25)]
    pub reconcile_debounce_ms: u64,

    /// Take part in leader election over a Lease: only the replica holding it reconciles
    /// (the chart always sets this, so two replicas, or a rolling update, never reconcile at
    /// once). Without it this process reconciles at once, alone.
    #[arg(long, env = "CLOTHJOB_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "CLOTHJOB_LEADER_ELECTION_LEASE",
        default_value = "clothjob-operator"
    )]
    pub leader_election_lease: String,

    /// Namespace of the leader election Lease (the operator's own; the chart passes it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// Seconds a Lease stays valid after its holder last renewed it: a replica that stopped
    /// (killed, partitioned) is replaced after at most this long.
    #[arg(long, env = "CLOTHJOB_LEASE_DURATION_SECONDS", default_value_t = 10)]
    pub lease_duration_seconds: u64,

    /// Seconds the leader keeps leading without a successful renewal (an apiserver outage, a
    /// partition, a lost permission) before it stops; shorter than the lease duration, so it
    /// has stopped before a standby may take over.
    #[arg(
        long,
        env = "CLOTHJOB_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 7
    )]
    pub lease_renew_deadline_seconds: u64,

    /// Seconds between the leader's renewals and between a standby's tries to take the Lease.
    #[arg(long, env = "CLOTHJOB_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub lease_retry_period_seconds: u64,
}

impl OperatorConfig {
    /// Defaults, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Self {
            runner_image: clothjob_api::contract::DEFAULT_RUNNER_IMAGE.to_string(),
            otlp_endpoint: None,
            allowed_runner_images: Vec::new(),
            allowed_runner_service_accounts: Vec::new(),
            allowed_networks: Vec::new(),
            default_active_deadline_seconds: 3600,
            watch_namespaces: Vec::new(),
            namespace: None,
            http_addr: "127.0.0.1:0".to_string(),
            resync_seconds: 300,
            pending_timeout_seconds: 600,
            max_concurrent_jobs: 0,
            max_concurrent_jobs_per_namespace: 0,
            default_ttl_seconds_after_finished: 21600,
            reuse_window_seconds: 86400,
            reconcile_concurrency: 16,
            reconcile_debounce_ms: 25,
            leader_elect: false,
            leader_election_lease: "clothjob-operator".to_string(),
            leader_election_namespace: "default".to_string(),
            lease_duration_seconds: 10,
            lease_renew_deadline_seconds: 7,
            lease_retry_period_seconds: 2,
        }
    }

    /// The namespaces to watch: --watch-namespaces and the deprecated --namespace, trimmed,
    /// without empty entries or repeats, in the order given. Empty means all namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        list(self.watch_namespaces.iter().chain(self.namespace.iter()))
    }

    /// The runner images a ClothJob may name: --runner-image, then --allowed-runner-images.
    pub fn runner_images(&self) -> Vec<String> {
        list(std::iter::once(&self.runner_image).chain(&self.allowed_runner_images))
    }

    /// The service accounts a ClothJob may name (--allowed-runner-service-accounts).
    pub fn runner_service_accounts(&self) -> Vec<String> {
        list(&self.allowed_runner_service_accounts)
    }

    /// The non-public networks and hosts runners may reach (--allowed-networks).
    pub fn networks(&self) -> Vec<String> {
        list(&self.allowed_networks)
    }

    /// The concurrency limits (`None` where 0, no limit).
    pub fn limits(&self) -> crate::queue::Limits {
        crate::queue::Limits {
            max_concurrent: (self.max_concurrent_jobs > 0).then_some(self.max_concurrent_jobs),
            per_namespace: (self.max_concurrent_jobs_per_namespace > 0)
                .then_some(self.max_concurrent_jobs_per_namespace),
        }
    }

    /// The default TTL after finishing, in seconds (`None`: keep forever).
    pub fn default_ttl(&self) -> Option<i32> {
        i32::try_from(self.default_ttl_seconds_after_finished)
            .ok()
            .filter(|s| *s > 0)
    }

    /// Checks the settings that the operator only hands on, so a typo fails at start-up
    /// instead of in every runner: each allowed network is a CIDR, an IP address or a host
    /// name; the default deadline is not negative.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for n in self.networks() {
            if !valid_network(&n) {
                return Err(ConfigError::Network(n));
            }
        }
        if self.default_active_deadline_seconds < 0 {
            return Err(ConfigError::Deadline(self.default_active_deadline_seconds));
        }
        Ok(())
    }
}

/// A setting the operator refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An --allowed-networks entry is neither a CIDR, an IP address nor a host name.
    #[error("--allowed-networks: {0:?} is not a CIDR (10.0.0.0/8), an IP address or a host name")]
    Network(String),
    /// A negative --default-active-deadline-seconds.
    #[error("--default-active-deadline-seconds must be 0 (no limit) or more, not {0}")]
    Deadline(i64),
}

/// Whether `s` is a CIDR (`addr/prefix`), an IP address or a DNS host name.
fn valid_network(s: &str) -> bool {
    use std::net::IpAddr;
    if let Some((addr, prefix)) = s.split_once('/') {
        return match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
            (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
            _ => false,
        };
    }
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Comma-separated values (flags may repeat, and hold lists), trimmed, without empty entries
/// or repeats, in the order given.
fn list<'a>(given: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in given.into_iter().flat_map(|s| s.split(',')).map(str::trim) {
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> OperatorConfig {
        let argv = std::iter::once("clothjob-operator").chain(args.iter().copied());
        OperatorConfig::try_parse_from(argv).unwrap()
    }

    #[test]
    fn watch_namespaces_parses_a_comma_separated_list() {
        let c = parse(&["--watch-namespaces", "team-a,team-b"]);
        assert_eq!(c.namespaces(), ["team-a", "team-b"]);
        let c = parse(&["--watch-namespaces=team-a, team-b ,,team-a"]);
        assert_eq!(c.namespaces(), ["team-a", "team-b"]);
    }

    #[test]
    fn watch_namespaces_may_be_repeated() {
        let c = parse(&["--watch-namespaces", "a", "--watch-namespaces", "b,c"]);
        assert_eq!(c.namespaces(), ["a", "b", "c"]);
    }

    #[test]
    fn empty_watch_namespaces_means_all() {
        assert!(parse(&[]).namespaces().is_empty());
        assert!(parse(&["--watch-namespaces", ""]).namespaces().is_empty());
        assert!(parse(&["--watch-namespaces=,"]).namespaces().is_empty());
        assert!(OperatorConfig::defaults().namespaces().is_empty());
    }

    #[test]
    fn the_old_single_namespace_flag_still_works() {
        let c = parse(&["--namespace", "legacy"]);
        assert_eq!(c.namespaces(), ["legacy"]);
        let c = parse(&["--namespace", "b", "--watch-namespaces", "a,b"]);
        assert_eq!(c.namespaces(), ["a", "b"]);
        assert!(parse(&["--namespace", ""]).namespaces().is_empty());
    }

    /// Runs in a child process of `environment_variables_are_read` (the variables must be in
    /// the process's environment); does nothing in a plain test run.
    #[test]
    fn env_child() {
        let Ok(expected) = std::env::var("CLOTHJOB_TEST_EXPECT") else {
            return;
        };
        let c = parse(&[]);
        assert_eq!(c.namespaces().join(","), expected);
    }

    #[test]
    fn environment_variables_are_read() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[("CLOTHJOB_WATCH_NAMESPACES", "team-a,team-b")],
                "team-a,team-b",
            ),
            (&[("CLOTHJOB_WATCH_NAMESPACES", "")], ""),
            (&[("CLOTHJOB_WATCH_NAMESPACE", "legacy")], "legacy"),
            (
                &[
                    ("CLOTHJOB_WATCH_NAMESPACES", "a"),
                    ("CLOTHJOB_WATCH_NAMESPACE", "b"),
                ],
                "a,b",
            ),
        ];
        let exe = std::env::current_exe().unwrap();
        for (vars, expected) in cases {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--exact", "config::tests::env_child", "--test-threads=1"])
                .env_remove("CLOTHJOB_WATCH_NAMESPACES")
                .env_remove("CLOTHJOB_WATCH_NAMESPACE")
                .env("CLOTHJOB_TEST_EXPECT", expected);
            for (k, v) in vars {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{vars:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
        }
    }

    #[test]
    fn policy_lists_default_to_the_runner_image_and_nothing_else() {
        let c = parse(&[]);
        assert_eq!(
            c.runner_images(),
            [clothjob_api::contract::DEFAULT_RUNNER_IMAGE]
        );
        assert!(c.runner_service_accounts().is_empty());
        assert!(c.networks().is_empty());
        assert_eq!(c.default_active_deadline_seconds, 3600);
        assert_eq!(c.pending_timeout_seconds, 600);
        let d = OperatorConfig::defaults();
        assert_eq!(d.runner_images(), c.runner_images());
        assert_eq!(d.default_active_deadline_seconds, 3600);
        assert_eq!(d.pending_timeout_seconds, 600);
    }

    #[test]
    fn policy_lists_parse_and_validate() {
        let c = parse(&[
            "--runner-image=r:1",
            "--allowed-runner-images",
            "r:2, r:1",
            "--allowed-runner-service-accounts=models-reader",
            "--allowed-networks",
            "127.0.0.0/8,198.18.0.0/15,::1,fd00::/8,minio.storage.svc",
            "--default-active-deadline-seconds=0",
            "--pending-timeout-seconds=30",
        ]);
        assert_eq!(c.runner_images(), ["r:1", "r:2"]);
        assert_eq!(c.runner_service_accounts(), ["models-reader"]);
        assert_eq!(c.networks().len(), 5);
        assert_eq!(c.default_active_deadline_seconds, 0);
        assert_eq!(c.pending_timeout_seconds, 30);
        c.validate().unwrap();
        for bad in ["10.0.0.0/33", "not a host", "1.2.3.4/x", "-x.example"] {
            let c = parse(&[&format!("--allowed-networks={bad}")]);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--allowed-networks"), "{bad}: {e}");
        }
        let c = parse(&["--default-active-deadline-seconds=-1"]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn limits_and_ttl_zero_mean_none() {
        let d = parse(&[]);
        assert_eq!(d.limits(), crate::queue::Limits::default());
        assert_eq!(d.default_ttl(), Some(21600));
        assert_eq!(d.reconcile_concurrency, 16);
        let c = parse(&[
            "--max-concurrent-jobs=50",
            "--max-concurrent-jobs-per-namespace=5",
            "--default-ttl-seconds-after-finished=0",
        ]);
        assert_eq!(c.limits().max_concurrent, Some(50));
        assert_eq!(c.limits().per_namespace, Some(5));
        assert_eq!(c.default_ttl(), None);
        let o = OperatorConfig::defaults();
        assert_eq!(o.limits(), d.limits());
        assert_eq!(o.default_ttl(), d.default_ttl());
    }

    #[test]
    fn help_names_the_flag_and_its_variable() {
        use clap::CommandFactory;
        let help = OperatorConfig::command().render_long_help().to_string();
        assert!(help.contains("--watch-namespaces"), "{help}");
        assert!(help.contains("CLOTHJOB_WATCH_NAMESPACES"), "{help}");
        for flag in [
            "--allowed-runner-images",
            "--allowed-runner-service-accounts",
            "--allowed-networks",
            "--default-active-deadline-seconds",
            "--pending-timeout-seconds",
            "--max-concurrent-jobs",
            "--max-concurrent-jobs-per-namespace",
            "--default-ttl-seconds-after-finished",
            "--reconcile-concurrency",
            "--reconcile-debounce-ms",
        ] {
            assert!(help.contains(flag), "{flag} not in {help}");
        }
    }
}
