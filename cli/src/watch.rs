//! `watch`: follows one ClothJob through a watch on the object (resuming from the last
//! resourceVersion when the connection drops, re-reading it when that version is gone), with a
//! progress bar redrawn at most four times a second on a terminal and plain lines otherwise;
//! ends with the outputs and stage timing tables.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use clothjob_api::conditions::{self, COMPLETE, FAILED};
use clothjob_api::{ClothJob, ClothJobStatus, StageState};
use futures::{StreamExt, TryStreamExt};
use kube::api::{WatchEvent, WatchParams};
use kube::{Api, ResourceExt};

use crate::args::Format;
use crate::client::Connection;
use crate::error::{CommandError, EXIT_FAILED, EXIT_OK, is_not_found};
use crate::render::{self, Style, left, right, table};

/// Shortest time between two redraws of the bar.
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// Width of the progress bar in cells.
const BAR_WIDTH: usize = 30;

/// How a ClothJob ended, if it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still going.
    Running,
    /// `Complete` is True.
    Succeeded,
    /// `Failed` is True: reason and message.
    Failed(String, String),
}

/// The outcome the status shows.
pub fn outcome(cj: &ClothJob) -> Outcome {
    let s = cj.status.clone().unwrap_or_default();
    let conds = s.conditions.clone().unwrap_or_default();
    if conditions::is_true(&conds, COMPLETE) {
        Outcome::Succeeded
    } else if conditions::is_true(&conds, FAILED) {
        Outcome::Failed(
            s.reason.unwrap_or_else(|| "Failed".into()),
            s.message.unwrap_or_default(),
        )
    } else {
        Outcome::Running
    }
}

/// `watch NAME`: follows the job and returns the exit code (0 succeeded, 1 failed).
pub async fn watch_command(
    conn: &Connection,
    name: &str,
    timeout: Option<Duration>,
    format: Option<Format>,
    style: Style,
) -> Result<i32, CommandError> {
    let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let mut view = match format {
        Some(_) => None,
        None => Some(Renderer::new(style, std::io::stdout())),
    };
    let cj = follow(&api, &conn.namespace, name, timeout, |cj| {
        if let Some(v) = view.as_mut() {
            v.update(cj);
        }
    })
    .await;
    if let Some(v) = view.as_mut() {
        v.finish();
    }
    let cj = cj?;
    if let Some(f) = format {
        crate::print_objects(Some(f), std::slice::from_ref(&cj))?;
    }
    match outcome(&cj) {
        Outcome::Succeeded => {
            if format.is_none() {
                print!("{}", summary(&cj, style));
            }
            Ok(EXIT_OK)
        }
        Outcome::Failed(reason, message) => {
            if format.is_none() {
                print!("{}", timings_table(cj.status.as_ref(), style));
            }
            eprintln!("ClothJob {name} failed: {reason}: {message}");
            Ok(EXIT_FAILED)
        }
        Outcome::Running => Ok(EXIT_FAILED),
    }
}

