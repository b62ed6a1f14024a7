//! `cargo xtask dashboard-picture`: README's picture of the Grafana dashboard's main panels,
//! drawn as SVG from the data a real run's Prometheus returned for the panels' own queries.
//!
//! The observability e2e test (`e2e/tests/observability.rs`) runs jobs on the test cluster
//! with a real Prometheus scraping the operator, asks it every picture panel's queries and
//! writes the answers to `target/e2e-dashboard-data.json`. This task copies that file to
//! `docs/dashboard-data.json` and draws `docs/dashboard.svg` from it; the drawing is
//! deterministic, and a test fails when the committed picture is not the drawing of the
//! committed data.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const PANEL_W: f64 = 600.0;
const PANEL_H: f64 = 330.0;
const GAP: f64 = 12.0;
const COLUMNS: usize = 2;
const HEADER_H: f64 = 64.0;
/// Plot area inside a panel.
const PLOT_LEFT: f64 = 62.0;
const PLOT_TOP: f64 = 34.0;
const PLOT_W: f64 = PANEL_W - PLOT_LEFT - 16.0;
const PLOT_H: f64 = 190.0;

/// Grafana's classic palette, in order.
const PALETTE: [&str; 12] = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17",
];

/// Runs the task: `cargo xtask dashboard-picture [DATA]` (default: the last e2e run's data).
pub fn run(args: &[String], root: &Path) -> Result<()> {
    let data_in = args
        .first()
        .map_or_else(|| root.join("target/e2e-dashboard-data.json"), |a| a.into());
    let text = std::fs::read_to_string(&data_in).with_context(|| {
        format!(
            "reading {} (written by `cargo test -p clothjob-e2e --test observability`)",
            data_in.display()
        )
    })?;
    let data: Value = serde_json::from_str(&text).context("parsing the dashboard data")?;
    let svg = render(&data)?;
    let docs = root.join("docs");
    std::fs::write(
        docs.join("dashboard-data.json"),
        serde_json::to_string_pretty(&data)? + "\n",
    )?;
    std::fs::write(docs.join("dashboard.svg"), svg)?;
    eprintln!("wrote docs/dashboard.svg and docs/dashboard-data.json");
    Ok(())
}

/// The SVG picture of `data` (the format `e2e/tests/observability.rs` writes).
pub fn render(data: &Value) -> Result<String> {
    let panels = data["panels"].as_array().context("panels")?;
    if panels.is_empty() {
        bail!("no panels in the dashboard data");
    }
    let rows = panels.len().div_ceil(COLUMNS);
    let width = COLUMNS as f64 * PANEL_W + (COLUMNS as f64 + 1.0) * GAP;
    let height = HEADER_H + rows as f64 * (PANEL_H + GAP) + GAP;
    let start = data["start"].as_f64().context("start")?;
    let end = data["end"].as_f64().context("end")?;
    let mut svg = String::new();
    writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"##
    )?;
    writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#111217"/>"##
    )?;
    writeln!(
        svg,
        r##"<text x="{GAP}" y="28" fill="#d8d9da" font-size="18">ClothJob dashboard: where does the time go</text>"##
    )?;
    writeln!(
        svg,
        r##"<text x="{GAP}" y="50" fill="#8e8e8e" font-size="12">{}</text>"##,
        esc(&format!(
            "Drawn from a real run's Prometheus answers to the panels' queries ({}; {:.0} s, rate window {}).",
            data["source"].as_str().unwrap_or("unknown run"),
            end - start,
            data["rateInterval"].as_str().unwrap_or("?"),
        ))
    )?;
    for (i, p) in panels.iter().enumerate() {
        let x = GAP + (i % COLUMNS) as f64 * (PANEL_W + GAP);
        let y = HEADER_H + (i / COLUMNS) as f64 * (PANEL_H + GAP);
        writeln!(svg, r#"<g transform="translate({x:.0},{y:.0})">"#)?;
        writeln!(
            svg,
            r##"<rect width="{PANEL_W}" height="{PANEL_H}" rx="3" fill="#181b1f" stroke="#2c3235"/>"##
        )?;
        let title = p["title"].as_str().unwrap_or_default();
        writeln!(
            svg,
            r##"<text x="10" y="20" fill="#d8d9da" font-size="13" font-weight="bold">{}</text>"##,
            esc(title)
        )?;
        if p["type"] == "table" {
            table(&mut svg, p)?;
        } else {
            timeseries(&mut svg, p, start, end)?;
        }
        writeln!(svg, "</g>")?;
    }
    writeln!(svg, "</svg>")?;
    Ok(svg)
}

