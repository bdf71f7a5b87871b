//! Which destination addresses components may connect to.
//!
//! Only *public* unicast addresses are reachable by default. Every range in the IANA
//! special-purpose registries that is not globally reachable (loopback, private, shared/CGNAT,
//! link-local with the cloud metadata address, unspecified, documentation, benchmarking,
//! multicast, broadcast and reserved space, and their IPv6 counterparts) is refused unless the
//! operator lists the destination in `[outbound] allow_private`. IPv4-mapped IPv6 addresses
//! (`::ffff:127.0.0.1`) are judged as the IPv4 address they stand for, and NAT64 addresses
//! (`64:ff9b::/96`) by the IPv4 address they embed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, 0, 0),
        len,
    ))
}

/// Address ranges that are not globally reachable, with what they are. The first match names
/// the range in refusals, so more specific ranges come first.
const NOT_PUBLIC: &[(IpNet, &str)] = &[
    (
        v4(0, 0, 0, 0, 8),
        "an unspecified or \"this network\" address",
    ),
    (v4(10, 0, 0, 0, 8), "a private address (RFC 1918)"),
    (
        v4(100, 64, 0, 0, 10),
        "a shared (carrier-grade NAT) address",
    ),
    (v4(127, 0, 0, 0, 8), "a loopback address"),
    (
        v4(169, 254, 0, 0, 16),
        "a link-local address (this range holds cloud metadata services)",
    ),
    (v4(172, 16, 0, 0, 12), "a private address (RFC 1918)"),
    (v4(192, 0, 0, 0, 24), "an IETF protocol assignment address"),
    (v4(192, 0, 2, 0, 24), "a documentation address"),
    (v4(192, 88, 99, 0, 24), "a 6to4 relay anycast address"),
    (v4(192, 168, 0, 0, 16), "a private address (RFC 1918)"),
    (v4(198, 18, 0, 0, 15), "a benchmarking address"),
    (v4(198, 51, 100, 0, 24), "a documentation address"),
    (v4(203, 0, 113, 0, 24), "a documentation address"),
    (v4(224, 0, 0, 0, 4), "a multicast address"),
    (v4(255, 255, 255, 255, 32), "the broadcast address"),
    (v4(240, 0, 0, 0, 4), "a reserved address"),
    (v6(0, 0, 0, 0, 0, 0, 128), "the unspecified address"),
    (
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        "a loopback address",
    ),
    (v6(0, 0, 0, 0, 0, 0, 96), "an IPv4-compatible address"),
    (v6(0, 0, 0, 0, 0xffff, 0, 96), "an IPv4-translated address"),
    (
        v6(0x64, 0xff9b, 1, 0, 0, 0, 48),
        "a local-use NAT64 address",
    ),
    (v6(0x100, 0, 0, 0, 0, 0, 64), "a discard-only address"),
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 32), "a documentation address"),
    (
        v6(0x2001, 0, 0, 0, 0, 0, 23),
        "an IETF protocol assignment address",
    ),
    (v6(0x2002, 0, 0, 0, 0, 0, 16), "a 6to4 address"),
    (v6(0x3fff, 0, 0, 0, 0, 0, 20), "a documentation address"),
    (v6(0x5f00, 0, 0, 0, 0, 0, 16), "a segment-routing address"),
    (
        v6(0xfc00, 0, 0, 0, 0, 0, 7),
        "a unique local (private) address",
    ),
    (v6(0xfe80, 0, 0, 0, 0, 0, 10), "a link-local address"),
    (v6(0xfec0, 0, 0, 0, 0, 0, 10), "a site-local address"),
    (v6(0xff00, 0, 0, 0, 0, 0, 8), "a multicast address"),
];

const NAT64: IpNet = v6(0x64, 0xff9b, 0, 0, 0, 0, 96);

/// What kind of non-public address `ip` is, or `None` for a public unicast address.
///
/// IPv4-mapped IPv6 addresses are judged as their IPv4 address and NAT64 addresses
/// (`64:ff9b::a.b.c.d`) by the IPv4 address they embed.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    if let IpAddr::V6(v6) = ip
        && NAT64.contains(&ip)
    {
        let [.., a, b, c, d] = v6.octets();
        return classify(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    NOT_PUBLIC
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, what)| *what)
}

