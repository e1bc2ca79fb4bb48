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
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
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
    let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
        .await
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
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
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
