//! `netguard`: which network addresses the runner may connect to (request-forgery guard).
//!
//! A ClothJob names URLs the runner fetches or posts to (`source.url`,
//! `backgroundRemoval.remote.url`, `expansion.gemini.endpoint`, `https://` ONNX
//! models). Left alone, an author could point them at the cloud metadata service
//! (`169.254.169.254`), the node's loopback, or any private service of the cluster.
//! A [`NetworkPolicy`] refuses every address that is not public, in every form it
//! can take, unless the operator allowed it (`--allowed-networks`, given to the
//! runner pod as [`ENV_ALLOWED_NETWORKS`]):
//!
//! - IPv4: `0.0.0.0/8` ("this network", `0.0.0.0` unspecified), `10/8`,
//!   `172.16/12`, `192.168/16` (private), `100.64/10` (shared, CGNAT), `127/8`
//!   (loopback), `169.254/16` (link-local), `192.0.0.0/24` (IETF protocol
//!   assignments), `192.0.2.0/24`, `198.51.100/24`, `203.0.113/24`
//!   (documentation), `192.88.99.0/24` (6to4 relay anycast), `198.18/15`
//!   (benchmarking), `224/4` (multicast), `240/4` (reserved),
//!   `255.255.255.255` (broadcast);
//! - IPv6: `::` (unspecified), `::1` (loopback), `fe80::/10` (link-local),
//!   `fec0::/10` (site-local), `fc00::/7` (unique local), `ff00::/8`
//!   (multicast), `100::/64` (discard-only), `2001::/23` (IETF protocol
//!   assignments: Teredo, benchmarking, ORCHID), `2001:db8::/32` and
//!   `3fff::/20` (documentation), `5f00::/16` (SRv6), `64:ff9b:1::/48`
//!   (local-use NAT64) and anything outside global unicast `2000::/3`;
//! - IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//!   IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4
//!   `2002:aabb:ccdd::`) are judged by that IPv4 address.
//!
//! The list of allowed networks and hosts is comma-separated: CIDRs
//! (`127.0.0.0/8`, `fd00::/8`), single addresses (`10.0.0.7`), host names
//! (`rembg.default.svc.cluster.local`, any address it resolves to is then
//! allowed) and host-name suffixes (`*.svc.cluster.local` or
//! `.svc.cluster.local`).
//!
//! The check runs after DNS resolution ([`GuardedResolver`] drops refused
//! addresses and fails when none is left), on literal-IP hosts (which a resolver
//! never sees: [`NetworkPolicy::check_url`] before a request), and on every
//! redirect ([`NetworkPolicy::redirect_policy`]). [`NetworkPolicy::guard_blocking`]
//! and [`NetworkPolicy::guard_async`] put all of that on a reqwest client builder
//! (and turn proxies off: a proxy would resolve the target itself). The
//! decisions are pure functions ([`NetworkPolicy::refusal`],
//! [`NetworkPolicy::filter_resolved`]), tested with resolution results fed in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Env var with the networks and hosts the runner may reach although they are not
/// public; the same name as `clothjob_api::contract::ENV_ALLOWED_NETWORKS`.
pub const ENV_ALLOWED_NETWORKS: &str = "CLOTHJOB_ALLOWED_NETWORKS";

/// How a refusal tells the reader what to do.
pub const ALLOW_HINT: &str = "allow it with the operator's --allowed-networks";

/// The most redirects a guarded client follows.
pub const MAX_REDIRECTS: usize = 10;