/// One named series of a panel.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

fn series_of(p: &Value) -> Vec<Series> {
    let mut all: Vec<Series> = p["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| Series {
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    points: s["points"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                                .filter(|(_, v)| v.is_finite())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Every timestamp any series has, in order.
fn timestamps(series: &[Series]) -> Vec<f64> {
    let mut ts: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    ts
}

fn value_at(s: &Series, t: f64) -> f64 {
    s.points.iter().find(|p| p.0 == t).map_or(0.0, |p| p.1)
}

fn timeseries(svg: &mut String, p: &Value, start: f64, end: f64) -> Result<()> {
    let unit = p["unit"].as_str().unwrap_or("short");
    let stacking = p["stacking"].as_str().unwrap_or("none");
    let series = series_of(p);
    let ts = timestamps(&series);
    // Stacked panels draw cumulative bands; percent stacking as shares of the sum.
    let stacked = stacking == "normal" || stacking == "percent";
    let mut bands: Vec<Vec<(f64, f64, f64)>> = Vec::new(); // (t, low, high) per series
    if stacked {
        let mut base = vec![0.0; ts.len()];
        let totals: Vec<f64> = ts
            .iter()
            .map(|&t| series.iter().map(|s| value_at(s, t)).sum())
            .collect();
        for s in &series {
            let mut band = Vec::new();
            for (i, &t) in ts.iter().enumerate() {
                let mut v = value_at(s, t);
                if stacking == "percent" {
                    v = if totals[i] > 0.0 { v / totals[i] } else { 0.0 };
                }
                band.push((t, base[i], base[i] + v));
                base[i] += v;
            }
            bands.push(band);
        }
    }
    let y_max = if stacking == "percent" {
        1.0
    } else if stacked {
        bands
            .iter()
            .flat_map(|b| b.iter().map(|p| p.2))
            .fold(0.0, f64::max)
    } else {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
    };
    let y_max = nice_ceiling(y_max);
    let y_unit = if stacking == "percent" {
        "percent"
    } else {
        unit
    };
    let span = (end - start).max(1.0);
    let px = |t: f64| PLOT_LEFT + (t - start) / span * PLOT_W;
    let py = |v: f64| PLOT_TOP + PLOT_H - v / y_max * PLOT_H;
    // Grid and axes.
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let y = py(v);
        writeln!(
            svg,
            r##"<line x1="{PLOT_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#2c3235"/>"##,
            PLOT_LEFT + PLOT_W
        )?;
        writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#8e8e8e" font-size="10" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 6.0,
            y + 3.0,
            esc(&format_value(v, y_unit))
        )?;
    }
    for k in 0..=4 {
        let t = start + span * f64::from(k) / 4.0;
        let secs = (t - start).round() as i64;
        writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#8e8e8e" font-size="10" text-anchor="middle">+{}:{:02}</text>"##,
            px(t),
            PLOT_TOP + PLOT_H + 14.0,
            secs / 60,
            secs % 60
        )?;
    }
    if series.iter().all(|s| s.points.is_empty()) {
        writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#8e8e8e" font-size="12" text-anchor="middle">No data</text>"##,
            PLOT_LEFT + PLOT_W / 2.0,
            PLOT_TOP + PLOT_H / 2.0
        )?;
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if stacked {
            let band = &bands[i];
            if band.is_empty() {
                continue;
            }
            let mut pts: Vec<String> = band
                .iter()
                .map(|&(t, _, hi)| format!("{:.1},{:.1}", px(t), py(hi)))
                .collect();
            pts.extend(
                band.iter()
                    .rev()
                    .map(|&(t, lo, _)| format!("{:.1},{:.1}", px(t), py(lo))),
            );
            writeln!(
                svg,
                r#"<polygon points="{}" fill="{color}" fill-opacity="0.55" stroke="{color}" stroke-width="1"/>"#,
                pts.join(" ")
            )?;
        } else if s.points.len() == 1 {
            let (t, v) = s.points[0];
            writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                px(t),
                py(v)
            )?;
        } else if !s.points.is_empty() {
            let pts: Vec<String> = s
                .points
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", px(t), py(v)))
                .collect();
            writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                pts.join(" ")
            )?;
        }
    }
    legend(svg, &series)
}

