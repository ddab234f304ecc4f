//! Callbacks (contract, section 21): which `callbackUrl`s are allowed
//! ([`AllowedHosts`], [`check_callback_url`]), the signature of a delivery
//! ([`signature`]), the back-off between attempts ([`retry_delay`]), and the
//! deliverer of `serve` ([`deliver::Deliverer`]), whose one HTTP client
//! resolves host names only through [`deliver::CheckedResolver`] (every
//! address of every new connection checked), follows no redirect, uses no
//! proxy, and reads at most 4 KiB of an answer.

pub mod deliver;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use url::{Host, Url};

/// Longest `callbackUrl`, characters (section 21).
pub const MAX_CALLBACK_URL_CHARS: usize = 2048;

/// One entry of `CALLBACK_ALLOWED_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowedHost {
    /// A host name, lower case, matched exactly.
    Name(String),
    /// `*.example.com`: any subdomain of `example.com` (not itself), stored
    /// as `.example.com`.
    Subdomains(String),
    /// An IP literal, matched against a URL's IP host.
    Address(IpAddr),
}

/// `CALLBACK_ALLOWED_HOSTS` parsed: a comma list of host names, IP
/// literals (IPv6 with or without brackets) and `*.example.com` for
/// subdomains (section 21). Empty, the default, allows nothing: callbacks
/// are off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Parses the comma list `list`; blank entries are skipped.
    ///
    /// Errors: the text of an entry that is neither a host name, an IP
    /// literal nor `*.` and a host name.
    pub fn parse(list: &str) -> Result<AllowedHosts, String> {
        let mut hosts = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = entry.to_ascii_lowercase();
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(address) = bare.parse::<IpAddr>() {
                hosts.push(AllowedHost::Address(address));
            } else if let Some(domain) = entry.strip_prefix("*.") {
                valid_name(domain).ok_or_else(|| format!("not a host pattern: {entry}"))?;
                hosts.push(AllowedHost::Subdomains(format!(".{domain}")));
            } else {
                valid_name(&entry).ok_or_else(|| format!("not a host name: {entry}"))?;
                hosts.push(AllowedHost::Name(entry));
            }
        }
        Ok(AllowedHosts(hosts))
    }

    /// Whether no host is allowed (callbacks are off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `host` (a URL's host) is allowed: a name equal to an entry or
    /// a subdomain of a `*.` entry, or an address equal to an IP entry.
    pub fn allows(&self, host: &Host<&str>) -> bool {
        self.0.iter().any(|allowed| match (allowed, host) {
            (AllowedHost::Name(name), Host::Domain(d)) => d.eq_ignore_ascii_case(name),
            (AllowedHost::Subdomains(suffix), Host::Domain(d)) => {
                let d = d.to_ascii_lowercase();
                d.len() > suffix.len() && d.ends_with(suffix.as_str())
            }
            (AllowedHost::Address(a), Host::Ipv4(ip)) => *a == IpAddr::V4(*ip),
            (AllowedHost::Address(a), Host::Ipv6(ip)) => *a == IpAddr::V6(*ip),
            _ => false,
        })
    }
}

impl AllowedHosts {
    /// Whether `address`, which the allowed host name `name` resolved to
    /// now, may be contacted (README, "Connecting your platform"): any
    /// address a listed name resolves to, except a special-purpose one
    /// ([`special_purpose`]: loopback, link-local with the cloud metadata
    /// address, unspecified, multicast, broadcast), which only an IP entry
    /// equal to it or the name `localhost` itself allows. So a listed name
    /// whose DNS answer changes to 127.0.0.1 or 169.254.169.254 reaches
    /// neither.
    ///
    /// Errors: why it is refused, as text.
    pub fn allows_resolved(&self, name: &str, address: IpAddr) -> Result<(), String> {
        let address = address.to_canonical();
        let listed = self.0.iter().any(|allowed| match allowed {
            AllowedHost::Address(a) => a.to_canonical() == address,
            _ => false,
        });
        if listed || name.eq_ignore_ascii_case("localhost") {
            return Ok(());
        }
        match special_purpose(address) {
            Some(kind) => Err(format!(
                "{address} is a {kind} address, not listed as an IP literal"
            )),
            None => Ok(()),
        }
    }
}

