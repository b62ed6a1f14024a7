//! `cancel` (sets `spec.cancel`; the operator stops the runner), `retry` (a new ClothJob from
//! a failed one's spec, linked by a label and annotations) and `logs` (the runner pods' logs,
//! per attempt).

use std::collections::BTreeMap;

use clothjob_api::{ClothJob, contract};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use crate::args::{CancelArgs, Format, LogsArgs, RetryArgs};
use crate::client::Connection;
use crate::error::{CommandError, EXIT_FAILED, EXIT_OK, is_not_found};
use crate::render::Style;
use crate::submit::{LABEL_SOURCE_OF, owner_ref};
use crate::watch::{Outcome, follow, outcome};

/// Reason of a ClothJob ended by `spec.cancel`.
pub const CANCELLED: &str = "Cancelled";
/// Label of a retry: the name of the ClothJob it retries.
pub const LABEL_RETRY_OF: &str = "closetconnect.io/retry-of";
/// Annotation of a retry: the uid of the ClothJob it retries.
pub const ANNOTATION_RETRY_OF_UID: &str = "closetconnect.io/retry-of-uid";

/// Reads ClothJob `name`, a missing one being [`CommandError::NotFound`].
pub async fn get(conn: &Connection, name: &str) -> Result<ClothJob, CommandError> {
    let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
    api.get(name).await.map_err(|e| {
        if is_not_found(&e) {
            CommandError::NotFound {
                name: name.to_string(),
                namespace: conn.namespace.clone(),
            }
        } else {
            CommandError::Api {
                action: format!("reading ClothJob {name}"),
                source: e,
            }
        }
    })
}

fn phase(cj: &ClothJob) -> &'static str {
    cj.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("Pending", |p| p.as_str())
}

