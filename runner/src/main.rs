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
    let telemetry = init_logging();
    let code = match Cli::parse().command {
        Command::Run => clothjob_runner::pod::run_in_pod().await,
        Command::Process {
            input,
            out,
            config,
            set,
        } => clothjob_runner::process::process(input, out, config, set).await,
    };
    // Flush the spans before exiting (process::exit runs no destructors).
    clothjob_telemetry::shutdown_or_log(telemetry);
    std::process::exit(code);
}

/// Logs on stderr: human-readable on a terminal (`process`), one JSON object per line
/// elsewhere (in a pod), each line with its spans (the job's namespace, name, uid, attempt and
/// trace id; the stage) and their fields. `RUST_LOG` filters (default `info`). With
/// OTEL_EXPORTER_OTLP_ENDPOINT set (the operator passes its own), spans are exported too.
fn init_logging() -> clothjob_telemetry::Telemetry {
    clothjob_telemetry::init_or_log(&clothjob_telemetry::Settings::new(
        "clothjob-runner",
        clothjob_telemetry::endpoint_from_env(),
    ))
}