/// A network in CIDR notation: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix`; `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4 network never holds an IPv6 address:
    /// callers judge IPv4-carrying IPv6 forms by their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n`, `x::y/n`, or a single address (`/32`, `/128`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length {p:?} is not 0..={max}"))?,
        };
        Cidr::new(addr, prefix).ok_or_else(|| format!("prefix length {prefix} is too long"))
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` agree.
fn prefix_eq(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// An allowed host name: exact, or every name under a suffix.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// `rembg.default.svc` (lower case, no trailing dot).
    Exact(String),
    /// `.svc.cluster.local`: any name ending so (not the bare suffix itself).
    Suffix(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Suffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A host name as compared: lower case, without a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The list of allowed networks and hosts could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ENV_ALLOWED_NETWORKS} / --allowed-networks: entry {entry:?} is neither a CIDR nor a host name: {reason}"
)]
pub struct ParseNetworksError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A connection the policy refused: the address is not public and not allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused to connect to {target}: {reason}; {ALLOW_HINT}")]
pub struct ConnectRefused {
    /// What was asked: `169.254.169.254`, or `name (address)` for a resolved name.
    pub target: String,
    /// The refused address.
    pub ip: IpAddr,
    /// Why it is not public: `link-local address`, `loopback address`, …
    pub reason: &'static str,
}

/// Which addresses a client may connect to: public ones, and those the operator
/// allowed. `Default` (and [`NetworkPolicy::public_only`]) allows nothing more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    networks: Vec<Cidr>,
    hosts: Vec<HostPattern>,
}

impl fmt::Display for NetworkPolicy {
    /// The allowed entries, comma-separated (`public addresses only` when none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.networks.is_empty() && self.hosts.is_empty() {
            return f.write_str("public addresses only");
        }
        let entries: Vec<String> = self
            .networks
            .iter()
            .map(ToString::to_string)
            .chain(self.hosts.iter().map(ToString::to_string))
            .collect();
        f.write_str(&entries.join(","))
    }
}

impl NetworkPolicy {
    /// Public addresses only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Public addresses and the comma-separated CIDRs, addresses and host names
    /// of `list` (empty entries and spaces are ignored).
    pub fn parse(list: &str) -> Result<Self, ParseNetworksError> {
        let mut policy = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            policy.add(entry)?;
        }
        Ok(policy)
    }

    /// The policy of [`ENV_ALLOWED_NETWORKS`] (public addresses only when unset).
    /// Read this once at the top of a program and pass it down.
    pub fn from_env() -> Result<Self, ParseNetworksError> {
        match std::env::var(ENV_ALLOWED_NETWORKS) {
            Ok(list) => Self::parse(&list),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ParseNetworksError {
                entry: "(the whole value)".to_owned(),
                reason: "not UTF-8".to_owned(),
            }),
        }
    }

    fn add(&mut self, entry: &str) -> Result<(), ParseNetworksError> {
        let bad = |reason: String| ParseNetworksError {
            entry: entry.to_owned(),
            reason,
        };
        let looks_like_ip =
            entry.contains('/') || entry.contains(':') || entry.parse::<IpAddr>().is_ok();
        if looks_like_ip {
            let cidr = entry.parse::<Cidr>().map_err(bad)?;
            self.networks.push(cidr);
            return Ok(());
        }
        let (suffix, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => match entry.strip_prefix('.') {
                Some(rest) => (true, rest),
                None => (false, entry),
            },
        };
        let name = normalize_host(name);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad(
                "host names are letters, digits, '-' and '.', optionally after '*.'".to_owned(),
            ));
        }
        if name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad("it looks like a partial IP address".to_owned()));
        }
        self.hosts.push(if suffix {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        });
        Ok(())
    }

    /// Whether no network or host is allowed beyond the public ones.
    pub fn is_public_only(&self) -> bool {
        self.networks.is_empty() && self.hosts.is_empty()
    }

    /// Whether the host name `host` is on the allowed list (then every address
    /// it resolves to is allowed).
    pub fn allows_host_name(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.iter().any(|p| p.matches(&host))
    }

    /// Whether `ip` (or the IPv4 address an IPv6 form carries) is in an allowed network.
    pub fn allows_network(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.networks
            .iter()
            .any(|n| n.contains(ip) || embedded.is_some_and(|v4| n.contains(v4)))
    }

    /// Why a connection to `ip` is refused, or `None` when it is allowed: public,
    /// or in an allowed network.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allows_network(ip) {
            return None;
        }
        non_public_reason(ip)
    }

    /// Refuses `ip` (asked as `host`) unless it is allowed.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), ConnectRefused> {
        if self.allows_host_name(host) {
            return Ok(());
        }
        match self.refusal(ip) {
            None => Ok(()),
            Some(reason) => Err(ConnectRefused {
                target: target_name(host, ip),
                ip,
                reason,
            }),
        }
    }

    /// The addresses `host` resolved to that may be connected to (in their
    /// order); an error naming the first refused one when none is left. A host
    /// on the allowed list keeps all of them.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ResolveRefused> {
        let mut kept = Vec::new();
        let mut first_refused = None;
        for addr in addrs {
            match self.check_ip(host, addr.ip()) {
                Ok(()) => kept.push(addr),
                Err(e) => {
                    first_refused.get_or_insert(e);
                }
            }
        }
        match (kept.is_empty(), first_refused) {
            (false, _) => Ok(kept),
            (true, Some(refused)) => Err(ResolveRefused::Refused(refused)),
            (true, None) => Err(ResolveRefused::NoAddress(host.to_owned())),
        }
    }

    /// Checks a URL before a request (or a redirect) to it: http(s) only, and a
    /// literal IP host must be allowed (a resolver never sees those). Names are
    /// checked when they resolve ([`GuardedResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), CheckUrlError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CheckUrlError::Scheme {
                url: redact_url(url),
            });
        }
        match url.host() {
            Some(Host::Ipv4(ip)) => self
                .check_ip(&ip.to_string(), IpAddr::V4(ip))
                .map_err(CheckUrlError::Refused),
            Some(Host::Ipv6(ip)) => self
                .check_ip(&ip.to_string(), IpAddr::V6(ip))
                .map_err(CheckUrlError::Refused),
            Some(Host::Domain(_)) => Ok(()),
            None => Err(CheckUrlError::NoHost {
                url: redact_url(url),
            }),
        }
    }

    /// Whether `url`'s host is allowed by the operator beyond the public
    /// addresses: its name is on the list, or it is a literal IP in an allowed
    /// network. (Where plain `http` is accepted only for such hosts.)
    pub fn explicitly_allows(&self, url: &Url) -> bool {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.allows_network(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.allows_network(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => self.allows_host_name(name),
            None => false,
        }
    }

    /// A redirect policy that follows at most `max` redirects, each checked with
    /// [`Self::check_url`] (a refused hop fails the request with that error,
    /// before any connection to it).
    pub fn redirect_policy(&self, max: usize) -> reqwest::redirect::Policy {
        let policy = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max {
                return attempt.error(TooManyRedirects(max));
            }
            match policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        })
    }

    /// `builder` with this policy: resolved addresses filtered, redirects
    /// checked (at most [`MAX_REDIRECTS`]; [`Redirects::None`] returns the 3xx
    /// reply itself), no proxy. The first URL of each request must still go
    /// through [`Self::check_url`] (literal IPs).
    pub fn guard_blocking(
        &self,
        builder: reqwest::blocking::ClientBuilder,
        redirects: Redirects,
    ) -> reqwest::blocking::ClientBuilder {
        builder
            .dns_resolver(Arc::new(GuardedResolver::new(self.clone())))
            .redirect(self.redirects(redirects))
            .no_proxy()
    }

    /// [`Self::guard_blocking`] for the async client.
    pub fn guard_async(
        &self,
        builder: reqwest::ClientBuilder,
        redirects: Redirects,
    ) -> reqwest::ClientBuilder {
        builder
            .dns_resolver(Arc::new(GuardedResolver::new(self.clone())))
            .redirect(self.redirects(redirects))
            .no_proxy()
    }

    fn redirects(&self, redirects: Redirects) -> reqwest::redirect::Policy {
        match redirects {
            Redirects::Follow => self.redirect_policy(MAX_REDIRECTS),
            Redirects::None => reqwest::redirect::Policy::none(),
        }
    }
}

