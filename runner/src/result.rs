//! `status.json`: the record of one attempt, written by the runner into the job's output
//! directory (`<output.uri>/<namespace>/<name>/<uid>/status.json`) as its last upload, on
//! success and on every failure the runner sees itself (the source cannot be fetched, the
//! photo is not an image, a stage fails, an output cannot be stored, the spec cannot be used,
//! SIGTERM). It outlives the ClothJob (deleted after `ttlSecondsAfterFinished`): the history
//! of a job lies beside its outputs.
//!
//! The document ([`ClothJobResult`]) is versioned by `apiVersion` ([`API_VERSION`]) and
//! `kind` ([`KIND`]); fields are only added within a version, so readers ignore fields they do
//! not know. It reuses the ClothJob status types: `stages` are [`StageStatus`], `outputs`
//! [`OutputStatus`], `regions` [`RegionStatus`], `failure` [`RunnerFailure`] and `source` has
//! the keys of `spec.source` (URLs without credentials, query or fragment).
//!
//! Not recorded: failures the runner never sees (the container OOM-killed, the Job's
//! `activeDeadlineSeconds`, a pod evicted or deleted, a node lost): the file then holds what
//! the last attempt that got that far wrote, or nothing. Each attempt overwrites the file
//! (`attempt` tells which one wrote it); the ClothJob's own status is authoritative while the
//! ClothJob exists.
//!
//! Writing the file is best effort: a failure is logged at `warn` and, on an otherwise
//! succeeded run, recorded as `status.runnerFailure` with reason [`NOT_RECORDED`] (the job
//! still succeeds: its outputs are stored and listed). On a failed run it never replaces the
//! run's own error.

use std::time::Duration;

use clothjob_api::{OutputStatus, RegionStatus, RunnerFailure, Source, StageStatus};
use clothjob_backends::netguard::redact_url_str;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::progress::RunState;
use crate::store::{ObjectStoreOpts, put};

/// `apiVersion` of the document: its own group, not a served API (the file's schema evolves
/// apart from the CRD's).
pub const API_VERSION: &str = "results.closetconnect.io/v1alpha1";
/// `kind` of the document.
pub const KIND: &str = "ClothJobResult";
/// Name of the file in the job's output directory.
pub const FILE_NAME: &str = "status.json";
/// `status.runnerFailure.reason` of a succeeded run whose `status.json` could not be written.
pub const NOT_RECORDED: &str = "ResultNotRecorded";
/// How long writing `status.json` may take at the end of a run (object_store retries a
/// failing store for minutes; a run's end must not wait that long for its record).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How an attempt ended, as the runner saw it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every output was stored (and `outputs` lists them).
    Succeeded,
    /// The attempt failed; `failure` says why. A retryable failure (`failure.retryable`) may
    /// be followed by another attempt, which overwrites the file.
    Failed,
}

/// Where the photo came from: the keys of `spec.source` (a `url` or `uri` without
/// credentials, query or fragment), and what the runner read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRecord {
    /// `url`, `uri`, `secretRef` or `configMapRef`, as in the spec (redacted).
    #[serde(flatten)]
    pub spec: Source,
    /// sha256 of the bytes read, hex; absent when the source was never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size of the bytes read; absent when the source was never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The content of `status.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClothJobResult {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// The ClothJob's namespace.
    pub namespace: String,
    /// The ClothJob's name.
    pub name: String,
    /// The ClothJob's uid (also the last segment of the directory).
    pub uid: String,
    /// The ClothJob's `metadata.generation` when the runner read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The attempt that wrote the file (1 is the first), as the operator had counted it when
    /// the runner read the ClothJob.
    pub attempt: i32,
    /// Succeeded or Failed.
    pub outcome: Outcome,
    /// Why the attempt failed (`reason` is the bounded category of `status.runnerFailure`:
    /// InvalidSpec, BadInput, Interrupted, Transient, Backend, Internal); absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RunnerFailure>,
    /// When the runner started the attempt (RFC 3339, to the second).
    pub started_at: Time,
    /// When the runner wrote this file (RFC 3339, to the second).
    pub finished_at: Time,
    /// The source photo.
    pub source: SourceRecord,
    /// Every stage with its state, backend, start, end and duration (`storing` included).
    pub stages: Vec<StageStatus>,
    /// The stored outputs (uri, media type, size, sha256); empty for a failed attempt.
    #[serde(default)]
    pub outputs: Vec<OutputStatus>,
    /// Garment regions found by segmentation.
    #[serde(default)]
    pub regions: Vec<RegionStatus>,
    /// The identical ClothJob whose outputs were copied instead of running the pipeline
    /// (its outputs, under this job's directory, are the ones listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Version of the runner that wrote the file.
    pub runner_version: String,
}