/// Colour swatches and names under the plot, in as many rows as fit.
fn legend(svg: &mut String, series: &[Series]) -> Result<()> {
    let (mut x, mut y) = (10.0, PLOT_TOP + PLOT_H + 32.0);
    for (i, s) in series.iter().enumerate() {
        let w = 22.0 + 6.2 * s.name.chars().count() as f64;
        if x + w > PANEL_W - 8.0 {
            x = 10.0;
            y += 15.0;
        }
        if y > PANEL_H - 6.0 {
            writeln!(
                svg,
                r##"<text x="{x:.1}" y="{:.1}" fill="#8e8e8e" font-size="10">…</text>"##,
                y - 15.0
            )?;
            break;
        }
        let color = PALETTE[i % PALETTE.len()];
        writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/>"#,
            y - 5.0
        )?;
        writeln!(
            svg,
            r##"<text x="{:.1}" y="{y:.1}" fill="#c7d0d9" font-size="10">{}</text>"##,
            x + 16.0,
            esc(&s.name)
        )?;
        x += w;
    }
    Ok(())
}

/// The per-stage table: one row per stage, p50 / p95 / share columns.
fn table(svg: &mut String, p: &Value) -> Result<()> {
    let mut stages: Vec<String> = Vec::new();
    let mut cells = std::collections::BTreeMap::new();
    for r in p["rows"].as_array().context("table rows")? {
        let stage = r["stage"].as_str().unwrap_or("other").to_string();
        let stat = r["stat"].as_str().unwrap_or("?").to_string();
        let v = r["value"].as_f64().unwrap_or(f64::NAN);
        if !stages.contains(&stage) {
            stages.push(stage.clone());
        }
        cells.insert((stage, stat), v);
    }
    // Stages in pipeline order, unknown ones after.
    let order = [
        "fetching",
        "backgroundRemoval",
        "segmentation",
        "expansion",
        "encoding",
        "storing",
    ];
    stages.sort_by_key(|s| order.iter().position(|o| o == s).unwrap_or(order.len()));
    let cols = [
        ("stage", 14.0),
        ("p50", 260.0),
        ("p95", 370.0),
        ("share", 480.0),
    ];
    let row_h = 26.0;
    let top = 50.0;
    for (name, x) in cols {
        writeln!(
            svg,
            r##"<text x="{x}" y="{top}" fill="#6e9fff" font-size="12" font-weight="bold">{name}</text>"##
        )?;
    }
    for (i, stage) in stages.iter().enumerate() {
        let y = top + (i as f64 + 1.0) * row_h;
        writeln!(
            svg,
            r##"<line x1="10" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#2c3235"/>"##,
            y - 17.0,
            PANEL_W - 10.0,
            y - 17.0
        )?;
        writeln!(
            svg,
            r##"<text x="14" y="{y:.1}" fill="#d8d9da" font-size="12">{}</text>"##,
            esc(stage)
        )?;
        for (stat, x) in &cols[1..] {
            let v = cells.get(&(stage.clone(), (*stat).to_string())).copied();
            let text = match v {
                Some(v) if v.is_finite() && *stat == "share" => format!("{:.1} %", v * 100.0),
                Some(v) if v.is_finite() => format_value(v, "s"),
                _ => "–".to_string(),
            };
            writeln!(
                svg,
                r##"<text x="{x}" y="{y:.1}" fill="#d8d9da" font-size="12">{}</text>"##,
                esc(&text)
            )?;
            if *stat == "share"
                && let Some(v) = v.filter(|v| v.is_finite())
            {
                writeln!(
                    svg,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="6" fill="#7EB26D"/>"##,
                    x + 52.0,
                    y - 8.0,
                    (v.clamp(0.0, 1.0) * 60.0).max(0.5)
                )?;
            }
        }
    }
    Ok(())
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// `v` in Grafana's unit: seconds as ms/s, bytes as kB/MB, percent, else plain.
fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "s" if v == 0.0 => "0 s".to_string(),
        "s" if v < 1.0 => format!("{} ms", trim(v * 1000.0)),
        "s" => format!("{} s", trim(v)),
        "bytes" if v >= 1e6 => format!("{} MB", trim(v / 1e6)),
        "bytes" if v >= 1e3 => format!("{} kB", trim(v / 1e3)),
        "bytes" => format!("{} B", trim(v)),
        "percent" => format!("{:.0} %", v * 100.0),
        "ops" => format!("{} ops/s", trim(v)),
        _ => trim(v),
    }
}

