//! Configuration files of the node's components: kubelet, kube-proxy and their kubeconfigs.

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Writes a kubeconfig with client-cert credentials from files.
pub(crate) fn write_cert_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<()> {
    let read = |p: &Path| -> Result<String> { Ok(STANDARD.encode(std::fs::read(p)?)) };
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": {
            "server": server,
            "certificate-authority-data": read(ca)?,
        }}],
        "users": [{ "name": "user", "user": {
            "client-certificate-data": read(cert)?,
            "client-key-data": read(key)?,
        }}],
        "contexts": [{ "name": "default", "context": { "cluster": "cluster", "user": "user" } }],
        "current-context": "default",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&kc)?)?;
    Ok(())
}

/// Settings the kubelet's config is made from.
pub(crate) struct KubeletSettings<'a> {
    pub dir: &'a Path,
    pub pki: &'a Path,
    pub node_ip: &'a str,
    pub cgroup_root: &'a str,
    pub runtime_socket: &'a Path,
    pub max_pods: u32,
}

/// Writes the KubeletConfiguration; returns its path.
pub(crate) fn write_kubelet_config(s: &KubeletSettings<'_>) -> Result<PathBuf> {
    let pki = s.pki.display();
    let config = serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // This machine mounts cgroup v1 (hybrid): allowed explicitly since 1.35.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": s.cgroup_root,
        "cgroupsPerQOS": true,
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": format!("unix://{}", s.runtime_socket.display()),
        "address": s.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": format!("{pki}/kubelet.crt"),
        "tlsPrivateKeyFile": format!("{pki}/kubelet.key"),
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": format!("{pki}/ca.crt") },
        },
        "authorization": { "mode": "Webhook" },
        // No cluster DNS in the test cluster; pods get no resolv.conf from the host.
        "resolvConf": "",
        "podLogsDir": format!("{}/pod-logs", s.dir.display()),
        "failSwapOn": false,
        "maxPods": s.max_pods,
        "serializeImagePulls": false,
        // Imported images must never be garbage-collected.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "nodeStatusUpdateFrequency": "4s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "protectKernelDefaults": false,
        "makeIPTablesUtilChains": false,
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "logging": { "verbosity": 1 },
    });
    let path = s.dir.join("kubelet-config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}

/// Writes the KubeProxyConfiguration (nftables mode, rules inside the namespace).
pub(crate) fn write_kube_proxy_config(
    dir: &Path,
    kubeconfig: &Path,
    node_name: &str,
    pod_cidr: &str,
) -> Result<PathBuf> {
    let config = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig.display().to_string() },
        "mode": "nftables",
        "hostnameOverride": node_name,
        "clusterCIDR": pod_cidr,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        // Leave the host-wide conntrack table size alone.
        "conntrack": { "maxPerCore": 0 },
        "logging": { "verbosity": 1 },
    });
    let path = dir.join("kube-proxy-config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(path)
}
