//! Addresses on the WireGuard overlay: the relay on the VPS takes the first host address of
//! `spec.tunnel.network`, uplink replica `o` takes the address `o + 2` after the network
//! address. IPv4 only; every address is checked to lie inside the network and not to be its
//! broadcast address.

use std::net::Ipv4Addr;

/// Why the overlay addressing could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The network is not `a.b.c.d/n` with an IPv4 address.
    #[error("tunnel.network {network:?} is not an IPv4 network in CIDR form (e.g. 10.200.0.0/24)")]
    Syntax {
        /// What was given.
        network: String,
    },
    /// The network is too small for the relay and the requested replicas.
    #[error(
        "tunnel.network {network} has room for {capacity} uplink replicas, {replicas} requested"
    )]
    TooSmall {
        /// The network.
        network: String,
        /// How many uplinks fit.
        capacity: u32,
        /// How many were asked for.
        replicas: u32,
    },
}

impl IpamError {
    /// A stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "TunnelNetworkInvalid",
            Self::TooSmall { .. } => "TunnelNetworkTooSmall",
        }
    }
}

/// The overlay network and the addresses in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipam {
    base: u32,
    prefix: u8,
}

impl Ipam {
    /// Parses `a.b.c.d/n`. Host bits are masked off, so `10.200.0.7/24` means `10.200.0.0/24`.
    pub fn parse(network: &str) -> Result<Self, IpamError> {
        let syntax = || IpamError::Syntax {
            network: network.to_owned(),
        };
        let (addr, prefix) = network.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || prefix.len() > 2 || (prefix.len() > 1 && prefix.starts_with('0')) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Ok(Self {
            base: u32::from(addr) & mask,
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The network as an [`ipnet::Ipv4Net`] (`None` never happens: the prefix is checked).
    pub fn net(&self) -> Option<ipnet::Ipv4Net> {
        ipnet::Ipv4Net::new(self.network(), self.prefix).ok()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// `a.b.c.d/n` with the network address.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    /// How many uplink replicas fit: every host address but the relay's.
    pub fn capacity(&self) -> u32 {
        let size: u64 = 1u64 << (32 - u32::from(self.prefix));
        // network, broadcast and relay addresses are not for uplinks.
        u32::try_from(size.saturating_sub(3)).unwrap_or(u32::MAX)
    }

    /// Checks that `replicas` uplinks fit.
    pub fn check_replicas(&self, replicas: u32) -> Result<(), IpamError> {
        if replicas > self.capacity() {
            return Err(IpamError::TooSmall {
                network: self.cidr(),
                capacity: self.capacity(),
                replicas,
            });
        }
        Ok(())
    }

    /// The relay's address (network + 1).
    pub fn relay(&self) -> Result<Ipv4Addr, IpamError> {
        self.host(1, 0)
    }

    /// The address of uplink replica `ordinal` (network + 2 + ordinal).
    pub fn replica(&self, ordinal: u32) -> Result<Ipv4Addr, IpamError> {
        self.host(u64::from(ordinal) + 2, ordinal + 1)
    }

    /// The relay's interface address with the network's prefix (`10.200.0.1/24`).
    pub fn relay_interface(&self) -> Result<String, IpamError> {
        Ok(format!("{}/{}", self.relay()?, self.prefix))
    }

    fn host(self, offset: u64, replicas: u32) -> Result<Ipv4Addr, IpamError> {
        let size: u64 = 1u64 << (32 - u32::from(self.prefix));
        // Inside the network, and neither the network nor the broadcast address.
        if offset == 0 || offset + 1 >= size {
            return Err(IpamError::TooSmall {
                network: self.cidr(),
                capacity: self.capacity(),
                replicas,
            });
        }
        let addr = u64::from(self.base) + offset;
        let addr = u32::try_from(addr).map_err(|_| IpamError::TooSmall {
            network: self.cidr(),
            capacity: self.capacity(),
            replicas,
        })?;
        Ok(Ipv4Addr::from(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_category_is_upper_camel_case() {
        let all = [
            IpamError::Syntax {
                network: String::new(),
            },
            IpamError::TooSmall {
                network: String::new(),
                capacity: 0,
                replicas: 1,
            },
        ];
        let categories: Vec<&str> = all.iter().map(IpamError::category).collect();
        assert_eq!(
            categories,
            ["TunnelNetworkInvalid", "TunnelNetworkTooSmall"]
        );
    }

    #[test]
    fn relay_is_base_plus_one_and_replicas_follow() {
        let ipam = Ipam::parse("10.200.0.0/24").unwrap();
        assert_eq!(ipam.relay().unwrap(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(ipam.replica(0).unwrap(), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(ipam.replica(252).unwrap(), Ipv4Addr::new(10, 200, 0, 254));
        assert!(
            ipam.replica(253).is_err(),
            "the broadcast address is no uplink"
        );
        assert_eq!(ipam.capacity(), 253);
        assert_eq!(ipam.relay_interface().unwrap(), "10.200.0.1/24");
    }

    #[test]
    fn masks_host_bits_and_bounds_small_networks() {
        let ipam = Ipam::parse("10.9.8.77/29").unwrap();
        assert_eq!(ipam.cidr(), "10.9.8.72/29");
        assert_eq!(ipam.capacity(), 5);
        assert_eq!(ipam.replica(4).unwrap(), Ipv4Addr::new(10, 9, 8, 78));
        assert!(ipam.replica(5).is_err());
        assert!(ipam.check_replicas(5).is_ok());
        assert!(matches!(
            ipam.check_replicas(6),
            Err(IpamError::TooSmall { capacity: 5, .. })
        ));
        assert!(Ipam::parse("10.0.0.0/32").unwrap().relay().is_err());
    }

    #[test]
    fn refuses_what_is_not_an_ipv4_network() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/64",
            "x/24",
            "10.0.0.0/024",
            "10.0.0.0/",
        ] {
            assert!(Ipam::parse(bad).is_err(), "{bad}");
        }
    }
}