/// Follows ClothJob `name` until it finishes, calling `on_update` with every version seen;
/// returns the finished ClothJob. A deleted ClothJob is a failure; `timeout` gives up.
pub async fn follow(
    api: &Api<ClothJob>,
    namespace: &str,
    name: &str,
    timeout: Option<Duration>,
    mut on_update: impl FnMut(Option<&ClothJob>),
) -> Result<ClothJob, CommandError> {
    let started = Instant::now();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let sleep_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => futures::future::pending().await,
        }
    };
    tokio::pin!(sleep_deadline);
    let mut tick = tokio::time::interval(REDRAW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let not_found = || CommandError::NotFound {
        name: name.to_string(),
        namespace: namespace.to_string(),
    };
    let get = || async {
        api.get(name).await.map_err(|e| {
            if is_not_found(&e) {
                not_found()
            } else {
                CommandError::Api {
                    action: format!("reading ClothJob {name}"),
                    source: e,
                }
            }
        })
    };
    let mut cj = get().await?;
    on_update(Some(&cj));
    let mut failures = 0u32;
    loop {
        if outcome(&cj) != Outcome::Running {
            return Ok(cj);
        }
        let rv = cj.resource_version().unwrap_or_default();
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(290);
        let stream = tokio::select! {
            s = api.watch(&wp, &rv) => s,
            _ = &mut sleep_deadline => return Err(CommandError::TimedOut(started.elapsed(), name.to_string())),
        };
        let mut stream = match stream {
            Ok(s) => {
                failures = 0;
                s.boxed()
            }
            // No right to watch (or list) ClothJobs here: retrying cannot help.
            Err(kube::Error::Api(s)) if matches!(s.code, 401 | 403) => {
                return Err(CommandError::Api {
                    action: format!("watching ClothJob {name}"),
                    source: kube::Error::Api(s),
                });
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    eprintln!("watch of ClothJob {name} failed ({e}); retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))) => continue,
                    _ = &mut sleep_deadline => return Err(CommandError::TimedOut(started.elapsed(), name.to_string())),
                }
            }
        };
        loop {
            tokio::select! {
                ev = stream.try_next() => match ev {
                    Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        cj = o;
                        on_update(Some(&cj));
                        if outcome(&cj) != Outcome::Running {
                            return Ok(cj);
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(_))) => {
                        return Err(CommandError::JobFailed {
                            name: name.to_string(),
                            reason: "Deleted".into(),
                            message: "the ClothJob was deleted while being watched".into(),
                        });
                    }
                    Ok(Some(WatchEvent::Bookmark(b))) => {
                        cj.metadata.resource_version = Some(b.metadata.resource_version);
                    }
                    Ok(Some(WatchEvent::Error(status))) => {
                        if status.code == 410 {
                            // The version is gone from the watch cache: read the object again.
                            cj = get().await?;
                            on_update(Some(&cj));
                        } else {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        break;
                    }
                    // The server ended the watch (its time-out) or the connection dropped:
                    // resume from the last version seen.
                    Ok(None) | Err(_) => break,
                },
                _ = tick.tick() => on_update(None),
                _ = &mut sleep_deadline => return Err(CommandError::TimedOut(started.elapsed(), name.to_string())),
            }
        }
    }
}

/// Draws the progress of one ClothJob: stage lines as stages finish, and a bar (on a
/// terminal, redrawn in place) or plain lines on changes.
pub struct Renderer<W: Write> {
    style: Style,
    out: W,
    latest: Option<ClothJob>,
    printed: HashSet<String>,
    attempt: i32,
    last_plain: String,
    bar_shown: bool,
    last_draw: Option<Instant>,
    dirty: bool,
    started: Instant,
}

impl<W: Write> Renderer<W> {
    /// A renderer writing to `out`.
    pub fn new(style: Style, out: W) -> Self {
        Self {
            style,
            out,
            latest: None,
            printed: HashSet::new(),
            attempt: 0,
            last_plain: String::new(),
            bar_shown: false,
            last_draw: None,
            dirty: false,
            started: Instant::now(),
        }
    }

    /// A new version of the ClothJob (`None`: a clock tick, for the redraw throttle).
    pub fn update(&mut self, cj: Option<&ClothJob>) {
        if let Some(cj) = cj {
            self.absorb(cj);
        }
        if !self.style.fancy || !self.dirty {
            return;
        }
        let terminal = self
            .latest
            .as_ref()
            .is_some_and(|c| outcome(c) != Outcome::Running);
        let due = self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
        if due || terminal {
            self.draw_bar();
        }
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.style.fancy {
            if self.dirty {
                self.draw_bar();
            }
            if self.bar_shown {
                let _ = writeln!(self.out);
                self.bar_shown = false;
            }
        }
        let _ = self.out.flush();
    }

    fn line(&mut self, text: &str) {
        if self.style.fancy && self.bar_shown {
            let _ = write!(self.out, "\r\x1b[2K");
            self.bar_shown = false;
            self.dirty = true;
        }
        let _ = writeln!(self.out, "{text}");
    }

