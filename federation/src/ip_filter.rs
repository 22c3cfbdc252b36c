//! Which IP addresses outbound federation may connect to.
//!
//! A server name is chosen by whoever sends us an event or an invite, so without a filter a
//! remote party could make Parley send requests into its own network (SSRF). The filter is
//! applied where addresses are resolved for a connection, so the address checked is the
//! address connected to: a second DNS answer cannot slip in between.

use std::net::IpAddr;

use ipnet::IpNet;

/// A blocklist with an allowlist that overrides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpFilter {
    blocked: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

impl IpFilter {
    /// Blocks every address in `blocked` unless it is also in `allowed`.
    pub fn new(blocked: Vec<IpNet>, allowed: Vec<IpNet>) -> Self {
        Self { blocked, allowed }
    }

    /// The default blocklist, with `allowed` carved out of it (tests allow `127.0.0.0/8`).
    pub fn with_allowed(allowed: Vec<IpNet>) -> Self {
        Self::new(default_blocklist(), allowed)
    }

    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address reaches the IPv4 host, so it is judged as IPv4.
        let ip = ip.to_canonical();
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        if self.blocked.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        // Through a NAT64 gateway, 64:ff9b::a.b.c.d reaches a.b.c.d: judge that address too.
        match nat64_embedded(ip) {
            Some(v4) => self.is_allowed(IpAddr::V4(v4)),
            None => true,
        }
    }
}

impl Default for IpFilter {
    /// The default blocklist and no allowlist.
    fn default() -> Self {
        Self::new(default_blocklist(), Vec::new())
    }
}

/// The IPv4 address inside a well-known-prefix NAT64 address (RFC 6052, `64:ff9b::/96`).
fn nat64_embedded(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let segments = v6.segments();
    if segments[..6] != [0x64, 0xff9b, 0, 0, 0, 0] {
        return None;
    }
    let [.., a, b, c, d] = v6.octets();
    Some(std::net::Ipv4Addr::new(a, b, c, d))
}

/// Loopback, private, link-local, shared, documentation, benchmarking, multicast and other
/// special-purpose ranges (IANA's IPv4 and IPv6 special-purpose address registries): none of
/// them is where a public homeserver lives.
pub fn default_blocklist() -> Vec<IpNet> {
    const RANGES: &[&str] = &[
        // IPv4
        "0.0.0.0/8",       // "this network"
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // carrier-grade NAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // deprecated 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, and the broadcast address
        // IPv6
        "::/128",         // unspecified
        "::1/128",        // loopback
        "64:ff9b:1::/48", // local-use NAT64
        "100::/64",       // discard-only
        "2001::/23",      // IETF protocol assignments
        "2001:db8::/32",  // documentation
        "2002::/16",      // 6to4, which embeds any IPv4 address
        "fc00::/7",       // unique local
        "fe80::/10",      // link-local
        "fec0::/10",      // deprecated site-local
        "ff00::/8",       // multicast
    ];
    RANGES.iter().filter_map(|range| range.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn default_blocks_internal_ranges_and_allows_public_ones() {
        let filter = IpFilter::default();
        assert_eq!(default_blocklist().len(), 26, "every range parses");
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.31.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(!filter.is_allowed(ip(blocked)), "{blocked} must be blocked");
        }
        assert!(!filter.is_allowed(ip("64:ff9b::10.0.0.1")), "NAT64 to a private address");
        assert!(!filter.is_allowed(ip("64:ff9b::127.0.0.1")), "NAT64 to loopback");
        for allowed in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::1.1.1.1"] {
            assert!(filter.is_allowed(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allowlist_overrides_blocklist() {
        let filter = IpFilter::with_allowed(vec!["127.0.0.0/8".parse().expect("net")]);
        assert!(filter.is_allowed(ip("127.0.0.1")));
        assert!(filter.is_allowed(ip("::ffff:127.0.0.2")));
        assert!(!filter.is_allowed(ip("::1")));
        assert!(!filter.is_allowed(ip("10.0.0.1")));
    }
}
