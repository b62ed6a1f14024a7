//! The control plane's PKI: a CA, the apiserver serving cert, an admin client cert
//! (`O=system:masters`), the ECDSA P-256 service-account signing key pair (PEM) and, for a real
//! node, the kubelet's client cert (`system:node:<name>` in `system:nodes`) and serving cert.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// PEM-encoded certificates and keys.
pub(crate) struct Pki {
    pub ca_cert: String,
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// Private key (PKCS#8 PEM) that signs service-account tokens.
    pub sa_key: String,
    /// Its public key (SPKI PEM) that verifies them.
    pub sa_pub: String,
    /// The kubelet's certificates, when [`PkiOptions::node`] asked for them.
    pub node: Option<NodePki>,
}

/// Certificates of a real node's kubelet.
pub(crate) struct NodePki {
    /// Client cert `CN=system:node:<name>, O=system:nodes` (the Node authorizer's identity).
    pub client_cert: String,
    /// Its key.
    pub client_key: String,
    /// Serving cert for the kubelet's port (SAN: the node address and name).
    pub serving_cert: String,
    /// Its key.
    pub serving_key: String,
}

/// What to put in the PKI beyond the loopback defaults.
#[derive(Default)]
pub(crate) struct PkiOptions {
    /// Extra IP SANs of the apiserver serving cert (node address, `kubernetes` ClusterIP).
    pub apiserver_ips: Vec<std::net::IpAddr>,
    /// A node: its name and address.
    pub node: Option<(String, std::net::IpAddr)>,
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// Generates a fresh PKI (ECDSA P-256 everywhere).
pub(crate) fn generate(opts: &PkiOptions) -> Result<Pki> {
    let ca_key = KeyPair::generate().context("generating CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = dn("clothjob-testenv-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing CA")?;
    let ca_cert_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, &ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    for ip in &opts.apiserver_ips {
        serving.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    serving.distinguished_name = dn("kube-apiserver", None);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving
        .signed_by(&serving_key, &issuer)
        .context("signing serving cert")?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name = dn("clothjob-testenv-admin", Some("system:masters"));
    admin.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin
        .signed_by(&admin_key, &issuer)
        .context("signing admin cert")?;

    let sa_key = KeyPair::generate()?;

    let node = match &opts.node {
        Some((name, ip)) => Some(node_pki(&issuer, name, *ip)?),
        None => None,
    };

    Ok(Pki {
        ca_cert: ca_cert_pem,
        ca_key: ca_key.serialize_pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_key: sa_key.serialize_pem(),
        sa_pub: sa_key.public_key_pem(),
        node,
    })
}

fn node_pki(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    name: &str,
    ip: std::net::IpAddr,
) -> Result<NodePki> {
    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = dn(&format!("system:node:{name}"), Some("system:nodes"));
    client.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client
        .signed_by(&client_key, issuer)
        .context("signing the kubelet client cert")?;
    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![name.to_string()])?;
    serving.subject_alt_names.push(SanType::IpAddress(ip));
    serving.distinguished_name = dn(name, None);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving
        .signed_by(&serving_key, issuer)
        .context("signing the kubelet serving cert")?;
    Ok(NodePki {
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
    })
}