/// What kind of special-purpose address `address` is, if it is one a
/// resolved name may not lead to: loopback (127/8, ::1), link-local
/// (169.254/16 with 169.254.169.254, fe80::/10), unspecified or "this
/// network" (0/8, ::), multicast, broadcast; also an IPv4-mapped
/// (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`) form of one.
pub fn special_purpose(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => {
            let kind = if v4.is_loopback() {
                "loopback"
            } else if v4.is_link_local() {
                "link-local"
            } else if v4.octets()[0] == 0 {
                "unspecified"
            } else if v4.is_multicast() {
                "multicast"
            } else if v4.is_broadcast() {
                "broadcast"
            } else {
                return None;
            };
            Some(kind)
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                // ::ffff:a.b.c.d and ::a.b.c.d
                v6.to_ipv4().and_then(|v4| special_purpose(IpAddr::V4(v4)))
            }
        }
    }
}

/// `name` if it is a host name url accepts as a domain (no port, path or
/// user part).
fn valid_name(name: &str) -> Option<()> {
    let url = Url::parse(&format!("http://{name}/")).ok()?;
    matches!(url.host(), Some(Host::Domain(d)) if d == name && url.port().is_none()).then_some(())
}

/// Why a `callbackUrl` is refused (section 21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    /// 400 code 1001: not an `http` or `https` URL with a host of at most
    /// 2048 characters.
    #[error("callbackUrl {0}")]
    Invalid(&'static str),
    /// 400 code 1022: its host is not in `CALLBACK_ALLOWED_HOSTS`.
    #[error("callbackUrl host {0} is not allowed")]
    HostNotAllowed(String),
}

