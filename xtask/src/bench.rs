//! `cargo xtask bench`: the anchors of ../shared/bench (the Python original's encoding,
//! GrabCut, rembg) and our benchmarks (the pipeline's, and ONNX u2netp background
//! removal from clothjob-onnx) in one run on one machine, printed as ratios.

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

/// The anchors other than rembg, whose line is named after the photo (`photo`).
const NAMED_ANCHORS: [&str; 4] = ["before", "pillow", "vips", "grabcut"];

/// rembg's figures: the one anchor line that is not a named anchor.
fn rembg_line(anchors: &BTreeMap<String, (f64, f64)>) -> Option<(f64, f64)> {
    let mut rest = anchors
        .iter()
        .filter(|(k, _)| !k.starts_with("ours ") && !NAMED_ANCHORS.contains(&k.as_str()));
    match (rest.next(), rest.next()) {
        (Some((_, v)), None) => Some(*v),
        _ => None,
    }
}

/// `cargo bench -q -p PACKAGE --bench BENCH -- FIXTURE ROUNDS`; its stdout.
fn our_bench(package: &str, bench: &str, fixture: &str, rounds: &str) -> Result<String> {
    eprintln!("==> ours (cargo bench -p {package} --bench {bench})");
    let out = xtask::cargo_command()
        .args([
            "bench", "-q", "-p", package, "--bench", bench, "--", fixture, rounds,
        ])
        .output()
        .with_context(|| format!("running the {bench} benchmark"))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("the {bench} benchmark failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
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
    let fixture = format!("{home}/fixture-{side}");
    let mut ours_text = our_bench("clothjob-pipeline", "pipeline", &fixture, &rounds)?;
    // The ONNX benchmark needs ONNX Runtime and u2netp (the anchors' venv has
    // both); without them it prints nothing and its rows read n/a.
    match our_bench("clothjob-onnx", "u2netp", &fixture, &rounds) {
        Ok(text) => ours_text.push_str(&text),
        Err(e) => eprintln!("warning: {e:#}"),
    }
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
    let rembg = rembg_line(&a);
    row(
        "bg removal speed-up vs rembg u2netp",
        rembg.zip(get(&o, "ours bgremove")).map(|(r, u)| r.0 / u.0),
    );
    row("bg removal IoU, rembg u2netp", rembg.map(|r| r.1));
    let onnx = get(&o, "ours onnx_u2netp");
    row(
        "onnx u2netp speed-up vs rembg u2netp (goal >= 1.3)",
        rembg.zip(onnx).map(|(r, u)| r.0 / u.0),
    );
    row(
        "onnx u2netp IoU minus rembg's (goal |d| <= 0.005)",
        rembg.zip(onnx).map(|(r, u)| u.1 - r.1),
    );
    row("onnx u2netp IoU", onnx.map(|u| u.1));
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

    #[test]
    fn rembg_is_the_anchor_line_without_a_known_name() {
        let m = parse(
            "before 4.1 22300000\npillow 1.4 1890000\nvips 2.0 2870000\ngrabcut 4.9 0.847\n\
             photo 0.34 0.9962\nours onnx_u2netp 0.25 0.9962\n",
        );
        assert_eq!(rembg_line(&m), Some((0.34, 0.9962)));
        let two = parse("grabcut 4.9 0.847\nphoto 0.34 0.9962\nother 0.5 0.99\n");
        assert_eq!(rembg_line(&two), None, "ambiguous");
        assert_eq!(rembg_line(&parse("grabcut 4.9 0.847\n")), None);
    }
}
