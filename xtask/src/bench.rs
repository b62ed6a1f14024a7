//! `cargo xtask bench`: the anchors of ../shared/bench (the Python original's encoding,
//! GrabCut, rembg) and our pipeline's benchmark in one run on one machine, printed as ratios.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::root;

/// `name -> (seconds, figure)` from lines such as `pillow 1.52 1886756` or `ours encode 0.09 1512972`.
fn parse(text: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let (name, rest) = match t.as_slice() {
            ["ours", what, rest @ ..] => (format!("ours {what}"), rest),
            [name, rest @ ..] => ((*name).to_string(), rest),
            [] => continue,
        };
        if let [s, f, ..] = rest
            && let (Ok(s), Ok(f)) = (s.parse::<f64>(), f.parse::<f64>())
        {
            out.insert(name, (s, f));
        }
    }
    out
}

/// Runs both sides and prints the figures and ratios.
pub fn run() -> Result<()> {
    let shared = root().join("../shared/bench");
    if !shared.join("anchors.sh").is_file() {
        bail!(
            "{} not found: the anchors live in ../shared/bench",
            shared.display()
        );
    }
    let home = std::env::var("ANCHOR_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cache/clothjob-anchors",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let side = std::env::var("FIXTURE_SIDE").unwrap_or_else(|_| "2000".into());
    let rounds = std::env::var("ROUNDS").unwrap_or_else(|_| "3".into());
    eprintln!("==> anchors (../shared/bench/anchors.sh)");
    let anchors = Command::new("bash")
        .arg(shared.join("anchors.sh"))
        .output()
        .context("running anchors.sh")?;
    if !anchors.status.success() {
        bail!(
            "anchors.sh failed: {}",
            String::from_utf8_lossy(&anchors.stderr)
        );
    }
    let anchors_text = String::from_utf8_lossy(&anchors.stdout).to_string();
    print!("{anchors_text}");
    eprintln!("==> ours (cargo bench -p clothjob-pipeline --bench pipeline)");
    let fixture = format!("{home}/fixture-{side}");
    let ours = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root())
        .args([
            "bench",
            "-q",
            "-p",
            "clothjob-pipeline",
            "--bench",
            "pipeline",
            "--",
            &fixture,
            &rounds,
        ])
        .output()
        .context("running the pipeline benchmark")?;
    if !ours.status.success() {
        bail!(
            "benchmark failed: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
    }
    let ours_text = String::from_utf8_lossy(&ours.stdout).to_string();
    print!("{ours_text}");
    let a = parse(&anchors_text);
    let o = parse(&ours_text);
    println!(
        "\n{:<52} {:>10}",
        "comparison (same run, same machine)", "ratio"
    );
    let row = |what: &str, v: Option<f64>| match v {
        Some(v) => println!("{what:<52} {v:>10.4}"),
        None => println!("{what:<52} {:>10}", "n/a"),
    };
    let get = |m: &BTreeMap<String, (f64, f64)>, k: &str| m.get(k).copied();
    let pillow = get(&a, "pillow");
    row(
        "encode speed-up vs Pillow (goal >= 20)",
        pillow.zip(get(&o, "ours encode")).map(|(p, u)| p.0 / u.0),
    );
    row(
        "encode base64 bytes / Pillow's (goal <= 1.1)",
        pillow
            .zip(get(&o, "ours encode_base64"))
            .map(|(p, u)| u.1 / p.1),
    );
    row(
        "encode speed-up vs libvips",
        get(&a, "vips")
            .zip(get(&o, "ours encode"))
            .map(|(p, u)| p.0 / u.0),
    );
    row(
        "bg removal speed-up vs GrabCut",
        get(&a, "grabcut")
            .zip(get(&o, "ours bgremove"))
            .map(|(g, u)| g.0 / u.0),
    );
    row(
        "bg removal IoU, ours (goal >= 0.97)",
        get(&o, "ours bgremove").map(|u| u.1),
    );
    row("bg removal IoU, GrabCut", get(&a, "grabcut").map(|g| g.1));
    let rembg = a
        .iter()
        .find(|(k, _)| k.contains("rembg") || k.contains("u2net"))
        .map(|(_, v)| *v);
    row(
        "bg removal speed-up vs rembg u2netp",
        rembg.zip(get(&o, "ours bgremove")).map(|(r, u)| r.0 / u.0),
    );
    row("bg removal IoU, rembg u2netp", rembg.map(|r| r.1));
    row(
        "whole builtin pipeline 2000px, seconds (goal < 1)",
        get(&o, "ours pipeline").map(|u| u.0),
    );
    row(
        "whole builtin pipeline 4000px, peak RSS MiB (goal < 400)",
        get(&o, "ours pipeline_4000").map(|u| u.1),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anchor_and_our_lines() {
        let m = parse(
            "pillow 1.52 1886756\nours encode 0.09 1512972\ngarbage\nours pipeline 0.3 113\n",
        );
        assert_eq!(m["pillow"], (1.52, 1886756.0));
        assert_eq!(m["ours encode"], (0.09, 1512972.0));
        assert_eq!(m["ours pipeline"], (0.3, 113.0));
        assert_eq!(m.len(), 3);
    }
}
