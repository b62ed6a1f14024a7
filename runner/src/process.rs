//! `clothjob-runner process INPUT --out DIR`: the whole pipeline locally, with a progress
//! bar on a terminal, the outputs and `report.json` in DIR, and a stage timing table.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clothjob_api::{Output, Pipeline};
use clothjob_pipeline::Limits;
use serde::Serialize;
use tokio::sync::mpsc::unbounded_channel;

use crate::error::RunError;
use crate::execute::{Finished, Plan, execute};
use crate::options::{
    ENV_GEMINI_API_KEY, gemini, gemini_api_key_from_env, onnx_models, pipeline_options,
    remote_remover,
};
use crate::source::SourceLocation;

/// Settings file of `process`: the same `pipeline` and `output` blocks as a ClothJob spec
/// (the output `uri` is ignored: outputs go to `--out`).
#[derive(Debug, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessConfig {
    /// Stages and backends, as `spec.pipeline`.
    #[serde(default)]
    pub pipeline: serde_json::Value,
    /// Encoding settings, as `spec.output` (maxSide, jpegQuality).
    #[serde(default)]
    pub output: serde_json::Value,
}

/// Sets `a.b.c=value` in a JSON tree; the value is read as JSON (numbers, booleans, quoted
/// strings, lists) and otherwise taken as a plain string (`#ffffff`, `onnx`).
pub fn set_path(root: &mut serde_json::Value, assignment: &str) -> Result<(), RunError> {
    let (path, raw) = assignment.split_once('=').ok_or_else(|| {
        RunError::Config(format!("--set {assignment}: expected stage.option=value"))
    })?;
    let value: serde_json::Value =
        serde_json::from_str(raw).unwrap_or(serde_json::Value::String(raw.to_string()));
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(RunError::Config(format!(
                "--set {assignment}: empty path segment"
            )));
        }
        if !node.is_object() {
            *node = serde_json::json!({});
        }
        let obj = node
            .as_object_mut()
            .ok_or_else(|| RunError::Config("not an object".into()))?;
        if i + 1 == parts.len() {
            obj.insert((*part).to_string(), value);
            return Ok(());
        }
        node = obj
            .entry((*part).to_string())
            .or_insert_with(|| serde_json::json!({}));
    }
    Ok(())
}

/// Builds the pipeline and output settings from a config file and `--set` assignments.
/// Assignments address `pipeline` fields directly (`expansion.enabled=false`) or the output
/// with an `output.` prefix (`output.maxSide=512`). An `expansion.gemini` block needs no
/// `apiKeySecretRef` here: `process` reads the key from `GEMINI_API_KEY`.
pub fn settings(config: Option<&Path>, sets: &[String]) -> Result<(Pipeline, Output), RunError> {
    let mut cfg = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| RunError::Config(format!("{}: {e}", p.display())))?;
            serde_yaml::from_str::<ProcessConfig>(&text)
                .map_err(|e| RunError::Config(format!("{}: {e}", p.display())))?
        }
        None => ProcessConfig::default(),
    };
    for s in sets {
        match s.strip_prefix("output.") {
            Some(rest) => set_path(&mut cfg.output, rest)?,
            None => set_path(&mut cfg.pipeline, s)?,
        }
    }
    if cfg.pipeline.is_null() {
        cfg.pipeline = serde_json::json!({});
    }
    if let Some(g) = cfg
        .pipeline
        .pointer_mut("/expansion/gemini")
        .and_then(serde_json::Value::as_object_mut)
    {
        g.entry("apiKeySecretRef").or_insert_with(
            || serde_json::json!({"name": "(environment)", "key": ENV_GEMINI_API_KEY}),
        );
    }
    if !cfg.output.is_object() {
        cfg.output = serde_json::json!({});
    }
    if let Some(o) = cfg.output.as_object_mut() {
        o.insert("uri".into(), "file:///".into());
    }
    let pipeline: Pipeline = serde_json::from_value(cfg.pipeline)
        .map_err(|e| RunError::Config(format!("pipeline: {e}")))?;
    let output: Output =
        serde_json::from_value(cfg.output).map_err(|e| RunError::Config(format!("output: {e}")))?;
    Ok((pipeline, output))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StageLine {
    name: String,
    backend: String,
    duration_ms: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// What background removal on `auto` decided, and from what.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AutoLine {
    backend: String,
    confidence: ConfidenceLine,
    threshold: f32,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfidenceLine {
    value: f32,
    contrast: f32,
    border: f32,
    near_backdrop: f32,
    near_distance: f32,
    border_fit: f32,
    garment_found: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputLine {
    role: String,
    file: String,
    media_type: String,
    width: u32,
    height: u32,
    bytes: usize,
    sha256: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    input: String,
    total_ms: u128,
    stages: Vec<StageLine>,
    outputs: Vec<OutputLine>,
    regions: Vec<clothjob_api::RegionStatus>,
    /// The `segments` map's legend: value, name, colour shown (issue 11).
    labels: Vec<LabelLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    background_removal_auto: Option<AutoLine>,
}

#[derive(Serialize)]
struct LabelLine {
    value: u8,
    name: String,
    color: String,
}

/// Runs `process` and returns the exit code.
pub async fn process(
    input: PathBuf,
    out: PathBuf,
    config: Option<PathBuf>,
    sets: Vec<String>,
) -> i32 {
    match process_inner(&input, &out, config.as_deref(), &sets).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error ({}): {e}", e.category());
            e.exit_code()
        }
    }
}