/// `cancel NAME [--wait]`.
pub async fn cancel(
    conn: &Connection,
    a: &CancelArgs,
    format: Option<Format>,
    _style: Style,
) -> Result<i32, CommandError> {
    let cj = get(conn, &a.name).await?;
    match outcome(&cj) {
        Outcome::Failed(r, _) if r == CANCELLED => {
            if format.is_none() {
                println!("{} was already cancelled", crate::object_name(&cj));
            } else {
                crate::print_objects(format, &[cj])?;
            }
            return Ok(EXIT_OK);
        }
        Outcome::Running => {}
        _ => {
            return Err(CommandError::WrongState(format!(
                "ClothJob {} already finished ({}): nothing to cancel",
                a.name,
                phase(&cj)
            )));
        }
    }
    let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let patch = serde_json::json!({"spec": {"cancel": true}});
    let mut cj = api
        .patch(&a.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(CommandError::api(format!(
            "setting spec.cancel of ClothJob {}",
            a.name
        )))?;
    if a.wait {
        cj = follow(&api, &conn.namespace, &a.name, a.timeout, |_| {}).await?;
    }
    if format.is_some() {
        crate::print_objects(format, std::slice::from_ref(&cj))?;
    }
    match outcome(&cj) {
        Outcome::Running => {
            if format.is_none() {
                println!(
                    "{} cancel requested (the operator stops its runner)",
                    crate::object_name(&cj)
                );
            }
            Ok(EXIT_OK)
        }
        Outcome::Failed(r, _) if r == CANCELLED => {
            if format.is_none() {
                println!("{} cancelled", crate::object_name(&cj));
            }
            Ok(EXIT_OK)
        }
        Outcome::Failed(r, m) => {
            eprintln!(
                "ClothJob {} failed before it was cancelled: {r}: {m}",
                a.name
            );
            Ok(EXIT_FAILED)
        }
        Outcome::Succeeded => {
            eprintln!("ClothJob {} succeeded before it was cancelled", a.name);
            Ok(EXIT_FAILED)
        }
    }
}

/// The retry of `old` named `name`: the same spec (not cancelled), linked by a label and an
/// annotation.
pub fn retry_object(old: &ClothJob, name: &str) -> ClothJob {
    let mut spec = old.spec.clone();
    spec.cancel = false;
    let mut cj = ClothJob::new(name, spec);
    cj.metadata.namespace = old.namespace();
    cj.metadata.labels = Some(BTreeMap::from([(
        LABEL_RETRY_OF.to_string(),
        old.name_any(),
    )]));
    let mut annotations = BTreeMap::from([(LABEL_RETRY_OF.to_string(), old.name_any())]);
    if let Some(uid) = &old.metadata.uid {
        annotations.insert(ANNOTATION_RETRY_OF_UID.to_string(), uid.clone());
    }
    cj.metadata.annotations = Some(annotations);
    cj
}

/// `<old>-r<n>`, within 63 characters.
pub fn retry_name(old: &str, n: usize) -> String {
    let suffix = format!("-r{n}");
    let keep = 63usize.saturating_sub(suffix.len());
    let base: String = old.chars().take(keep).collect();
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// `retry NAME [--name NEW] [--watch]`.
pub async fn retry(
    conn: &Connection,
    a: &RetryArgs,
    format: Option<Format>,
    style: Style,
) -> Result<i32, CommandError> {
    let old = get(conn, &a.name).await?;
    if !matches!(outcome(&old), Outcome::Failed(..)) {
        return Err(CommandError::WrongState(format!(
            "only a Failed ClothJob can be retried; {} is {}",
            a.name,
            phase(&old)
        )));
    }
    let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let secrets: Api<Secret> = Api::namespaced(conn.client.clone(), &conn.namespace);
    // A photo Secret the plugin made is owned by the old ClothJob: the retry owns it too.
    let photo = match &old.spec.source.secret_ref {
        Some(r) => {
            let s = secrets
                .get_opt(&r.name)
                .await
                .map_err(CommandError::api(format!(
                    "reading Secret {} with the photo",
                    r.name
                )))?;
            match s {
                Some(s) => Some(s),
                None => {
                    return Err(CommandError::WrongState(format!(
                        "the photo's Secret {} is gone: submit the photo again",
                        r.name
                    )));
                }
            }
        }
        None => None,
    };
    let created = match &a.new_name {
        Some(n) => {
            crate::submit::check_name(n)?;
            api.create(&PostParams::default(), &retry_object(&old, n))
                .await
                .map_err(CommandError::api(format!("creating ClothJob {n}")))?
        }
        None => {
            let lp = ListParams::default().labels(&format!("{LABEL_RETRY_OF}={}", a.name));
            let mut n = api
                .list(&lp)
                .await
                .map_err(CommandError::api("listing earlier retries"))?
                .items
                .len()
                + 1;
            loop {
                let name = retry_name(&a.name, n);
                match api
                    .create(&PostParams::default(), &retry_object(&old, &name))
                    .await
                {
                    Ok(c) => break c,
                    Err(kube::Error::Api(s)) if s.code == 409 && n < 100 => n += 1,
                    Err(e) => {
                        return Err(CommandError::Api {
                            action: format!("creating ClothJob {name}"),
                            source: e,
                        });
                    }
                }
            }
        }
    };
    if let Some(secret) = photo
        && secret.labels().get(LABEL_SOURCE_OF).is_some()
        && let Some(owner) = owner_ref(&created)
    {
        let mut owners = secret.metadata.owner_references.clone().unwrap_or_default();
        owners.push(owner);
        let patch = serde_json::json!({
            "metadata": {"ownerReferences": owners, "resourceVersion": secret.resource_version()},
        });
        secrets
            .patch(
                &secret.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(CommandError::api(format!(
                "making ClothJob {} an owner of the photo's Secret {}",
                created.name_any(),
                secret.name_any()
            )))?;
    }
    let name = created.name_any();
    if format.is_none() {
        println!(
            "{} created (retry of {})",
            crate::object_name(&created),
            a.name
        );
    }
    if a.watch {
        return crate::watch::watch_command(conn, &name, a.timeout, format, style).await;
    }
    if format.is_some() {
        crate::print_objects(format, &[created])?;
    }
    Ok(EXIT_OK)
}

/// The runner pods of a ClothJob (by its uid), oldest first: pod N is attempt N.
pub async fn runner_pods(conn: &Connection, cj: &ClothJob) -> Result<Vec<Pod>, CommandError> {
    let pods: Api<Pod> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let lp = ListParams::default().labels(&format!("{}={uid}", contract::LABEL_CLOTHJOB_UID));
    let mut list = pods
        .list(&lp)
        .await
        .map_err(CommandError::api("listing the runner pods"))?
        .items;
    list.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    Ok(list)
}

/// `logs NAME [--attempt N] [-f]`.
pub async fn logs(conn: &Connection, a: &LogsArgs) -> Result<i32, CommandError> {
    let cj = get(conn, &a.name).await?;
    let pods = runner_pods(conn, &cj).await?;
    if pods.is_empty() {
        return Err(CommandError::WrongState(format!(
            "ClothJob {} has no runner pods ({}; pods are gone once its Job is deleted)",
            a.name,
            phase(&cj)
        )));
    }
    let pod = match a.attempt {
        Some(0) => return Err(CommandError::Usage("--attempt counts from 1".into())),
        Some(n) => pods.get(n - 1).ok_or_else(|| {
            CommandError::WrongState(format!(
                "ClothJob {} has {} runner pod(s): no attempt {n}",
                a.name,
                pods.len()
            ))
        })?,
        None => pods
            .last()
            .ok_or_else(|| CommandError::WrongState("no pods".into()))?,
    };
    let api: Api<Pod> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let name = pod.name_any();
    let lp = LogParams {
        container: Some(contract::RUNNER_CONTAINER.to_string()),
        follow: a.follow,
        ..Default::default()
    };
    if !a.follow {
        let text = api
            .logs(&name, &lp)
            .await
            .map_err(CommandError::api(format!("reading the logs of pod {name}")))?;
        print!("{text}");
        return Ok(EXIT_OK);
    }
    // A container that has not started yet has no log: wait for it (up to a minute).
    let mut tries = 0;
    let stream = loop {
        match api.log_stream(&name, &lp).await {
            Ok(s) => break s,
            Err(kube::Error::Api(s)) if s.code == 400 && tries < 60 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(CommandError::Api {
                    action: format!("following the logs of pod {name}"),
                    source: e,
                });
            }
        }
    };
    let mut lines = stream.lines();
    while let Some(line) = lines
        .try_next()
        .await
        .map_err(CommandError::io(format!("reading the logs of pod {name}")))?
    {
        println!("{line}");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_retry_has_the_spec_and_a_link_but_not_the_cancel() {
        let mut old: ClothJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
            "metadata": {"name": "tee", "namespace": "closet", "uid": "u-1", "labels": {"x": "y"}},
            "spec": {"source": {"url": "http://a/b.jpg"}, "output": {"uri": "file:///o"}, "retries": 5, "cancel": true},
        }))
        .unwrap();
        old.status = Some(Default::default());
        let r = retry_object(&old, "tee-r1");
        assert!(!r.spec.cancel);
        assert_eq!(r.spec.retries, 5);
        assert_eq!(r.labels()[LABEL_RETRY_OF], "tee");
        assert_eq!(r.annotations()[ANNOTATION_RETRY_OF_UID], "u-1");
        assert!(r.status.is_none());
        assert_eq!(r.namespace().as_deref(), Some("closet"));
        assert_eq!(retry_name("tee", 2), "tee-r2");
        assert_eq!(retry_name(&"a".repeat(63), 10).len(), 63);
    }
}
