//! `cargo xtask <task>`: the one entry point for developer tasks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    match task {
        "gen-crds" => gen_crds(),
        _ => {
            eprintln!("usage: cargo xtask <gen-crds>");
            if task == "help" {
                Ok(())
            } else {
                bail!("unknown task {task}")
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes crds/ (and the chart's copy) from the Rust types.
fn gen_crds() -> Result<()> {
    let yaml = clothjob_api::crd::crd_yaml()?;
    for dir in ["crds", "charts/clothjob-operator/crds"] {
        let path = root().join(dir).join(clothjob_api::crd::CRD_FILE);
        std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
