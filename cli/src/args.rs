//! The command line: global flags (kubeconfig, context, namespace, output format) and one
//! subcommand per action, each with an example in its `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kubectl clothjob`: submit photos of garments as ClothJobs and watch them become catalog
/// images.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-clothjob",
    bin_name = "kubectl clothjob",
    version,
    about = "Submit photos of garments as ClothJobs and watch them become catalog images",
    after_help = "Examples:\n  kubectl clothjob submit shirt.jpg --output s3://closet/catalog --credentials-secret s3-creds --watch\n  kubectl clothjob list -A\n  kubectl clothjob report shirt-x7k2p\n\nExit codes: 0 success, 1 the job (or the command) failed, 2 usage error, 3 --timeout passed."
)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The action.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Path of the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Print the result for scripts instead of tables and bars.
    #[arg(
        short = 'o',
        long = "format",
        global = true,
        value_enum,
        value_name = "FORMAT"
    )]
    pub format: Option<Format>,
}

/// Machine-readable output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `clothjob.closetconnect.io/<name>` per object.
    Name,
}

/// The actions.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a ClothJob from a local photo or a URL (returns at once; --watch follows it).
    #[command(
        after_help = "Examples:\n  kubectl clothjob submit shirt.jpg --output s3://closet/catalog --credentials-secret s3-creds --watch\n  kubectl clothjob submit https://example.com/dress.png --output gs://shop/catalog --set expansion.background=#F4F4F4 --set output.maxSide=800\n  kubectl clothjob submit big.jpg --upload-to s3://closet/uploads --output s3://closet/catalog --credentials-secret s3-creds\n\nA local file goes into a Secret owned by the ClothJob (deleted with it) when it is at most 900 KiB;\nlarger files need --upload-to."
    )]
    Submit(SubmitArgs),
    /// Follow a ClothJob with a live progress bar until it finishes.
    #[command(
        after_help = "Example:\n  kubectl clothjob watch shirt-x7k2p --timeout 10m\n\nExit codes: 0 succeeded, 1 failed (the reason is printed), 2 usage error, 3 --timeout passed."
    )]
    Watch(WatchArgs),
    /// List ClothJobs with their progress.
    #[command(
        after_help = "Examples:\n  kubectl clothjob list\n  kubectl clothjob list -A -o name"
    )]
    List(ListArgs),
    /// Per-stage timing of one ClothJob, or p50/p95 per stage over the finished ones.
    #[command(
        after_help = "Examples:\n  kubectl clothjob report shirt-x7k2p\n  kubectl clothjob report            # p50/p95 over the namespace's succeeded jobs\n  kubectl clothjob report -A -o json"
    )]
    Report(ReportArgs),
    /// Stop a ClothJob's runner: it ends Failed with reason Cancelled.
    #[command(after_help = "Example:\n  kubectl clothjob cancel shirt-x7k2p --wait")]
    Cancel(CancelArgs),
    /// Run a failed ClothJob again as a new ClothJob with the same spec, linked to it.
    #[command(after_help = "Example:\n  kubectl clothjob retry shirt-x7k2p --watch")]
    Retry(RetryArgs),
    /// Print the runner's logs (the latest attempt, or --attempt N).
    #[command(
        after_help = "Examples:\n  kubectl clothjob logs shirt-x7k2p -f\n  kubectl clothjob logs shirt-x7k2p --attempt 1"
    )]
    Logs(LogsArgs),
    /// Download a ClothJob's outputs (s3://, gs://, file://) and check each sha256.
    #[command(
        name = "get-outputs",
        after_help = "Example:\n  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=eu-west-1 \\\n    kubectl clothjob get-outputs shirt-x7k2p ./shirt\n\nObject-store credentials come from the environment (AWS_*, GOOGLE_*), as for the runner."
    )]
    GetOutputs(GetOutputsArgs),
}

/// `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A local photo, an http(s):// URL, or an s3://, gs:// or file:// URI.
    #[arg(value_name = "IMAGE_OR_URL")]
    pub image: String,
    /// Name of the ClothJob (default: the file's name and a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the outputs go: s3://bucket/prefix, gs://bucket/prefix or file:///path.
    #[arg(long, value_name = "URI", env = "CLOTHJOB_OUTPUT")]
    pub output: String,
    /// Secret with the object-store credentials of the runner (spec.output.credentialsSecretName).
    #[arg(long, value_name = "SECRET", env = "CLOTHJOB_CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,
    /// A spec setting: `stage.option=value` for the pipeline (expansion.background=#F4F4F4),
    /// or output.*, runner.*, retries, activeDeadlineSeconds, ttlSecondsAfterFinished.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Upload a local photo to this object-store prefix (s3://bucket/prefix, gs://...)
    /// instead of a Secret; credentials from AWS_* / GOOGLE_* in the environment.
    #[arg(long, value_name = "URI")]
    pub upload_to: Option<String>,
    /// Follow the job after creating it (as `watch`).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: give up after this long (90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Print the ClothJob that would be created, create nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The ClothJob.
    pub name: String,
    /// Give up after this long (90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// One ClothJob; without it, p50/p95 per stage over the succeeded ClothJobs.
    pub name: Option<String>,
    /// Over every namespace (without NAME).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The ClothJob.
    pub name: String,
    /// Wait until the operator has stopped it.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// `retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The failed ClothJob.
    pub name: String,
    /// Name of the new ClothJob (default: `<name>-r<N>`).
    #[arg(long = "name", value_name = "NAME")]
    pub new_name: Option<String>,
    /// Follow the new job (as `watch`).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: give up after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

/// `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The ClothJob.
    pub name: String,
    /// Which attempt (1 = the first runner pod); default the latest.
    #[arg(long, value_name = "N")]
    pub attempt: Option<usize>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `get-outputs`.
#[derive(Debug, Args)]
pub struct GetOutputsArgs {
    /// The ClothJob (it must have succeeded).
    pub name: String,
    /// Directory to write the outputs into (created when missing).
    pub dir: PathBuf,
}

/// Parses `90`, `90s`, `10m`, `1h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("{s:?}: use a number with s, m or h (90s, 10m, 1h)")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: the last number has no unit"));
    }
    if total == 0 {
        return Err(format!("{s:?}: the time-out must be positive"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("kubectl clothjob "),
                "{} has no example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn global_flags_go_after_the_command() {
        let cli = Cli::try_parse_from([
            "kubectl-clothjob",
            "list",
            "-n",
            "closet",
            "-o",
            "json",
            "--context",
            "kind",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("closet"));
        assert_eq!(cli.global.format, Some(Format::Json));
        assert_eq!(cli.global.context.as_deref(), Some("kind"));
    }
}