/// Whether a guarded client follows redirects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    /// Up to [`MAX_REDIRECTS`], each hop checked.
    Follow,
    /// None: a 3xx reply is returned as it is.
    None,
}

/// A URL the policy does not let a client ask for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckUrlError {
    /// Its address is refused.
    #[error(transparent)]
    Refused(#[from] ConnectRefused),
    /// Not `http` or `https`.
    #[error("refused to connect to {url}: only http and https URLs are followed")]
    Scheme {
        /// The URL, without its query or credentials.
        url: String,
    },
    /// No host.
    #[error("refused to connect to {url}: the URL has no host")]
    NoHost {
        /// The URL, without its query or credentials.
        url: String,
    },
}

/// A name resolved to nothing the policy allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveRefused {
    /// Every address it resolved to is refused (the first one is named).
    #[error(transparent)]
    Refused(#[from] ConnectRefused),
    /// It resolved to no address at all.
    #[error("{0} resolved to no address")]
    NoAddress(String),
}

/// Too many redirects in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("more than {0} redirects")]
pub struct TooManyRedirects(pub usize);

/// The [`ConnectRefused`] or [`CheckUrlError`] somewhere in `e`'s chain of
/// sources (a reqwest error of a guarded client), as a message.
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<ConnectRefused>() {
            return Some(r.to_string());
        }
        if let Some(r) = err.downcast_ref::<CheckUrlError>() {
            return Some(r.to_string());
        }
        if let Some(ResolveRefused::Refused(r)) = err.downcast_ref::<ResolveRefused>() {
            return Some(r.to_string());
        }
        current = err.source();
    }
    None
}

