//! `kubectl-clothjob`: submit photos as ClothJobs, watch them with live progress bars, list,
//! report stage timings, cancel, retry, read the runner's logs and download the outputs.
//! Plain lines without escape codes when stdout is not a terminal or `NO_COLOR` is set.

pub mod args;
pub mod client;
pub mod error;
pub mod list;
pub mod manage;
pub mod outputs;
pub mod render;
pub mod report;
pub mod submit;
pub mod watch;

use clothjob_api::ClothJob;
use kube::ResourceExt;

use crate::args::{Cli, Command, Format};
use crate::error::{CommandError, EXIT_OK};
use crate::render::Style;

/// Runs the command and returns the process exit code (errors are printed to stderr).
pub async fn run(cli: Cli) -> i32 {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, CommandError> {
    let style = Style::detect();
    let format = cli.global.format;
    if let Command::Submit(a) = &cli.command
        && a.dry_run
    {
        let plan = submit::plan(a, cli.global.namespace.as_deref().unwrap_or("default"))?;
        print_objects(format.or(Some(Format::Yaml)), &[plan.clothjob])?;
        return Ok(EXIT_OK);
    }
    let conn = client::connect(&cli.global).await?;
    match cli.command {
        Command::Submit(a) => submit::submit(&conn, &a, format, style).await,
        Command::Watch(a) => watch::watch_command(&conn, &a.name, a.timeout, format, style).await,
        Command::List(a) => list::list(&conn, a.all_namespaces, format, style).await,
        Command::Report(a) => report::report(&conn, &a, format, style).await,
        Command::Cancel(a) => manage::cancel(&conn, &a, format, style).await,
        Command::Retry(a) => manage::retry(&conn, &a, format, style).await,
        Command::Logs(a) => manage::logs(&conn, &a).await,
        Command::GetOutputs(a) => outputs::get_outputs(&conn, &a, format, style).await,
    }
}

/// `clothjob.closetconnect.io/<name>`, as `kubectl get -o name` writes it.
pub fn object_name(cj: &ClothJob) -> String {
    format!("clothjob.{}/{}", clothjob_api::GROUP, cj.name_any())
}

/// Prints ClothJobs in a machine-readable format: one object as itself, several as a List.
pub fn print_objects(format: Option<Format>, objects: &[ClothJob]) -> Result<(), CommandError> {
    let value = |cj: &ClothJob| -> Result<serde_json::Value, CommandError> {
        let mut v = serde_json::to_value(cj).map_err(|e| CommandError::Encode(e.to_string()))?;
        if let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut()) {
            m.remove("managedFields");
        }
        Ok(v)
    };
    let single = objects.len() == 1;
    let doc = if single {
        value(&objects[0])?
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects.iter().map(value).collect::<Result<Vec<_>, _>>()?,
        })
    };
    match format {
        Some(Format::Name) => {
            for cj in objects {
                println!("{}", object_name(cj));
            }
        }
        Some(Format::Json) => print_json(&doc)?,
        Some(Format::Yaml) | None => print_yaml(&doc)?,
    }
    Ok(())
}

/// Prints a value as indented JSON.
pub fn print_json(v: &impl serde::Serialize) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CommandError::Encode(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Prints a value as YAML.
pub fn print_yaml(v: &impl serde::Serialize) -> Result<(), CommandError> {
    let text = serde_yaml::to_string(v).map_err(|e| CommandError::Encode(e.to_string()))?;
    print!("{text}");
    Ok(())
}

/// Prints a value as JSON or YAML (`-o name` prints `names`).
pub fn print_value(
    format: Format,
    v: &impl serde::Serialize,
    names: &[String],
) -> Result<(), CommandError> {
    match format {
        Format::Json => print_json(v),
        Format::Yaml => print_yaml(v),
        Format::Name => {
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
    }
}