/// `url` as a callback URL: `http` or `https`, at most 2048 characters, with
/// a host that `allowed` allows.
///
/// Errors: [`CallbackUrlError::Invalid`] (1001) first, then
/// [`CallbackUrlError::HostNotAllowed`] (1022) naming the host.
pub fn check_callback_url(url: &str, allowed: &AllowedHosts) -> Result<Url, CallbackUrlError> {
    if url.chars().count() > MAX_CALLBACK_URL_CHARS {
        return Err(CallbackUrlError::Invalid("must be at most 2048 characters"));
    }
    let parsed = Url::parse(url).map_err(|_| CallbackUrlError::Invalid("is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CallbackUrlError::Invalid("must be an http or https URL"));
    }
    let Some(host) = parsed.host() else {
        return Err(CallbackUrlError::Invalid("has no host"));
    };
    if !allowed.allows(&host) {
        return Err(CallbackUrlError::HostNotAllowed(host.to_string()));
    }
    Ok(parsed)
}

/// `X-PlanQueue-Signature` of `body` (section 21): `sha256=` and the hex
/// HMAC-SHA256 of the exact body bytes with key `secret` (as GitHub and
/// Stripe webhooks sign).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// The wait before attempt `attempts + 1`, after `attempts` (≥ 1) failed:
/// 1 s doubling per attempt, at most 10 min (section 21); `jitter` in
/// 0.0..1.0 takes up to a fifth off, so that receivers that failed together
/// are not tried again together.
pub fn retry_delay(attempts: u32, jitter: f64) -> Duration {
    let doubled = 1u64 << attempts.saturating_sub(1).min(20);
    let secs = doubled.min(600) as f64;
    Duration::from_secs_f64(secs * (1.0 - 0.2 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &str) -> AllowedHosts {
        AllowedHosts::parse(list).unwrap()
    }

    #[test]
    fn names_subdomains_and_ip_literals_are_allowed_as_listed() {
        let hosts = allowed(" hooks.example.com, *.platform.test ,10.0.0.7,[::1]");
        let ok = |url: &str| check_callback_url(url, &hosts).map(|_| ());
        assert_eq!(ok("https://hooks.example.com/x"), Ok(()));
        assert_eq!(ok("https://HOOKS.example.com:8443/x"), Ok(()));
        assert_eq!(ok("http://a.b.platform.test/"), Ok(()));
        assert_eq!(ok("http://10.0.0.7:9000/hook"), Ok(()));
        assert_eq!(ok("http://[::1]:9000/hook"), Ok(()));
        for (url, host) in [
            ("https://platform.test/", "platform.test"),
            ("https://evil-platform.test/", "evil-platform.test"),
            (
                "https://hooks.example.com.evil.test/",
                "hooks.example.com.evil.test",
            ),
            ("http://10.0.0.8/", "10.0.0.8"),
            ("http://127.0.0.1/", "127.0.0.1"),
        ] {
            assert_eq!(
                ok(url),
                Err(CallbackUrlError::HostNotAllowed(host.to_owned())),
                "{url}"
            );
        }
    }

    #[test]
    fn an_empty_list_turns_callbacks_off_and_bad_urls_are_1001_first() {
        let none = allowed("");
        assert!(none.is_empty());
        assert_eq!(
            check_callback_url("https://hooks.example.com/", &none),
            Err(CallbackUrlError::HostNotAllowed(
                "hooks.example.com".to_owned()
            ))
        );
        let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
        for url in ["ftp://hooks.example.com/", "not a url", long.as_str()] {
            assert!(
                matches!(
                    check_callback_url(url, &none),
                    Err(CallbackUrlError::Invalid(_))
                ),
                "{url}"
            );
        }
        assert!(AllowedHosts::parse("hooks.example.com/path").is_err());
        assert!(AllowedHosts::parse("*.").is_err());
    }

    #[test]
    fn a_listed_name_leads_to_a_special_purpose_address_only_when_it_is_listed_or_localhost() {
        let hosts = allowed("hooks.example.com, 10.0.0.7, localhost");
        let resolved = |name: &str, ip: &str| hosts.allows_resolved(name, ip.parse().unwrap());
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::1",
            "::",
            "0.0.0.0",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
        ] {
            let error = resolved("hooks.example.com", refused).unwrap_err();
            assert!(
                error.contains("not listed as an IP literal"),
                "{refused}: {error}"
            );
        }
        assert!(resolved("hooks.example.com", "127.0.0.1")
            .unwrap_err()
            .contains("loopback"));
        assert!(resolved("hooks.example.com", "169.254.169.254")
            .unwrap_err()
            .contains("link-local"));
        assert_eq!(resolved("hooks.example.com", "93.184.216.34"), Ok(()));
        assert_eq!(resolved("hooks.example.com", "2606:2800:220:1::1"), Ok(()));
        assert_eq!(resolved("hooks.example.com", "10.0.0.7"), Ok(()));
        assert_eq!(resolved("localhost", "127.0.0.1"), Ok(()));
        assert_eq!(resolved("localhost", "::1"), Ok(()));
        let literal = allowed("hooks.example.com, 127.0.0.1");
        assert_eq!(
            literal.allows_resolved("hooks.example.com", "::ffff:127.0.0.1".parse().unwrap()),
            Ok(())
        );
        assert!(literal
            .allows_resolved("hooks.example.com", "127.0.0.2".parse().unwrap())
            .is_err());
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231, test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_wait_one_second_doubling_to_at_most_ten_minutes() {
        let secs = |attempts| retry_delay(attempts, 0.0).as_secs();
        assert_eq!([1, 2, 3, 10, 11, 64].map(secs), [1, 2, 4, 512, 600, 600]);
        assert!(retry_delay(3, 1.0) >= Duration::from_millis(3200));
    }
}
