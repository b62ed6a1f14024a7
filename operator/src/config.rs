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

    /// Service account of runner pods when a ClothJob does not name one. The operator keeps
    /// it (and a RoleBinding to the `clothjob-runner` ClusterRole) in each namespace it runs jobs in.
    #[arg(long, env = "CLOTHJOB_RUNNER_SERVICE_ACCOUNT", default_value = clothjob_api::contract::DEFAULT_RUNNER_SERVICE_ACCOUNT)]
    pub runner_service_account: String,

    /// ClusterRole bound to the runner service account in each namespace.
    #[arg(
        long,
        env = "CLOTHJOB_RUNNER_CLUSTER_ROLE",
        default_value = "clothjob-runner"
    )]
    pub runner_cluster_role: String,

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
}

impl OperatorConfig {
    /// Defaults, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Self {
            runner_image: clothjob_api::contract::DEFAULT_RUNNER_IMAGE.to_string(),
            runner_service_account: clothjob_api::contract::DEFAULT_RUNNER_SERVICE_ACCOUNT
                .to_string(),
            runner_cluster_role: "clothjob-runner".to_string(),
            watch_namespaces: Vec::new(),
            namespace: None,
            http_addr: "127.0.0.1:0".to_string(),
            resync_seconds: 300,
        }
    }

    /// The namespaces to watch: --watch-namespaces and the deprecated --namespace, trimmed,
    /// without empty entries or repeats, in the order given. Empty means all namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let given = self.watch_namespaces.iter().chain(self.namespace.iter());
        for ns in given.flat_map(|s| s.split(',')).map(str::trim) {
            if !ns.is_empty() && !out.iter().any(|o| o == ns) {
                out.push(ns.to_string());
            }
        }
        out
    }
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
    fn help_names_the_flag_and_its_variable() {
        use clap::CommandFactory;
        let help = OperatorConfig::command().render_long_help().to_string();
        assert!(help.contains("--watch-namespaces"), "{help}");
        assert!(help.contains("CLOTHJOB_WATCH_NAMESPACES"), "{help}");
    }
}
