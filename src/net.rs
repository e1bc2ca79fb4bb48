//! Outbound requests to addresses that users (not the operator) configure, such as an
//! organization's SSO issuer, must not reach the deployment's own network: loopback,
//! private, link-local and similar ranges are refused unless the operator allows them
//! (`KEYWARD_ALLOW_PRIVATE_NETWORKS`, which the tests set for their loopback servers).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

/// The end user's IP: from the configured trusted-proxy header, else the peer. Without
/// that setting a forwarded header is never believed (a client could choose it).
pub fn client_ip(
    trusted_header: Option<&HeaderName>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Option<IpAddr> {
    if let Some(name) = trusted_header {
        // The rightmost entry is the one the trusted proxy added; anything left of it was
        // sent by the client. Without a usable value, fall back to the peer.
        let from_proxy = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|v| parse_forwarded_ip(v.trim()));
        if from_proxy.is_some() {
            return from_proxy;
        }
    }
    peer.map(|p| p.ip())
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:5678`.
fn parse_forwarded_ip(v: &str) -> Option<IpAddr> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = v.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    v.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

/// Whether an address is public (globally routable as far as we can tell).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Forms that embed an IPv4 address are refused outright, whatever that address
            // is: IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64
            // (64:ff9b::/96 and the local-use 64:ff9b:1::/48) and 6to4 (2002::/16). A
            // gateway on the way may translate them to an IPv4 destination of its choosing,
            // and no public service needs to be reached through them.
            let mapped = s[..6] == [0, 0, 0, 0, 0, 0xffff];
            let compatible = s[..6] == [0; 6];
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let nat64_local = s[..3] == [0x64, 0xff9b, 1];
            let six_to_four = s[0] == 0x2002;
            !(mapped
                || compatible
                || nat64
                || nat64_local
                || six_to_four
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Resolves `url`'s host and refuses it when any address is not public (unless allowed).
/// Returns a message fit to show to the person who entered the URL.
pub async fn check_outbound(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| format!("{url} is not a valid URL."))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url} has no host."))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if allow_private {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host.as_str(), port));
    let addrs: Vec<_> = tokio::time::timeout(std::time::Duration::from_secs(5), lookup)
        .await
        .map_err(|_| format!("{host} could not be resolved in time."))?
        // The resolver's own words may name addresses: keep them out of the message.
        .map_err(|_| format!("{host} could not be resolved."))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} could not be resolved."));
    }
    // Which address it was is not said: the message must not turn Keyward into a way to
    // resolve names inside the deployment's network.
    if addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} is not a public address, or resolves to one that is not. Keyward only connects to public addresses unless the operator sets KEYWARD_ALLOW_PRIVATE_NETWORKS=true."
        ));
    }
    Ok(())
}

/// A DNS resolver that only hands out public addresses. It runs when a connection is made,
/// so a name that resolved to a public address during a check cannot be switched to a
/// private one for the request itself (DNS rebinding). IP-literal URLs never reach a
/// resolver: [`check_outbound`] covers those.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for URLs users configure: no redirects, short timeouts, and (unless
/// private networks are allowed) public addresses only.
pub fn user_url_client(allow_private: bool, user_agent: &str) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        // A proxy would resolve names itself, around the resolver below.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent(user_agent);
    if !allow_private {
        b = b.dns_resolver(std::sync::Arc::new(PublicOnlyResolver));
    }
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_with_ports_are_understood() {
        for (v, ip) in [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:5678", "203.0.113.7"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
        ] {
            assert_eq!(parse_forwarded_ip(v), ip.parse().ok(), "{v}");
        }
        assert_eq!(parse_forwarded_ip("unknown"), None);
    }

    #[test]
    fn ranges() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "fec0::1",
            // Embedded IPv4 forms are refused even when the IPv4 address is public.
            "::ffff:8.8.8.8",
            "::ffff:0:0",
            "64:ff9b::808:808",
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            "::8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b:2::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn refusals_do_not_say_what_a_name_resolved_to() {
        let err = check_outbound("http://localhost:9/", false)
            .await
            .unwrap_err();
        assert!(!err.contains("127.0.0.1") && !err.contains("::1"), "{err}");
        let err = check_outbound("http://[::ffff:10.0.0.1]:9/", false)
            .await
            .unwrap_err();
        assert!(err.contains("not a public address"), "{err}");
    }

    #[tokio::test]
    async fn loopback_refused_unless_allowed() {
        assert!(check_outbound("http://127.0.0.1:9/", false).await.is_err());
        assert!(check_outbound("http://[::1]:9/", false).await.is_err());
        assert!(check_outbound("http://127.0.0.1:9/", true).await.is_ok());
        assert!(check_outbound("not a url", true).await.is_err());
    }
}