/// At most three significant digits, no trailing zeros.
fn trim(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "source": "unit <test>",
            "start": 1000.0, "end": 1120.0, "step": 2.0, "rateInterval": "1m",
            "panels": [
                {"title": "Latency", "type": "timeseries", "unit": "s", "stacking": "none",
                 "series": [{"name": "encoding p50", "points": [[1000.0, 0.02], [1060.0, 0.05], [1120.0, 0.04]]},
                            {"name": "expansion p50", "points": [[1060.0, 1.5]]}],
                 "rows": []},
                {"title": "Share", "type": "timeseries", "unit": "s", "stacking": "percent",
                 "series": [{"name": "a", "points": [[1000.0, 1.0], [1060.0, 3.0]]},
                            {"name": "b", "points": [[1000.0, 1.0], [1060.0, 1.0]]}],
                 "rows": []},
                {"title": "Table", "type": "table", "unit": null, "stacking": null, "series": [],
                 "rows": [{"stage": "encoding", "stat": "p50", "value": 0.025},
                          {"stage": "encoding", "stat": "share", "value": 0.25},
                          {"stage": "backgroundRemoval", "stat": "p95", "value": 1.25}]}
            ]
        })
    }

    #[test]
    fn the_picture_is_well_formed_svg_with_every_panel_and_series() {
        let svg = render(&sample()).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
        for want in ["Latency", "Share", "Table", "encoding p50", "expansion p50"] {
            assert!(texts.contains(&want), "{want} missing: {texts:?}");
        }
        assert!(svg.contains("unit &lt;test&gt;"), "escaped source");
        let count = |tag: &str| doc.descendants().filter(|n| n.has_tag_name(tag)).count();
        assert_eq!(count("polyline"), 1, "one line of three points");
        assert_eq!(count("circle"), 1, "a one-point series is a dot");
        assert_eq!(count("polygon"), 2, "two stacked bands");
        // Table: stages in pipeline order, values in their units.
        let rm = texts
            .iter()
            .position(|t| *t == "backgroundRemoval")
            .unwrap();
        let enc = texts.iter().position(|t| *t == "encoding").unwrap();
        assert!(rm < enc, "{texts:?}");
        assert!(texts.contains(&"25 ms") && texts.contains(&"25.0 %") && texts.contains(&"1.25 s"));
    }

    #[test]
    fn percent_stacking_fills_the_plot_to_the_top() {
        let svg = render(&sample()).unwrap();
        // The upper band of the share panel reaches 100 % (the plot's top edge, y = PLOT_TOP).
        let top = format!(",{PLOT_TOP:.1}");
        let share_part = svg.split("Share").nth(1).unwrap();
        let polygon = share_part
            .lines()
            .filter(|l| l.starts_with("<polygon"))
            .nth(1)
            .unwrap();
        assert!(polygon.contains(&top), "{polygon}");
    }

    #[test]
    fn axis_maxima_and_units_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.047), 0.05);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(format_value(0.0475, "s"), "47.5 ms");
        assert_eq!(format_value(2.0, "s"), "2 s");
        assert_eq!(format_value(2_500_000.0, "bytes"), "2.5 MB");
        assert_eq!(format_value(0.5, "percent"), "50 %");
    }

    #[test]
    fn the_committed_picture_is_the_drawing_of_the_committed_data() {
        let docs = crate::workspace_root().join("docs");
        let data: Value = serde_json::from_str(
            &std::fs::read_to_string(docs.join("dashboard-data.json")).unwrap(),
        )
        .unwrap();
        let svg = std::fs::read_to_string(docs.join("dashboard.svg")).unwrap();
        assert!(
            render(&data).unwrap() == svg,
            "docs/dashboard.svg is stale: run `cargo xtask dashboard-picture docs/dashboard-data.json`"
        );
    }
}
