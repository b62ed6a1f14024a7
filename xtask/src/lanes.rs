//! `cargo xtask test`'s test run: the workspace's test targets in concurrent lanes.
//!
//! Most of the suite's wall time is integration tests waiting on a real cluster (pods starting,
//! time-outs, back-off), one cluster per test binary, and cargo runs test binaries one after
//! another. Here each slow integration test name is its own `cargo test --workspace --test NAME`
//! (all the workspace's targets of that name), everything else one more invocation, and
//! [`LANES`] workers take them longest first. Every invocation keeps `--workspace`, so cargo
//! resolves features (and so reuses build artifacts) exactly as the `--no-run` build before it.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Lanes when `CLOTHJOB_TEST_LANES` is unset: two, as the machine has two cores and the slow
/// tests mostly wait.
pub const LANES: usize = 2;

/// The slow integration tests by target name, with their seconds in a warm CI run (2026-12-04),
/// used only to start the longest first. A name missing from the workspace is an error, so the
/// list cannot silently go stale; a new slow test runs in the "rest" unit until listed.
pub const SLOW: &[(&str, u32)] = &[
    ("api", 350),
    ("faults", 260),
    ("cli", 205),
    ("chart", 160),
    ("run", 160),
    ("lifecycle", 157),
    ("real_node", 90),
    ("scale", 81),
    ("failure_modes", 67),
    ("observability", 47),
    ("watch", 35),
    ("gemini", 31),
    ("cluster", 23),
    ("security", 23),
    ("storage", 23),
    ("leader_election", 16),
];

/// One `cargo test` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// A short name for logs (`api`, `rest`, `doc`).
    pub name: String,
    /// The arguments after `cargo test --workspace`.
    pub args: Vec<String>,
    /// Expected seconds (the order they start in).
    pub weight: u32,
}

/// The units for a workspace whose integration test targets are named `targets`: each
/// [`SLOW`] name alone, then the unit tests with every other integration test, then the doc
/// tests (cargo cannot mix `--doc` with other target flags). Longest first.
pub fn plan(targets: &BTreeSet<String>) -> Result<Vec<Unit>> {
    let missing: Vec<&str> = SLOW
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !targets.contains(*n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "xtask/src/lanes.rs lists slow tests the workspace does not have: {}",
            missing.join(", ")
        );
    }
    let mut units: Vec<Unit> = SLOW
        .iter()
        .map(|(name, weight)| Unit {
            name: (*name).to_string(),
            args: vec!["--test".into(), (*name).to_string()],
            weight: *weight,
        })
        .collect();
    let mut rest = vec!["--lib".to_string(), "--bins".to_string()];
    for t in targets {
        if !SLOW.iter().any(|(n, _)| n == t) {
            rest.push("--test".into());
            rest.push(t.clone());
        }
    }
    units.push(Unit {
        name: "rest".into(),
        args: rest,
        weight: 40,
    });
    units.push(Unit {
        name: "doc".into(),
        args: vec!["--doc".into()],
        weight: 5,
    });
    units.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.name.cmp(&b.name)));
    Ok(units)
}

/// The names of the workspace's integration test targets (`cargo metadata`'s kind `test`).
pub fn test_targets(metadata: &serde_json::Value) -> Result<BTreeSet<String>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let mut names = BTreeSet::new();
    for p in packages {
        for t in p["targets"].as_array().into_iter().flatten() {
            let is_test = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if is_test
                && t["test"].as_bool() != Some(false)
                && let Some(n) = t["name"].as_str()
            {
                names.insert(n.to_string());
            }
        }
    }
    Ok(names)
}

/// What one unit came to.
#[derive(Debug)]
pub struct Outcome {
    /// The unit.
    pub unit: Unit,
    /// Whether cargo exited 0.
    pub ok: bool,
    /// Its seconds.
    pub seconds: f64,
    /// Its output.
    pub log: PathBuf,
}