/// `host (ip)`, or just `ip` when the host is that address.
fn target_name(host: &str, ip: IpAddr) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok_and(|h| h == ip) {
        ip.to_string()
    } else {
        format!("{host} ({ip})")
    }
}

/// A reqwest DNS resolver that resolves with the system resolver, then keeps only
/// the addresses the policy allows (and fails, naming the refused address, when
/// none is left).
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    policy: Arc<NetworkPolicy>,
}

impl GuardedResolver {
    /// A resolver for `policy`.
    pub fn new(policy: NetworkPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = policy.filter_resolved(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `url` as shown in messages and logs: scheme, host, port and path, without
/// credentials, query (presigned tokens) or fragment.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// [`redact_url`] of a string: parsed when it is a URL, else cut at the first
/// `?` or `#` with any `user:pass@` removed.
pub fn redact_url_str(url: &str) -> String {
    if let Ok(parsed) = Url::parse(url) {
        return redact_url(&parsed);
    }
    let cut = url.split(['?', '#']).next().unwrap_or_default();
    match cut.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => cut.to_owned(),
    }
}

/// Why `ip` is not a public address, or `None` when it is one.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => ipv4_reason(v4),
        IpAddr::V6(v6) => ipv6_reason(v6),
    }
}

fn in4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    prefix_eq(
        u128::from(Ipv4Addr::from(net).to_bits()),
        u128::from(ip.to_bits()),
        32,
        prefix,
    )
}

fn ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: [([u8; 4], u8, &str); 17] = [
        ([0, 0, 0, 0], 32, "unspecified address"),
        ([0, 0, 0, 0], 8, "\"this network\" address (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private address"),
        ([100, 64, 0, 0], 10, "shared (CGNAT) address"),
        ([127, 0, 0, 0], 8, "loopback address"),
        ([169, 254, 0, 0], 16, "link-local address"),
        ([172, 16, 0, 0], 12, "private address"),
        ([192, 0, 0, 0], 24, "IETF protocol-assignment address"),
        ([192, 0, 2, 0], 24, "documentation address"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast address"),
        ([192, 168, 0, 0], 16, "private address"),
        ([198, 18, 0, 0], 15, "benchmarking address"),
        ([198, 51, 100, 0], 24, "documentation address"),
        ([203, 0, 113, 0], 24, "documentation address"),
        ([224, 0, 0, 0], 4, "multicast address"),
        ([255, 255, 255, 255], 32, "broadcast address"),
        ([240, 0, 0, 0], 4, "reserved address"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn in6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    prefix_eq(net.to_bits(), ip.to_bits(), 128, prefix)
}

/// The IPv4 address an IPv6 form carries: IPv4-mapped (`::ffff:0:0/96`),
/// IPv4-compatible (`::/96`, but not `::` or `::1`), NAT64 (`64:ff9b::/96`),
/// 6to4 (`2002::/16`).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let low = Ipv4Addr::from_bits(bits as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if bits >> 32 == 0 && bits > 1 {
        return Some(low);
    }
    if in6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low);
    }
    if in6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    None
}

