//! The client's address, for throttling and audit: the socket peer, unless
//! the peer is a trusted proxy (`KEYTURN_TRUSTED_PROXIES`); then the
//! right-most address of `X-Forwarded-For` that is not itself a trusted
//! proxy. Entries left of that were written by the client and prove
//! nothing, so they are never read. With no trusted proxies (the default)
//! the header is ignored.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use poem::Request;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Finds the client address of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr {
    trusted: Vec<IpNet>,
}

impl ClientAddr {
    /// Trusting the proxies in `trusted` to append the address they saw.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// The client address of `req`, if the transport has one.
    pub fn of(&self, req: &Request) -> Option<IpAddr> {
        let peer = req.remote_addr().as_socket_addr()?.ip();
        let forwarded = req
            .headers()
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok());
        Some(self.resolve(peer, forwarded))
    }

    /// The client behind `peer`, given the `X-Forwarded-For` values.
    fn resolve<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        // Later headers and later entries were added by nearer hops.
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
        let mut nearest = peer;
        for hop in hops.into_iter().rev() {
            // What a trusted proxy passed on but is no address ends the
            // chain: the last trusted hop is the best we know.
            let Some(address) = parse_hop(hop.trim()) else {
                return nearest;
            };
            if !self.is_trusted(address) {
                return address;
            }
            nearest = address;
        }
        nearest
    }
}

/// `192.0.2.1`, `2001:db8::1`, `192.0.2.1:443` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|a| a.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addr: &ClientAddr, peer: &str, forwarded: &[&str]) -> String {
        addr.resolve(peer.parse().unwrap(), forwarded.iter().copied())
            .to_string()
    }

    fn trusting(nets: &[&str]) -> ClientAddr {
        ClientAddr::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_trusted() {
        let forwarded = ["203.0.113.5"];
        assert_eq!(
            client(&ClientAddr::default(), "198.51.100.9", &forwarded),
            "198.51.100.9"
        );
        let addr = trusting(&["10.0.0.0/8"]);
        assert_eq!(client(&addr, "198.51.100.9", &forwarded), "198.51.100.9");
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let addr = trusting(&["10.0.0.0/8", "::1/128"]);
        let spoofed = ["6.6.6.6, 203.0.113.5", "10.0.0.7"];
        assert_eq!(client(&addr, "10.0.0.2", &spoofed), "203.0.113.5");
        assert_eq!(client(&addr, "::1", &["[2001:db8::5]:1234"]), "2001:db8::5");
        assert_eq!(
            client(&addr, "::ffff:10.0.0.2", &["192.0.2.4:80"]),
            "192.0.2.4"
        );
        assert_eq!(client(&addr, "10.0.0.2", &["junk, 10.0.0.3"]), "10.0.0.3");
        assert_eq!(client(&addr, "10.0.0.2", &[]), "10.0.0.2");
    }
}
