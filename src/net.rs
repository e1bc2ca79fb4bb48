//! Outbound requests to addresses that users (not the operator) configure, such as an
//! organization's SSO issuer, must not reach the deployment's own network: loopback,
//! private, link-local and similar ranges are refused unless the operator allows them
//! (`KEYWARD_ALLOW_PRIVATE_NETWORKS`, which the tests set for their loopback servers).

use std::net::IpAddr;

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
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed
            // an IPv4 address: judge that.
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let embedded = if compatible || nat64 {
                Some([s[6] >> 8, s[6] & 0xff, s[7] >> 8, s[7] & 0xff])
            } else if s[0] == 0x2002 {
                Some([s[1] >> 8, s[1] & 0xff, s[2] >> 8, s[2] & 0xff])
            } else {
                None
            };
            if let Some(o) = embedded {
                let o = o.map(|b| u8::try_from(b).unwrap_or(0));
                return is_public(IpAddr::V4(std::net::Ipv4Addr::from(o)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
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
        .map_err(|e| format!("{host} could not be resolved: {e}."))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} could not be resolved."));
    }
    if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a private or local address. Keyward only connects to public addresses unless the operator sets KEYWARD_ALLOW_PRIVATE_NETWORKS=true.",
            a.ip()
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
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn loopback_refused_unless_allowed() {
        assert!(check_outbound("http://127.0.0.1:9/", false).await.is_err());
        assert!(check_outbound("http://[::1]:9/", false).await.is_err());
        assert!(check_outbound("http://127.0.0.1:9/", true).await.is_ok());
        assert!(check_outbound("not a url", true).await.is_err());
    }
}