/// Runs `units` on `lanes` workers, in order, each with the command `command` makes, its output
/// in `<log_dir>/<name>.log` and printed when it ends. Every unit runs even when one fails; the
/// error names the failed ones.
pub fn run(
    units: Vec<Unit>,
    lanes: usize,
    log_dir: &Path,
    command: &(dyn Fn(&Unit) -> Command + Sync),
) -> Result<Vec<Outcome>> {
    std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let queue = Mutex::new(units.into_iter().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for lane in 0..lanes.max(1) {
            let (queue, outcomes) = (&queue, &outcomes);
            s.spawn(move || {
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                    let Some(unit) = next else { break };
                    let outcome = run_one(unit, lane, log_dir, command, started);
                    if let Ok(mut o) = outcomes.lock() {
                        o.push(outcome);
                    }
                }
            });
        }
    });
    let outcomes = outcomes
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a lane panicked"))?;
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{} ({})", o.unit.name, o.log.display()))
        .collect();
    eprintln!(
        "==> tests: {} invocations on {} lanes in {:.0} s",
        outcomes.len(),
        lanes.max(1),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("cargo test failed: {}", failed.join(", "));
    }
    Ok(outcomes)
}

fn run_one(
    unit: Unit,
    lane: usize,
    log_dir: &Path,
    command: &(dyn Fn(&Unit) -> Command + Sync),
    started: Instant,
) -> Outcome {
    let log = log_dir.join(format!("{}.log", unit.name));
    let what = format!("cargo test --workspace {}", unit.args.join(" "));
    eprintln!(
        "==> [lane {lane}, +{:.0} s] {what}",
        started.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let ok = std::fs::File::create(&log)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .and_then(|(err, out)| command(&unit).stdout(out).stderr(err).status())
        .map(|s| s.success())
        .unwrap_or_else(|e| {
            let _ = std::fs::write(&log, format!("could not run {what}: {e}\n"));
            false
        });
    let seconds = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // One block per unit, not interleaved with the other lanes.
    eprintln!(
        "==> [lane {lane}] {what}: {} in {seconds:.0} s\n{text}",
        if ok { "ok" } else { "FAILED" }
    );
    Outcome {
        unit,
        ok,
        seconds,
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn all_slow_and(extra: &[&str]) -> BTreeSet<String> {
        let mut t: BTreeSet<String> = SLOW.iter().map(|(n, _)| n.to_string()).collect();
        t.extend(extra.iter().map(|s| s.to_string()));
        t
    }

    #[test]
    fn every_test_target_runs_exactly_once_and_the_longest_start_first() {
        let units = plan(&all_slow_and(&["decode", "krew"])).unwrap();
        let mut seen: Vec<String> = Vec::new();
        for u in &units {
            for w in u.args.windows(2) {
                if w[0] == "--test" {
                    seen.push(w[1].clone());
                }
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen.len(), sorted.len(), "a target runs twice: {seen:?}");
        assert_eq!(sorted.len(), SLOW.len() + 2);
        assert!(units.windows(2).all(|w| w[0].weight >= w[1].weight));
        assert_eq!(units[0].name, "api");
        let rest = units.iter().find(|u| u.name == "rest").unwrap();
        assert_eq!(
            rest.args,
            ["--lib", "--bins", "--test", "decode", "--test", "krew"]
        );
        assert!(units.iter().any(|u| u.args == ["--doc"]));
    }

    #[test]
    fn a_slow_test_the_workspace_lacks_is_an_error() {
        let err = plan(&targets(&["api"])).unwrap_err().to_string();
        assert!(err.contains("faults"), "{err}");
    }

    #[test]
    fn targets_come_from_cargo_metadata_without_test_false_ones() {
        let meta = serde_json::json!({"packages": [
            {"targets": [
                {"name": "lib", "kind": ["lib"], "test": true},
                {"name": "api", "kind": ["test"], "test": true},
                {"name": "fuzzed", "kind": ["test"], "test": false},
            ]},
            {"targets": [{"name": "api", "kind": ["test"], "test": true}]},
        ]});
        assert_eq!(test_targets(&meta).unwrap(), targets(&["api"]));
    }

    #[test]
    fn every_unit_runs_even_after_a_failure_and_the_failed_one_is_named() {
        let dir = tempfile_dir();
        let units = vec![
            Unit {
                name: "bad".into(),
                args: vec!["exit 3".into()],
                weight: 2,
            },
            Unit {
                name: "good".into(),
                args: vec!["echo fine".into()],
                weight: 1,
            },
        ];
        let err = run(units, 2, &dir, &|u: &Unit| {
            let mut c = Command::new("bash");
            c.args(["-c", &u.args[0]]);
            c
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad") && !err.contains("good"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("good.log")).unwrap(),
            "fine\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-lanes-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