/// One entry of `[outbound] allow_private`: a network (`10.0.0.0/8`, `127.0.0.1`, any port) or
/// one address and port (`127.0.0.1:8080`, `[::1]:8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedNet {
    net: IpNet,
    port: Option<u16>,
}

impl<'de> serde::Deserialize<'de> for AllowedNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AllowedNet::parse(&s).map_err(|e| serde::de::Error::custom(format!("allow_private: {e}")))
    }
}

impl AllowedNet {
    /// Parses an entry, saying what is wrong with a bad one.
    pub fn parse(entry: &str) -> Result<AllowedNet, String> {
        let s = entry.trim();
        let (net, port) = if let Ok(sa) = s.parse::<SocketAddr>() {
            (IpNet::from(sa.ip()), Some(sa.port()))
        } else if let Ok(net) = s.parse::<IpNet>() {
            (net.trunc(), None)
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            (IpNet::from(ip), None)
        } else {
            return Err(format!(
                "`{entry}` is not a network or address: write a CIDR like \"10.0.0.0/8\", an \
                 address like \"127.0.0.1\", or an address and port like \"127.0.0.1:8080\""
            ));
        };
        if port == Some(0) {
            return Err(format!("`{entry}`: port 0 is not a destination"));
        }
        Ok(AllowedNet {
            net: canonical_net(net),
            port,
        })
    }