    fn absorb(&mut self, cj: &ClothJob) {
        let name = cj.name_any();
        let s = cj.status.clone().unwrap_or_default();
        let attempts = s.attempts.unwrap_or(0);
        if attempts > self.attempt {
            if attempts > 1 {
                let max = cj.spec.retries.max(0) + 1;
                let msg = format!("attempt {attempts} of {max}");
                let text = match &s.message {
                    Some(m) if !m.is_empty() => format!("{msg} ({m})"),
                    _ => msg,
                };
                self.line(&self.style.yellow(&text));
            }
            self.attempt = attempts;
        }
        for st in s.stages.iter().flatten() {
            let key = format!(
                "{}/{}@{}",
                self.attempt,
                st.name,
                st.started_at.as_ref().map_or(0, |t| t.0.as_millisecond())
            );
            let (mark, done) = match st.state {
                StageState::Succeeded => (self.style.green("✓"), true),
                StageState::Skipped => (self.style.dim("-"), true),
                StageState::Failed => (self.style.red("✗"), true),
                _ => (String::new(), false),
            };
            if done && self.printed.insert(key) {
                let plain_mark = match st.state {
                    StageState::Succeeded => "done",
                    StageState::Skipped => "skipped",
                    _ => "failed",
                };
                let secs = st
                    .duration_ms
                    .map(|ms| format!("{:.2} s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let backend = st.backend.clone().unwrap_or_default();
                let text = if self.style.fancy {
                    format!("  {mark} {:<18} {:<8} {secs}", st.name, backend)
                } else {
                    format!("{name}: stage {} {plain_mark} {secs} {backend}", st.name)
                        .trim_end()
                        .to_string()
                };
                self.line(&text);
            }
        }
        if !self.style.fancy {
            let text = plain_line(&name, &s);
            if text != self.last_plain {
                self.line(&text);
                self.last_plain = text;
            }
        }
        self.latest = Some(cj.clone());
        self.dirty = true;
    }

    fn draw_bar(&mut self) {
        let Some(cj) = &self.latest else { return };
        let s = cj.status.clone().unwrap_or_default();
        let pct = s.progress.unwrap_or(0).clamp(0, 100);
        let what = match outcome(cj) {
            Outcome::Succeeded => self.style.green("Succeeded"),
            Outcome::Failed(r, _) => self.style.red(&format!("Failed: {r}")),
            Outcome::Running => match (s.phase.map(|p| p.as_str()), s.stage.as_deref()) {
                (Some("Running"), Some(stage)) if pct > 0 || stage != "fetching" => {
                    stage.to_string()
                }
                _ => s.reason.clone().unwrap_or_else(|| "Pending".into()),
            },
        };
        let elapsed = self.started.elapsed().as_secs_f64();
        let text = format!(
            "\r\x1b[2K{} {} {:>3}%  {}  {}",
            self.style.bold(&cj.name_any()),
            render::bar(f64::from(pct) / 100.0, BAR_WIDTH),
            pct,
            what,
            self.style.dim(&format!("{elapsed:.1}s"))
        );
        let _ = write!(self.out, "{text}");
        let _ = self.out.flush();
        self.bar_shown = true;
        self.dirty = false;
        self.last_draw = Some(Instant::now());
    }
}

/// The plain line for a status: `tshirt: Running 45% expansion`.
fn plain_line(name: &str, s: &ClothJobStatus) -> String {
    let phase = s.phase.map_or("Pending", |p| p.as_str());
    let pct = s.progress.unwrap_or(0);
    let mut text = format!("{name}: {phase} {pct}%");
    match (phase, s.stage.as_deref(), s.reason.as_deref()) {
        ("Running", Some(stage), _) => text.push_str(&format!(" {stage}")),
        (_, _, Some(reason)) => text.push_str(&format!(" ({reason})")),
        _ => {}
    }
    text
}

/// The outputs table and the stage timing table of a finished ClothJob.
pub fn summary(cj: &ClothJob, style: Style) -> String {
    let s = cj.status.clone().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&outputs_table(&s));
    out.push('\n');
    out.push_str(&timings_table(Some(&s), style));
    out
}

/// ROLE, SIZE, DIMENSIONS, URI per output.
pub fn outputs_table(s: &ClothJobStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .outputs
        .iter()
        .flatten()
        .map(|o| {
            vec![
                o.name.clone(),
                render::human_bytes(o.bytes),
                format!("{}x{}", o.width, o.height),
                o.uri.clone(),
            ]
        })
        .collect();
    table(
        &[
            left("ROLE"),
            right("SIZE"),
            right("DIMENSIONS"),
            left("URI"),
        ],
        &rows,
    )
}

/// STAGE, BACKEND, SECONDS, SHARE and a bar per stage that ran, and the total.
pub fn timings_table(s: Option<&ClothJobStatus>, style: Style) -> String {
    let rows = crate::report::breakdown(s.and_then(|s| s.stages.as_deref()).unwrap_or_default());
    crate::report::breakdown_table(&rows, style)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn version(progress: i32, stage: &str, done: &[&str], complete: bool) -> ClothJob {
        let stages: Vec<serde_json::Value> = done
            .iter()
            .map(|s| serde_json::json!({"name": s, "state": "Succeeded", "backend": "builtin", "durationMs": 120, "startedAt": "2026-11-25T10:00:01Z"}))
            .collect();
        let mut status = serde_json::json!({
            "phase": if complete { "Succeeded" } else { "Running" },
            "progress": progress, "stage": stage, "attempts": 1, "stages": stages,
        });
        if complete {
            status["conditions"] = serde_json::json!([{"type": "Complete", "status": "True", "reason": "Succeeded", "message": "", "lastTransitionTime": "2026-11-25T10:00:05Z"}]);
            status["outputs"] = serde_json::json!([{"name": "catalog", "uri": "s3://b/o/catalog.jpg", "mediaType": "image/jpeg", "width": 768, "height": 1024, "bytes": 2048, "sha256": "00"}]);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
            "metadata": {"name": "tee", "namespace": "closet"},
            "spec": {"source": {"url": "http://a/b.jpg"}, "output": {"uri": "s3://b/o"}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn plain_output_is_one_line_per_change_without_escape_codes() {
        let mut r = Renderer::new(Style::plain(), Vec::new());
        r.update(Some(&version(10, "backgroundRemoval", &[], false)));
        r.update(Some(&version(10, "backgroundRemoval", &[], false)));
        r.update(None);
        r.update(Some(&version(
            30,
            "segmentation",
            &["backgroundRemoval"],
            false,
        )));
        r.update(Some(&version(100, "done", &["backgroundRemoval"], true)));
        r.finish();
        let out = String::from_utf8(r.out).unwrap();
        assert_eq!(
            out,
            "tee: Running 10% backgroundRemoval\n\
             tee: stage backgroundRemoval done 0.12 s builtin\n\
             tee: Running 30% segmentation\n\
             tee: Succeeded 100%\n"
        );
        let summary = summary(
            &version(100, "done", &["backgroundRemoval"], true),
            Style::plain(),
        );
        assert!(
            summary.contains("catalog  2.0 KiB    768x1024  s3://b/o/catalog.jpg"),
            "{summary}"
        );
        assert!(!summary.contains('\x1b'));
    }

    #[test]
    fn the_bar_is_redrawn_in_place_at_most_every_quarter_second() {
        let mut r = Renderer::new(Style { fancy: true }, Vec::new());
        r.update(Some(&version(10, "backgroundRemoval", &[], false)));
        // Versions arriving within the throttle window are not drawn at once...
        r.update(Some(&version(20, "backgroundRemoval", &[], false)));
        r.update(Some(&version(25, "backgroundRemoval", &[], false)));
        let draws =
            |r: &Renderer<Vec<u8>>| String::from_utf8_lossy(&r.out).matches("\r\x1b[2K").count();
        assert_eq!(draws(&r), 1);
        // ...but a finished stage's line is printed above the bar, and the final state at once.
        r.update(Some(&version(100, "done", &["backgroundRemoval"], true)));
        r.finish();
        let out = String::from_utf8(r.out).unwrap();
        assert!(
            out.contains("✓\x1b[0m backgroundRemoval  builtin  0.12 s\n"),
            "{out:?}"
        );
        assert!(out.ends_with("\n"), "{out:?}");
        let last = out.rsplit("\r\x1b[2K").next().unwrap();
        assert!(
            last.contains("100%") && last.contains("Succeeded"),
            "{last:?}"
        );
        assert!(!out.contains(" 20%") && !out.contains(" 25%"), "{out:?}");
    }
}
