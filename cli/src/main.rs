//! `kubectl-clothjob`: the kubectl plugin for ClothJobs (`kubectl clothjob ...`).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = clothjob_cli::args::Cli::parse();
    let code = clothjob_cli::run(cli).await;
    std::process::exit(code);
}
