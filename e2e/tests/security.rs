//! End-to-end: creating a ClothJob grants nothing more than processing a photo. On the real
//! node's apiserver: manifests that would widen the runner pod are rejected at `kubectl apply`
//! with the CRD's CEL messages; an image or service account outside the operator's allow-lists
//! fails the ClothJob with reason InvalidSpec and creates nothing; a ClothJob completes in a
//! namespace that enforces the `restricted` Pod Security profile; and a runner's own token
//! (TokenRequest for its per-job service account) reads and patches only its own ClothJob,
//! never another's, and never the operator's status fields (the chart's
//! ValidatingAdmissionPolicy).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::wait_for;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

const MINUTE: Duration = Duration::from_secs(60);

/// `kubectl apply` of a ClothJob with this spec (and extra kubectl flags): success, stderr.
fn kubectl_apply(case: &Case, name: &str, spec: &str, flags: &[&str]) -> Result<(bool, String)> {
    let yaml = format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: 'https://x.test/a.jpg'}}\n  output: {{uri: 'file:///out'}}\n{spec}"
    );
    let path = case.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    let out = case
        .cp
        .kubectl()
        .args(["apply", "-n", &case.ns])
        .args(flags)
        .arg("-f")
        .arg(&path)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// The Job the operator made for ClothJob `name`, once it exists.
async fn wait_job(case: &Case, name: &str) -> Result<Job> {
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    let lp = ListParams::default().labels(&format!("{}={name}", contract::LABEL_CLOTHJOB));
    wait_for(
        &format!("the Job of {name}"),
        MINUTE,
        Duration::from_millis(200),
        || async { Ok(jobs.list(&lp).await?.items.into_iter().next()) },
    )
    .await
    .with_context(|| case.diagnostics())
}

fn pod_service_account(job: &Job) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .service_account_name
        .clone()
}

fn code(r: Result<impl Sized, kube::Error>) -> Option<u16> {
    match r {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(s.code),
        Err(_) => Some(0),
    }
}