/// The job a runner records its attempt for, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    /// The ClothJob's namespace.
    pub namespace: String,
    /// The ClothJob's name.
    pub name: String,
    /// The ClothJob's uid.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The attempt.
    pub attempt: i32,
    /// The spec's source, redacted ([`redact_source`]).
    pub source: Source,
    /// The job's output directory (`<prefix>/<namespace>/<name>/<uid>`).
    pub output_dir: String,
}

/// `source` without credentials, query or fragment in its `url` or `uri`.
pub fn redact_source(source: &Source) -> Source {
    Source {
        url: source.url.as_deref().map(redact_url_str),
        uri: source.uri.as_deref().map(redact_url_str),
        secret_ref: source.secret_ref.clone(),
        config_map_ref: source.config_map_ref.clone(),
    }
}

/// Writing `status.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The document could not be encoded.
    #[error("encoding {FILE_NAME}: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store refused or failed the upload.
    #[error("writing {uri}: {detail}")]
    Store {
        /// Where it was written.
        uri: String,
        /// The store's error.
        detail: String,
    },
    /// The store did not finish the upload in time.
    #[error("writing {uri}: no success within {secs} s")]
    TimedOut {
        /// Where it was written.
        uri: String,
        /// The time allowed.
        secs: u64,
    },
}

impl JobRecord {
    /// Where `status.json` goes.
    pub fn uri(&self) -> String {
        format!("{}/{FILE_NAME}", self.output_dir.trim_end_matches('/'))
    }