    fn allows(&self, addr: SocketAddr) -> bool {
        self.port.is_none_or(|p| p == addr.port()) && self.net.contains(&addr.ip().to_canonical())
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:127.0.0.1/128`) as the IPv4 network it stands for,
/// since destinations are compared in canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let IpAddr::V4(a) = IpAddr::V6(n.addr()).to_canonical()
    {
        return IpNet::V4(Ipv4Net::new_assert(a, n.prefix_len() - 96));
    }
    net
}

impl fmt::Display for AllowedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", SocketAddr::new(self.net.addr(), p)),
            None => write!(f, "{}", self.net),
        }
    }
}

/// Why a destination address is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrRefusal {
    /// Not a public address, and not in `[outbound] allow_private`.
    NotPublic {
        /// The address.
        addr: SocketAddr,
        /// What kind of address it is.
        what: &'static str,
    },
    /// One of the node's own listeners (the management API), never reachable from components.
    Protected {
        /// The address.
        addr: SocketAddr,
    },
}

impl fmt::Display for AddrRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrRefusal::NotPublic { addr, what } => write!(
                f,
                "{} is {what}; components may reach only public addresses unless the operator \
                 lists the destination in [outbound] allow_private in zerocore.toml (for example \
                 allow_private = [\"{addr}\"])",
                addr.ip()
            ),
            AddrRefusal::Protected { addr } => write!(
                f,
                "{addr} is this node's management API, which components can never reach"
            ),
        }
    }
}

/// The rule for destination addresses: public addresses, plus the operator's allowed
/// networks, minus the node's own protected listeners.
#[derive(Debug, Clone, Default)]
pub struct AddrPolicy {
    /// Non-public destinations the operator allows.
    pub allow_private: Vec<AllowedNet>,
    /// The node's own listeners that are refused whatever `allow_private` says.
    pub protected: Vec<SocketAddr>,
}

impl AddrPolicy {
    /// Checks one destination.
    pub fn check(&self, addr: SocketAddr) -> Result<(), AddrRefusal> {
        let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let what = classify(canonical.ip());
        let hits_protected = self.protected.iter().any(|p| {
            p.port() == canonical.port()
                && if p.ip().is_unspecified() {
                    // Listening on every address, the node's public addresses reach it too, and
                    // the node cannot tell which public addresses are its own: that port is
                    // refused on every address.
                    true
                } else {
                    p.ip().to_canonical() == canonical.ip()
                }
        });
        if hits_protected {
            return Err(AddrRefusal::Protected { addr: canonical });
        }
        match what {
            None => Ok(()),
            Some(_) if self.allow_private.iter().any(|a| a.allows(canonical)) => Ok(()),
            Some(what) => Err(AddrRefusal::NotPublic {
                addr: canonical,
                what,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses_are_public() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "169.253.255.255",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(classify(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn every_non_public_range_is_classified() {
        for (a, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("::", "unspecified"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("::ffff:192.168.1.1", "private"),
            ("::ffff:10.1.2.3", "private"),
            ("64:ff9b::a00:1", "private"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("2001:db8::1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.8", "IETF"),
            ("2001::1", "IETF"),
            ("2002:7f00:1::", "6to4"),
            ("::7f00:1", "IPv4-compatible"),
            ("::ffff:0:7f00:1", "IPv4-translated"),
            ("64:ff9b:1::1", "NAT64"),
            ("100::1", "discard"),
        ] {
            let got = classify(ip(a)).unwrap_or_else(|| panic!("{a} must not be public"));
            assert!(got.contains(what), "{a}: {got}");
        }
    }

    #[test]
    fn refused_by_default_and_allowed_by_the_operator() {
        let none = AddrPolicy::default();
        for a in [
            "127.0.0.1:80",
            "10.0.0.1:443",
            "[::ffff:127.0.0.1]:80",
            "[fe80::1]:80",
            "169.254.169.254:80",
            "[fd00::1]:80",
            "0.0.0.0:80",
        ] {
            let e = none.check(sa(a)).unwrap_err();
            assert!(
                e.to_string().contains("[outbound] allow_private"),
                "{a}: {e}"
            );
        }
        assert_eq!(none.check(sa("8.8.8.8:443")), Ok(()));
        let one_port = AddrPolicy {
            allow_private: vec![AllowedNet::parse("127.0.0.1:8080").unwrap()],
            protected: vec![],
        };
        assert_eq!(one_port.check(sa("127.0.0.1:8080")), Ok(()));
        assert_eq!(one_port.check(sa("[::ffff:127.0.0.1]:8080")), Ok(()));
        assert!(one_port.check(sa("127.0.0.1:8081")).is_err());
        assert!(one_port.check(sa("127.0.0.2:8080")).is_err());
        let net = AddrPolicy {
            allow_private: vec![
                AllowedNet::parse("10.0.0.0/8").unwrap(),
                AllowedNet::parse("::ffff:192.168.0.0/112").unwrap(),
            ],
            protected: vec![],
        };
        assert_eq!(net.check(sa("10.9.8.7:1")), Ok(()));
        assert_eq!(net.check(sa("192.168.3.4:1")), Ok(()));
        assert!(net.check(sa("172.16.0.1:1")).is_err());
    }

    #[test]
    fn the_management_api_is_never_reachable() {
        let p = AddrPolicy {
            allow_private: vec![AllowedNet::parse("127.0.0.0/8").unwrap()],
            protected: vec![sa("127.0.0.1:8081")],
        };
        let e = p.check(sa("127.0.0.1:8081")).unwrap_err();
        assert!(e.to_string().contains("management API"), "{e}");
        assert!(p.check(sa("[::ffff:127.0.0.1]:8081")).is_err());
        assert_eq!(p.check(sa("127.0.0.1:8080")), Ok(()));
        let everywhere = AddrPolicy {
            allow_private: vec![AllowedNet::parse("10.0.0.0/8").unwrap()],
            protected: vec![sa("0.0.0.0:8081")],
        };
        assert!(matches!(
            everywhere.check(sa("10.1.1.1:8081")),
            Err(AddrRefusal::Protected { .. })
        ));
        assert_eq!(everywhere.check(sa("10.1.1.1:8080")), Ok(()));
        // The node's own public address reaches a listener on 0.0.0.0 as well.
        assert!(matches!(
            everywhere.check(sa("203.0.113.7:8081")),
            Err(AddrRefusal::Protected { .. })
        ));
        assert!(matches!(
            everywhere.check(sa("8.8.8.8:8081")),
            Err(AddrRefusal::Protected { .. })
        ));
    }

    #[test]
    fn allow_entries_parse_and_refuse_nonsense() {
        assert_eq!(
            AllowedNet::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            AllowedNet::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            AllowedNet::parse("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        for bad in ["localhost", "10.0.0.0/33", "", "127.0.0.1:0", "1.2.3.4:x"] {
            assert!(AllowedNet::parse(bad).is_err(), "{bad}");
        }
    }
}