/// A ClothJob whose photo ConfigMap does not exist: its runner pod waits to mount it (never
/// runs), while its Job and per-job identity exist.
fn parked(name: &str) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{configMapRef: {{name: no-such-photo, key: photo.jpg}}}}\n  output: {{uri: 'file:///tmp/out'}}\n  retries: 0\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_widening_the_runner_pod_are_rejected_at_apply() -> Result<()> {
    let case = Case::new("policy-apply").await?;
    let strict: &[&str] = &[];
    // Without strict field validation unknown fields are pruned: the CEL rules still refuse
    // what is left (a volume without an allowed source).
    let lax: &[&str] = &["--validate=false"];
    let cases: [(&str, String, &[&str], &str); 10] = [
        (
            "hostpath",
            "  runner: {volumes: [{name: host, hostPath: {path: /}}], volumeMounts: [{name: host, mountPath: /host}]}\n".into(),
            strict,
            "unknown field \"spec.runner.volumes[0].hostPath\"",
        ),
        (
            "hostpath-lax",
            "  runner: {volumes: [{name: host, hostPath: {path: /}}], volumeMounts: [{name: host, mountPath: /host}]}\n".into(),
            lax,
            "a runner volume needs exactly one of configMap, secret, emptyDir, persistentVolumeClaim or csi (hostPath and other sources are not allowed)",
        ),
        (
            "two-sources",
            "  runner: {volumes: [{name: v, emptyDir: {}, secret: {secretName: s}}]}\n".into(),
            strict,
            "a runner volume needs exactly one of configMap, secret",
        ),
        (
            "csi-writable",
            "  runner: {volumes: [{name: v, csi: {driver: x.example.com}}]}\n".into(),
            strict,
            "a csi runner volume must be readOnly: true",
        ),
        (
            "env-uid",
            "  runner: {env: [{name: CLOTHJOB_UID, value: someone-else}]}\n".into(),
            strict,
            "runner.env may not set CLOTHJOB_*, LD_*, GEMINI_API_KEY, POD_NAME, TMPDIR, HOME or ORT_DYLIB_PATH",
        ),
        (
            "env-preload",
            "  runner: {env: [{name: LD_PRELOAD, value: /models/x.so}]}\n".into(),
            strict,
            "runner.env may not set CLOTHJOB_*, LD_*",
        ),
        (
            "env-resource",
            "  runner: {env: [{name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}]}\n".into(),
            strict,
            "unknown field \"spec.runner.env[0].valueFrom.resourceFieldRef\"",
        ),
        (
            "mount-tmp",
            "  runner: {volumes: [{name: v, emptyDir: {}}], volumeMounts: [{name: v, mountPath: /tmp}]}\n".into(),
            strict,
            "mountPath may not be at, under or above the operator's paths /tmp, /var/run/clothjob, /var/run/secrets and /dev",
        ),
        (
            "mount-over-token",
            "  runner: {volumes: [{name: v, emptyDir: {}}], volumeMounts: [{name: v, mountPath: /var/run}]}\n".into(),
            strict,
            "mountPath may not be at, under or above the operator's paths",
        ),
        (
            "mount-unknown",
            "  runner: {volumes: [{name: v, emptyDir: {}}], volumeMounts: [{name: w, mountPath: /data}]}\n".into(),
            strict,
            "every runner.volumeMounts entry must name one of runner.volumes",
        ),
    ];
    for (name, spec, flags, want) in &cases {
        let (ok, stderr) = kubectl_apply(&case, name, spec, flags)?;
        assert!(!ok, "{name} was accepted");
        assert!(
            stderr.contains(want),
            "{name}: expected {want:?} in:\n{stderr}"
        );
    }
    let api = case.clothjobs();
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    // A hostPath smuggled in beside an allowed source, without strict validation, is pruned:
    // what is stored (and mounted) is the emptyDir alone.
    let spec = "  runner: {volumes: [{name: v, emptyDir: {}, hostPath: {path: /}}], volumeMounts: [{name: v, mountPath: /data}]}\n";
    let (ok, stderr) = kubectl_apply(&case, "smuggled", spec, lax)?;
    assert!(ok, "{stderr}");
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        case.client.clone(),
        &case.ns,
        &kube::api::ApiResource::erase::<ClothJob>(&()),
    );
    let stored = raw.get("smuggled").await?;
    let volume = &stored.data["spec"]["runner"]["volumes"][0];
    assert_eq!(volume, &serde_json::json!({"name": "v", "emptyDir": {}}));
    // A valid runner section is accepted.
    let spec = "  runner: {env: [{name: RUST_LOG, value: debug}, {name: REGION, valueFrom: {configMapKeyRef: {name: c, key: k}}}], volumes: [{name: models, persistentVolumeClaim: {claimName: models, readOnly: true}}, {name: cache, emptyDir: {}}], volumeMounts: [{name: models, mountPath: /models, readOnly: true}, {name: cache, mountPath: /cache}]}\n";
    let (ok, stderr) = kubectl_apply(&case, "valid", spec, strict)?;
    assert!(ok, "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_or_service_account_outside_the_allow_lists_fails_with_invalid_spec() -> Result<()>
{
    let case = Case::new("policy-invalid").await?;
    case.create(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: miner}\nspec:\n  source: {url: 'https://x.test/a.jpg'}\n  output: {uri: 'file:///tmp/out'}\n  runner: {image: 'evil.example.com/miner:1'}\n",
    )
    .await?;
    case.create(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: borrowed}\nspec:\n  source: {url: 'https://x.test/a.jpg'}\n  output: {uri: 'file:///tmp/out'}\n  runner: {serviceAccountName: default}\n",
    )
    .await?;
    let api = case.clothjobs();
    for (name, words) in [
        (
            "miner",
            &[
                "spec.runner.image \"evil.example.com/miner:1\" is not allowed",
                contract::DEFAULT_RUNNER_IMAGE,
            ][..],
        ),
        (
            "borrowed",
            &[
                "spec.runner.serviceAccountName \"default\" is not allowed",
                "allows none",
            ][..],
        ),
    ] {
        let cj = wait_condition(&api, name, conditions::FAILED, MINUTE)
            .await
            .with_context(|| case.diagnostics())?;
        let status = cj.status.context("status")?;
        assert_eq!(status.reason.as_deref(), Some("InvalidSpec"), "{name}");
        let message = status.message.unwrap_or_default();
        for w in words {
            assert!(message.contains(w), "{name}: {w:?} not in {message:?}");
        }
    }
    // Nothing was created for them: no Job, no runner identity.
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    assert!(jobs.list(&ListParams::default()).await?.items.is_empty());
    let sas: Api<ServiceAccount> = Api::namespaced(case.client.clone(), &case.ns);
    let names: Vec<String> = sas
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(contract::RUNNER_SA_PREFIX)),
        "{names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_image_and_service_account_are_used() -> Result<()> {
    let case = Case::with_operator_args(
        "policy-allowed",
        &[
            "--allowed-runner-images=registry.example.com/runner:gpu",
            "--allowed-runner-service-accounts=models-reader",
        ],
    )
    .await?;
    case.cp
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: models-reader, namespace: {}}}\n",
            case.ns
        ))
        .await?;
    case.create(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {name: gpu}\nspec:\n  source: {configMapRef: {name: no-such-photo, key: photo.jpg}}\n  output: {uri: 'file:///tmp/out'}\n  runner: {image: 'registry.example.com/runner:gpu', imagePullPolicy: Never, serviceAccountName: models-reader}\n",
    )
    .await?;
    let job = wait_job(&case, "gpu").await?;
    assert_eq!(pod_service_account(&job).as_deref(), Some("models-reader"));
    let image = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].image.clone());
    assert_eq!(image, Some(Some("registry.example.com/runner:gpu".into())));
    // The per-job Role is bound to the allowed account; no per-job account is made.
    let per_job = format!(
        "{}{}",
        contract::RUNNER_SA_PREFIX,
        job.metadata.name.as_deref().unwrap_or_default()
    );
    let rbs: Api<RoleBinding> = Api::namespaced(case.client.clone(), &case.ns);
    let rb = rbs.get(&per_job).await?;
    let subject = &rb.subjects.context("subjects")?[0];
    assert_eq!(subject.name, "models-reader");
    let sas: Api<ServiceAccount> = Api::namespaced(case.client.clone(), &case.ns);
    assert!(sas.get_opt(&per_job).await?.is_none());
    let as_reader = case
        .cp
        .client_for_service_account(&case.ns, "models-reader")
        .await?;
    let api: Api<ClothJob> = Api::namespaced(as_reader, &case.ns);
    api.get("gpu")
        .await
        .context("the allowed account reads its ClothJob")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clothjob_completes_in_a_namespace_enforcing_restricted_pod_security() -> Result<()> {
    let case = Case::new("restricted").await?;
    let namespaces: Api<Namespace> = Api::all(case.client.clone());
    let labels = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    namespaces
        .patch(&case.ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await?;
    // The namespace enforces the profile: a plain pod is refused.
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.ns);
    let plain: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": contract::DEFAULT_RUNNER_IMAGE}]},
    }))?;
    match pods.create(&PostParams::default(), &plain).await {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("PodSecurity") => {}
        other => bail!("a plain pod in a restricted namespace: {other:?}"),
    }
    let photo = tshirt_jpeg(240, 300)?;
    case.cp
        .apply_yaml(&serde_json::to_string(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "photo", "namespace": case.ns},
            "binaryData": {"photo.jpg": BASE64_STANDARD.encode(&photo)},
        }))?)
        .await?;
    case.create(&format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: shirt}}\nspec:\n  source: {{configMapRef: {{name: photo, key: photo.jpg}}}}\n  output: {}\n  retries: 0\n",
        case.output()
    ))
    .await?;
    let cj = wait_condition(
        &case.clothjobs(),
        "shirt",
        conditions::COMPLETE,
        Duration::from_secs(240),
    )
    .await
    .with_context(|| case.diagnostics())?;
    let outputs = cj.status.and_then(|s| s.outputs).unwrap_or_default();
    assert_eq!(outputs.len(), 7, "{outputs:?}");
    for o in &outputs {
        assert!(!case.read_output(&o.uri)?.is_empty(), "{}", o.uri);
    }
    // The pod ran as the restricted profile asks, as its own per-job account.
    let pod = case
        .runner_pods("shirt")
        .await?
        .into_iter()
        .next()
        .context("no runner pod")?;
    let spec = pod.spec.context("pod spec")?;
    assert!(
        spec.service_account_name
            .as_deref()
            .is_some_and(|s| s.starts_with(contract::RUNNER_SA_PREFIX)),
        "{:?}",
        spec.service_account_name
    );
    let psc = spec.security_context.context("pod securityContext")?;
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    let sc = spec.containers[0]
        .security_context
        .clone()
        .context("container securityContext")?;
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let terminated = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .context("terminated runner")?;
    assert_eq!(terminated.exit_code, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_token_reaches_only_its_own_clothjob_and_its_own_fields() -> Result<()> {
    let case = Case::new("runner-identity").await?;
    case.create(&parked("mine")).await?;
    case.create(&parked("theirs")).await?;
    let mine = wait_job(&case, "mine").await?;
    let theirs = wait_job(&case, "theirs").await?;
    let sa = pod_service_account(&mine).context("no service account")?;
    let mine_job = mine.metadata.name.clone().unwrap_or_default();
    assert_eq!(sa, format!("{}{mine_job}", contract::RUNNER_SA_PREFIX));
    assert_ne!(
        Some(sa.clone()),
        pod_service_account(&theirs),
        "one account per job"
    );
    // The identity is owned by the ClothJob (garbage-collected with it).
    let uid = case.clothjobs().get("mine").await?.metadata.uid;
    let roles: Api<Role> = Api::namespaced(case.client.clone(), &case.ns);
    let role = roles.get(&sa).await?;
    let owner = &role.metadata.owner_references.clone().context("owner")?[0];
    assert_eq!(
        (owner.kind.as_str(), Some(owner.uid.clone())),
        ("ClothJob", uid)
    );
    // The operator wrote its fields before the runner tries to change them.
    wait_for(
        "the operator's phase of mine",
        MINUTE,
        Duration::from_millis(200),
        || async {
            Ok(case
                .clothjobs()
                .get("mine")
                .await?
                .status
                .and_then(|s| s.phase))
        },
    )
    .await?;

    let runner = case.cp.client_for_service_account(&case.ns, &sa).await?;
    let api: Api<ClothJob> = Api::namespaced(runner.clone(), &case.ns);
    api.get("mine")
        .await
        .context("the runner reads its ClothJob")?;
    let apply = PatchParams::apply(contract::RUNNER_MANAGER).force();
    let progress = serde_json::json!({
        "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
        "status": {"stage": "backgroundRemoval", "progress": 5},
    });
    api.patch_status("mine", &apply, &Patch::Apply(&progress))
        .await
        .context("the runner patches its progress")?;
    let seen = case
        .clothjobs()
        .get("mine")
        .await?
        .status
        .unwrap_or_default();
    assert_eq!(seen.progress, Some(5));

    // Another ClothJob of the same namespace: neither read nor written.
    assert_eq!(
        code(api.get("theirs").await),
        Some(403),
        "get of another ClothJob"
    );
    assert_eq!(
        code(
            api.patch_status("theirs", &apply, &Patch::Apply(&progress))
                .await
        ),
        Some(403),
        "status patch of another ClothJob"
    );
    let merge = serde_json::json!({"status": {"progress": 99}});
    assert_eq!(
        code(
            api.patch_status("theirs", &PatchParams::default(), &Patch::Merge(&merge))
                .await
        ),
        Some(403)
    );
    assert_eq!(
        code(api.list(&ListParams::default()).await),
        Some(403),
        "list"
    );
    assert_eq!(
        code(
            api.patch(
                "mine",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"spec": {"retries": 9}}))
            )
            .await
        ),
        Some(403),
        "the spec"
    );
    let secrets: Api<Secret> = Api::namespaced(runner.clone(), &case.ns);
    assert_eq!(
        code(secrets.get(clothjob_e2e::harness::S3_SECRET).await),
        Some(403)
    );
    let pods: Api<Pod> = Api::namespaced(runner.clone(), &case.ns);
    assert_eq!(code(pods.list(&ListParams::default()).await), Some(403));

    // Its own ClothJob's operator fields: denied by the status guard, whatever the patch type.
    let before = case
        .clothjobs()
        .get("mine")
        .await?
        .status
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let forgeries = [
        serde_json::json!({"status": {"phase": "Succeeded"}}),
        serde_json::json!({"status": {"conditions": [{
            "type": "Complete", "status": "True", "reason": "Forged",
            "message": "the runner says so", "lastTransitionTime": now}]}}),
        serde_json::json!({"status": {"completionTime": now}}),
        // A runner field beside an operator one: the whole update is denied.
        serde_json::json!({"status": {"attempts": 7, "progress": 6}}),
    ];
    for forged in &forgeries {
        let mut applied = forged.clone();
        applied["apiVersion"] = "closetconnect.io/v1alpha1".into();
        applied["kind"] = "ClothJob".into();
        for result in [
            api.patch_status("mine", &apply, &Patch::Apply(&applied))
                .await,
            api.patch_status("mine", &PatchParams::default(), &Patch::Merge(forged))
                .await,
        ] {
            match result {
                Err(kube::Error::Api(s)) if s.code == 403 => assert!(
                    s.message.contains("runner-status-guard")
                        && s.message.contains("are the operator's"),
                    "{forged}: {}",
                    s.message
                ),
                other => bail!("{forged} was not denied by the status guard: {other:?}"),
            }
        }
    }
    let after = case
        .clothjobs()
        .get("mine")
        .await?
        .status
        .unwrap_or_default();
    assert_ne!(after.phase, Some(clothjob_api::Phase::Succeeded));
    assert_ne!(after.attempts, Some(7));
    assert_eq!(
        after.progress, before.progress,
        "the denied update changed nothing"
    );
    assert!(
        after.completion_time.is_none(),
        "{:?}",
        after.completion_time
    );
    assert!(
        !after
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason == "Forged")
    );
    Ok(())
}