async fn process_inner(
    input: &Path,
    out: &Path,
    config: Option<&Path>,
    sets: &[String],
) -> Result<(), RunError> {
    let (pipeline, output) = settings(config, sets)?;
    std::fs::create_dir_all(out).map_err(|e| RunError::StoreOutput {
        name: out.display().to_string(),
        detail: e.to_string(),
    })?;
    let out = out.canonicalize().map_err(|e| RunError::StoreOutput {
        name: out.display().to_string(),
        detail: e.to_string(),
    })?;
    let source = match input.to_str() {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
            SourceLocation::Url(s.to_string())
        }
        Some(s) if s.contains("://") => SourceLocation::Uri(s.to_string()),
        _ => SourceLocation::File(input.to_path_buf()),
    };
    let plan = Plan {
        source,
        options: pipeline_options(&pipeline, &output)?,
        limits: Limits::default(),
        output_dir: format!("file://{}", out.display()),
        fetch_timeout: Duration::from_secs(120),
        remote_remover: remote_remover(&pipeline),
        gemini: gemini(&pipeline, gemini_api_key_from_env())?,
        onnx: onnx_models(&pipeline)?,
        record: None,
        reuse: None,
    };
    let started = Instant::now();
    let (tx, mut rx) = unbounded_channel::<crate::progress::Update>();
    let tty = std::io::stderr().is_terminal();
    let bar = tokio::spawn(async move {
        while let Some(u) = rx.recv().await {
            if tty {
                let filled = usize::from(u.state.progress) * 30 / 100;
                eprint!(
                    "\r[{}{}] {:>3}% {:<20}",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    u.state.progress,
                    u.state.stage
                );
                let _ = std::io::stderr().flush();
            }
        }
        if tty {
            eprintln!();
        }
    });
    let result = execute(&plan, tx).await;
    let _ = bar.await;
    let finished = result?;
    let total = started.elapsed();
    write_report(input, &out, &finished, total)?;
    print_table(&finished, total);
    println!("outputs and report.json in {}", out.display());
    Ok(())
}

