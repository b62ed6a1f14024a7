//! The runner's entry point: `run` (inside a Job's pod) and `process` (standalone).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clothjob-runner",
    version,
    about = "Runs the ClothJob image pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ClothJob named by CLOTHJOB_NAMESPACE / CLOTHJOB_NAME / CLOTHJOB_UID (in a pod).
    Run,
    /// Run the whole pipeline locally on a photo and write the outputs and report.json.
    Process {
        /// The photo: a path, an http(s) URL or an object-store URI.
        input: PathBuf,
        /// Directory for the outputs and report.json.
        #[arg(long)]
        out: PathBuf,
        /// YAML file with `pipeline:` (as spec.pipeline) and `output:` (maxSide, jpegQuality).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one setting, e.g. `expansion.enabled=false` or `output.maxSide=512`.
        #[arg(long = "set", value_name = "STAGE.OPTION=VALUE")]
        set: Vec<String>,
    },
}

#[tokio::main]
async fn main() {
    init_logging();
    let code = match Cli::parse().command {
        Command::Run => clothjob_runner::pod::run_in_pod().await,
        Command::Process {
            input,
            out,
            config,
            set,
        } => clothjob_runner::process::process(input, out, config, set).await,
    };
    std::process::exit(code);
}

/// Logs on stderr: human-readable on a terminal (`process`), one JSON object per line
/// elsewhere (in a pod), each line with its spans (the job's namespace, name, uid, attempt and
/// trace id; the stage) and their fields. `RUST_LOG` filters (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if std::io::stderr().is_terminal() {
        fmt.init();
    } else {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init();
    }
}