    /// The document of an attempt whose last state is `state`, finished at `finished_at`.
    /// Failed when `state` holds a failure.
    pub fn document(&self, state: &RunState, finished_at: Time) -> ClothJobResult {
        ClothJobResult {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            generation: self.generation,
            attempt: self.attempt,
            outcome: if state.failure.is_some() {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            },
            failure: state.failure.clone(),
            started_at: state.started_at.clone(),
            finished_at,
            source: SourceRecord {
                spec: self.source.clone(),
                sha256: state.source_sha256.clone(),
                bytes: state.source_bytes,
            },
            stages: state.stages.clone(),
            outputs: state.outputs.clone(),
            regions: state.regions.clone(),
            reused_from: state.reused_from.clone(),
            runner_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Writes the document of `state` to [`uri`](Self::uri) within `timeout`.
    pub async fn write(
        &self,
        state: &RunState,
        opts: &ObjectStoreOpts,
        timeout: Duration,
    ) -> Result<(), ResultError> {
        let uri = self.uri();
        let doc = self.document(state, Time(Timestamp::now()));
        let mut bytes = serde_json::to_vec_pretty(&doc)?;
        bytes.push(b'\n');
        match tokio::time::timeout(timeout, put(&uri, bytes, opts)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ResultError::Store {
                uri,
                detail: match e {
                    RunError::StoreOutput { detail, .. } => detail,
                    other => other.to_string(),
                },
            }),
            Err(_) => Err(ResultError::TimedOut {
                uri,
                secs: timeout.as_secs(),
            }),
        }
    }

    /// [`write`](Self::write), logged: `info` once written, `warn` with the error otherwise.
    /// Returns the error's text when it failed (for the status), never fails the caller.
    pub async fn write_or_warn(
        &self,
        state: &RunState,
        opts: &ObjectStoreOpts,
        timeout: Duration,
    ) -> Option<String> {
        let uri = self.uri();
        match self.write(state, opts, timeout).await {
            Ok(()) => {
                tracing::info!(%uri, "wrote the attempt's record");
                None
            }
            Err(e) => {
                tracing::warn!(%uri, error = %e, "could not write the attempt's record");
                Some(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clothjob_api::progress::Stage;
    use clothjob_api::{KeyRef, StageState};
    use serde_json::json;

    use super::*;

    fn record() -> JobRecord {
        JobRecord {
            namespace: "shop".into(),
            name: "tshirt".into(),
            uid: "0a1b-2c3d".into(),
            generation: Some(2),
            attempt: 1,
            source: redact_source(&Source {
                url: Some(
                    "https://user:pw@photos.example.com/a/b.jpg?X-Amz-Signature=s3cr3t#f".into(),
                ),
                ..Default::default()
            }),
            output_dir: "s3://bucket/catalog/shop/tshirt/0a1b-2c3d/".into(),
        }
    }

    fn succeeded() -> RunState {
        let mut s = RunState::new();
        s.source_sha256 = Some("ab".repeat(32));
        s.source_bytes = Some(1234);
        for stage in Stage::ALL {
            s.started(stage, "builtin");
            s.finished(stage, "builtin", Duration::from_millis(7));
        }
        s.outputs = vec![OutputStatus {
            name: "cutout".into(),
            uri: "s3://bucket/catalog/shop/tshirt/0a1b-2c3d/cutout.png".into(),
            media_type: "image/png".into(),
            width: 480,
            height: 640,
            bytes: 99,
            sha256: "cd".repeat(32),
        }];
        s.done();
        s
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn a_success_round_trips_with_its_documented_keys() {
        let doc = record().document(&succeeded(), at(1_700_000_000));
        let text = serde_json::to_string(&doc).unwrap();
        let back: ClothJobResult = serde_json::from_str(&text).unwrap();
        // Times are written to the second (as in the status): the text is the fixed point.
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert_eq!((back.outcome, &back.outputs), (doc.outcome, &doc.outputs));

        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], "ClothJobResult");
        assert_eq!(
            (&v["namespace"], &v["name"], &v["uid"]),
            (&json!("shop"), &json!("tshirt"), &json!("0a1b-2c3d"))
        );
        assert_eq!((&v["generation"], &v["attempt"]), (&json!(2), &json!(1)));
        assert_eq!(v["outcome"], "Succeeded");
        assert!(v.get("failure").is_none(), "{v}");
        assert_eq!(v["finishedAt"], "2023-11-14T22:13:20Z");
        assert!(
            v["startedAt"].as_str().unwrap().ends_with('Z'),
            "RFC 3339 in UTC: {v}"
        );
        assert_eq!(
            v["source"],
            json!({
                "url": "https://photos.example.com/a/b.jpg",
                "sha256": "ab".repeat(32),
                "bytes": 1234,
            })
        );
        let stages = v["stages"].as_array().unwrap();
        assert_eq!(stages.len(), Stage::ALL.len());
        assert_eq!(stages.last().unwrap()["name"], "storing");
        for s in stages {
            assert_eq!(s["state"], "Succeeded", "{s}");
            assert_eq!(s["backend"], "builtin", "{s}");
            assert_eq!(s["durationMs"], 7, "{s}");
        }
        let out = &v["outputs"][0];
        for key in [
            "name",
            "uri",
            "mediaType",
            "width",
            "height",
            "bytes",
            "sha256",
        ] {
            assert!(out.get(key).is_some(), "{key} missing in {out}");
        }
        assert_eq!(v["runnerVersion"], env!("CARGO_PKG_VERSION"));
        assert!(!text.contains("s3cr3t") && !text.contains("pw@"), "{text}");
    }

    #[test]
    fn a_failure_names_its_reason_and_lists_no_outputs() {
        let mut s = RunState::new();
        s.started(Stage::BackgroundRemoval, "builtin");
        s.outputs.push(OutputStatus::default());
        s.failed(RunnerFailure {
            reason: "BadInput".into(),
            message: "decoding the photo: not an image".into(),
            retryable: false,
        });
        let mut r = record();
        r.source = redact_source(&Source {
            secret_ref: Some(KeyRef {
                name: "photos".into(),
                key: "shirt.jpg".into(),
            }),
            ..Default::default()
        });
        let doc = r.document(&s, at(1_700_000_000));
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["outcome"], "Failed");
        assert_eq!(
            v["failure"],
            json!({"reason": "BadInput", "message": "decoding the photo: not an image", "retryable": false})
        );
        assert_eq!(v["outputs"], json!([]));
        assert_eq!(
            v["source"],
            json!({"secretRef": {"name": "photos", "key": "shirt.jpg"}})
        );
        assert_eq!(doc.stages[0].state, StageState::Failed);
        assert_eq!(doc.stages[1].state, StageState::Pending);
        let back: ClothJobResult = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        assert_eq!(back.failure, doc.failure);
    }

    #[test]
    fn readers_ignore_fields_a_later_minor_revision_adds() {
        let mut v = serde_json::to_value(record().document(&succeeded(), at(0))).unwrap();
        v["somethingNew"] = json!({"x": 1});
        v["source"]["alsoNew"] = json!(true);
        let back: ClothJobResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.outcome, Outcome::Succeeded);
    }

    #[test]
    fn the_file_lies_in_the_output_directory() {
        assert_eq!(
            record().uri(),
            "s3://bucket/catalog/shop/tshirt/0a1b-2c3d/status.json"
        );
    }

    #[tokio::test]
    async fn it_is_written_beside_the_outputs_and_a_failed_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = record();
        r.output_dir = format!("file://{}/shop/tshirt/u1", dir.path().display());
        let opts = ObjectStoreOpts::default();
        r.write(&succeeded(), &opts, WRITE_TIMEOUT).await.unwrap();
        let path = dir.path().join("shop/tshirt/u1/status.json");
        let doc: ClothJobResult = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc.outcome, Outcome::Succeeded);

        // A directory where the file should be: the store refuses the upload.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = r
            .write_or_warn(&succeeded(), &opts, WRITE_TIMEOUT)
            .await
            .expect("writing over a directory succeeded");
        assert!(err.contains("status.json"), "{err}");
    }
}