fn write_report(input: &Path, out: &Path, f: &Finished, total: Duration) -> Result<(), RunError> {
    let mut stages: Vec<StageLine> = f
        .output
        .stages
        .iter()
        .map(|s| StageLine {
            name: s.name.as_str().to_string(),
            backend: s.backend.clone(),
            duration_ms: s.duration.as_millis(),
            detail: s.detail.clone(),
        })
        .collect();
    stages.push(StageLine {
        name: "storing".into(),
        backend: "file".into(),
        duration_ms: f.storing.as_millis(),
        detail: None,
    });
    let report = Report {
        input: input.display().to_string(),
        total_ms: total.as_millis(),
        stages,
        outputs: f
            .output
            .outputs
            .iter()
            .map(|o| OutputLine {
                role: o.role.clone(),
                file: o.file_name.clone(),
                media_type: o.media_type.to_string(),
                width: o.width,
                height: o.height,
                bytes: o.bytes.len(),
                sha256: o.sha256.clone(),
            })
            .collect(),
        regions: f.state.regions.clone(),
        labels: clothjob_pipeline::label_legend(&f.output.regions)
            .into_iter()
            .filter(|_| f.output.outputs.iter().any(|o| o.role == "segments"))
            .map(|l| LabelLine {
                value: l.value,
                name: l.name,
                color: l.color,
            })
            .collect(),
        background_removal_auto: f.output.auto_removal.as_ref().map(|a| AutoLine {
            backend: a.backend.clone(),
            confidence: ConfidenceLine {
                value: a.confidence.value,
                contrast: a.confidence.contrast,
                border: a.confidence.border,
                near_backdrop: a.confidence.near_backdrop,
                near_distance: a.confidence.near_distance,
                border_fit: a.confidence.border_fit,
                garment_found: a.confidence.garment_found,
            },
            threshold: a.threshold,
            reason: a.reason.clone(),
        }),
    };
    let path = out.join("report.json");
    let text =
        serde_json::to_string_pretty(&report).map_err(|e| RunError::Worker(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| RunError::StoreOutput {
        name: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn print_table(f: &Finished, total: Duration) {
    let total_s = total.as_secs_f64().max(1e-9);
    println!("{:<20} {:>10} {:>8}", "stage", "seconds", "share");
    let rows = f
        .output
        .stages
        .iter()
        .map(|s| (s.name.as_str().to_string(), s.duration))
        .chain([("storing".to_string(), f.storing)]);
    for (name, d) in rows {
        println!(
            "{:<20} {:>10.3} {:>7.1}%",
            name,
            d.as_secs_f64(),
            100.0 * d.as_secs_f64() / total_s
        );
    }
    println!(
        "{:<20} {:>10.3} {:>7.1}%",
        "total",
        total.as_secs_f64(),
        100.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_assignments_reach_pipeline_and_output() {
        let sets = vec![
            "backgroundRemoval.enabled=false".to_string(),
            "expansion.background=#000000".to_string(),
            "output.maxSide=512".to_string(),
        ];
        let (p, o) = settings(None, &sets).unwrap();
        assert!(!p.background_removal.enabled);
        assert!(p.segmentation.enabled);
        assert_eq!(p.expansion.background.as_deref(), Some("#000000"));
        assert_eq!(o.max_side, 512);
        assert_eq!(o.jpeg_quality, 85);
    }

    #[test]
    fn gemini_can_be_chosen_with_set_alone() {
        let sets = [
            "expansion.backend=gemini",
            "expansion.gemini.model=gemini-2.5-flash-image",
            "expansion.gemini.endpoint=http://127.0.0.1:8080",
            "expansion.gemini.timeoutSeconds=30",
        ]
        .map(String::from);
        let (p, _) = settings(None, &sets).unwrap();
        assert_eq!(p.expansion.backend, clothjob_api::ExpansionBackend::Gemini);
        let g = p.expansion.gemini.clone().unwrap();
        assert_eq!(g.model, "gemini-2.5-flash-image");
        assert_eq!(g.endpoint.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(g.timeout_seconds, Some(30));
        let loopback = clothjob_backends::NetworkPolicy::parse("127.0.0.0/8").unwrap();
        let c = crate::options::gemini_with(&p, Some("k".into()), &loopback)
            .unwrap()
            .unwrap();
        assert_eq!(c.total_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_assignments_are_clear_errors() {
        assert!(matches!(
            settings(None, &["nonsense".to_string()]),
            Err(RunError::Config(_))
        ));
        let e = settings(None, &["backgroundRemoval.backend=magic".to_string()]).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }
}