fn ipv6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return ipv4_reason(v4);
    }
    let v6 = |s: [u16; 8]| Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    let table: [(Ipv6Addr, u8, &'static str); 12] = [
        (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, "link-local address"),
        (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10, "site-local address"),
        (
            v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]),
            7,
            "private (unique local) address",
        ),
        (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, "multicast address"),
        (
            v6([0x0100, 0, 0, 0, 0, 0, 0, 0]),
            64,
            "discard-only address",
        ),
        (
            v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]),
            48,
            "local-use NAT64 address",
        ),
        (
            v6([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0]),
            32,
            "documentation address",
        ),
        (
            v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]),
            20,
            "documentation address",
        ),
        (
            v6([0x2001, 0x0002, 0, 0, 0, 0, 0, 0]),
            48,
            "benchmarking address",
        ),
        (
            v6([0x2001, 0, 0, 0, 0, 0, 0, 0]),
            23,
            "IETF protocol-assignment address",
        ),
        (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0]), 16, "SRv6 SID address"),
        (v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3, ""),
    ];
    for (net, prefix, reason) in table {
        if in6(ip, net, prefix) {
            // Inside global unicast and none of the special blocks above: public.
            return (!reason.is_empty()).then_some(reason);
        }
    }
    Some("reserved address (not global unicast)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 0)
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused_with_its_reason() {
        for (addr, reason) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("127.0.0.1", "loopback"),
            ("127.45.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4"),
            ("192.168.1.1", "private"),
            ("198.18.0.2", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            let got = non_public_reason(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
            assert!(got.contains(reason), "{addr}: {got}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(non_public_reason(ip(addr)), None, "{addr}");
            assert_eq!(NetworkPolicy::public_only().refusal(ip(addr)), None);
        }
    }

    #[test]
    fn every_non_public_ipv6_form_is_refused() {
        for (addr, reason) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("ff02::1", "multicast"),
            ("100::1", "discard"),
            ("64:ff9b:1::1", "NAT64"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
            ("2001::1", "IETF"),
            ("5f00::1", "SRv6"),
            ("4000::1", "reserved"),
            ("::2:1", "this network"),
            // IPv4 inside IPv6.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ] {
            let got = non_public_reason(ip(addr)).unwrap_or_else(|| panic!("{addr} passed"));
            assert!(got.contains(reason), "{addr}: {got}");
        }
    }

    #[test]
    fn the_list_parses_cidrs_addresses_and_host_names() {
        let p = NetworkPolicy::parse(
            " 127.0.0.0/8, ::1/128,10.0.0.7,,fd00::/8, rembg.default.svc , *.svc.cluster.local,.corp.example. ",
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            "127.0.0.0/8,::1/128,10.0.0.7/32,fd00::/8,rembg.default.svc,*.svc.cluster.local,*.corp.example"
        );
        assert!(p.allows_network(ip("127.9.9.9")));
        assert!(p.allows_network(ip("::ffff:127.0.0.1")), "mapped form");
        assert!(p.allows_network(ip("10.0.0.7")));
        assert!(!p.allows_network(ip("10.0.0.8")));
        assert!(p.allows_network(ip("fd00::5")));
        assert!(p.allows_host_name("REMBG.default.svc."));
        assert!(p.allows_host_name("gemini.ns.svc.cluster.local"));
        assert!(!p.allows_host_name("svc.cluster.local"));
        assert!(!p.allows_host_name("evilsvc.cluster.local"));
        assert!(p.allows_host_name("a.corp.example"));
        assert!(!p.allows_host_name("rembg.default.svc.evil"));
        assert_eq!(
            NetworkPolicy::parse("").unwrap(),
            NetworkPolicy::public_only()
        );
        assert_eq!(
            NetworkPolicy::public_only().to_string(),
            "public addresses only"
        );
        assert!(NetworkPolicy::parse(" , ").unwrap().is_public_only());

        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.256",
            "host name",
            "a..b",
            "-a.b",
            "*",
            "1.2.3",
            "http://x",
            "10.0.0.0/x",
        ] {
            let e = NetworkPolicy::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert_eq!(e.entry, bad, "{e}");
            assert!(e.to_string().contains("--allowed-networks"), "{e}");
        }
    }

    #[test]
    fn allowed_networks_and_hosts_lift_the_refusal() {
        let public = NetworkPolicy::public_only();
        let e = public
            .check_ip("169.254.169.254", ip("169.254.169.254"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused to connect to 169.254.169.254: link-local address; allow it with the operator's --allowed-networks"
        );
        let e = public
            .check_ip("metadata.internal", ip("169.254.169.254"))
            .unwrap_err();
        assert_eq!(e.target, "metadata.internal (169.254.169.254)");
        let e = public.check_ip("::1", ip("::1")).unwrap_err();
        assert_eq!(e.target, "::1");

        let lo = NetworkPolicy::parse("127.0.0.1/32").unwrap();
        assert!(lo.check_ip("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(lo.check_ip("127.0.0.2", ip("127.0.0.2")).is_err());
        assert!(lo.check_ip("x", ip("::ffff:127.0.0.1")).is_ok());
        assert!(
            lo.check_ip("x", ip("::1")).is_err(),
            "::1 is not 127.0.0.1/32"
        );
        let by_name = NetworkPolicy::parse("rembg.local").unwrap();
        assert!(by_name.check_ip("rembg.local", ip("10.1.2.3")).is_ok());
        assert!(by_name.check_ip("other.local", ip("10.1.2.3")).is_err());
        let everything = NetworkPolicy::parse("0.0.0.0/0,::/0").unwrap();
        for a in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(everything.refusal(ip(a)).is_none(), "{a}");
        }
    }

    #[test]
    fn resolution_results_are_filtered() {
        let public = NetworkPolicy::public_only();
        // A name that resolves to a mix keeps only the public addresses.
        let kept = public
            .filter_resolved(
                "mixed.example",
                [
                    sock("10.0.0.1"),
                    sock("93.184.216.34"),
                    sock("::1"),
                    sock("2606:2800:220:1::1"),
                ],
            )
            .unwrap();
        assert_eq!(
            kept,
            vec![sock("93.184.216.34"), sock("2606:2800:220:1::1")]
        );
        // A name that resolves only to refused addresses fails with the first.
        let e = public
            .filter_resolved(
                "metadata.example",
                [sock("169.254.169.254"), sock("fe80::1")],
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused to connect to metadata.example (169.254.169.254): link-local address; allow it with the operator's --allowed-networks"
        );
        let e = public
            .filter_resolved("rebind.example", [sock("::ffff:127.0.0.1")])
            .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(matches!(
            public.filter_resolved("empty.example", []),
            Err(ResolveRefused::NoAddress(_))
        ));
        // Allowed by network, or by name.
        let lo = NetworkPolicy::parse("127.0.0.0/8").unwrap();
        assert_eq!(
            lo.filter_resolved("localhost", [sock("127.0.0.1"), sock("::1")])
                .unwrap(),
            vec![sock("127.0.0.1")]
        );
        let named = NetworkPolicy::parse("localhost").unwrap();
        assert_eq!(
            named
                .filter_resolved("localhost", [sock("127.0.0.1"), sock("::1")])
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_address() {
        let public = NetworkPolicy::public_only();
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(public.check_url(&url("https://example.com/a")).is_ok());
        assert!(public.check_url(&url("http://8.8.8.8/")).is_ok());
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
            "http://10.1/",
            "http://[fe80::1]/",
        ] {
            let e = public.check_url(&url(refused)).unwrap_err();
            assert!(matches!(e, CheckUrlError::Refused(_)), "{refused}: {e}");
            assert!(e.to_string().contains(ALLOW_HINT), "{e}");
        }
        let e = public.check_url(&url("file:///etc/passwd")).unwrap_err();
        assert!(matches!(e, CheckUrlError::Scheme { .. }), "{e}");
        let e = public.check_url(&url("gopher://127.0.0.1/")).unwrap_err();
        assert!(matches!(e, CheckUrlError::Scheme { .. }), "{e}");

        let lo = NetworkPolicy::parse("127.0.0.0/8,gemini.test").unwrap();
        assert!(lo.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(lo.explicitly_allows(&url("http://127.0.0.1:8080/")));
        assert!(lo.explicitly_allows(&url("http://gemini.test/")));
        assert!(!lo.explicitly_allows(&url("http://example.com/")));
        assert!(!lo.explicitly_allows(&url("http://8.8.8.8/")));
    }

    #[test]
    fn refusals_are_found_in_error_chains() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] ResolveRefused);
        let refused = NetworkPolicy::public_only()
            .filter_resolved("x", [sock("10.0.0.1")])
            .unwrap_err();
        let outer = Outer(refused);
        let found = refusal_in(&outer).unwrap();
        assert!(
            found.starts_with("refused to connect to x (10.0.0.1): private address"),
            "{found}"
        );
        assert!(refusal_in(&TooManyRedirects(3)).is_none());
    }

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        let shown = redact_url_str(
            "https://user:secret@bucket.s3.example.com/a/b.jpg?X-Amz-Signature=abc&X-Amz-Credential=k#frag",
        );
        assert_eq!(shown, "https://bucket.s3.example.com/a/b.jpg");
        assert_eq!(
            redact_url_str("s3://bucket/key.jpg?versionId=1"),
            "s3://bucket/key.jpg"
        );
        assert_eq!(redact_url_str("not a url?token=1"), "not a url");
        assert_eq!(redact_url_str("weird://u:p@host/p?q"), "weird://host/p");
        assert_eq!(redact_url_str("/local/file.jpg"), "/local/file.jpg");
    }
}
