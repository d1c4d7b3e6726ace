//! A stand-in for a cluster's network, hung below an upstream namespace (the internet, or the
//! VPS): a `cluster` namespace routing between the upstream (`198.51.100.1`, its own end
//! `198.51.100.2`) and one namespace per pod (pod `i` at `10.244.<i>.2/24`, gateway `.1` in
//! the cluster), with the Service IP `10.96.0.10` on the cluster's loopback. The upstream
//! routes the pod network `10.244.0.0/16` to the cluster.

use std::net::Ipv4Addr;

use crate::TestbedError;
use crate::netns::{End, Netns, veth};

/// The address the cluster namespace holds as the targets' "Service IP".
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The upstream's address on the link to the cluster.
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The cluster namespace and the pods, removed when dropped.
#[derive(Debug)]
pub struct PodNetwork {
    /// The router between the upstream and the pods, holding [`SERVICE_IP`].
    pub cluster: Netns,
    /// Pod `i` at `10.244.<i>.2/24`.
    pub pods: Vec<Netns>,
}

impl PodNetwork {
    /// Links a new cluster namespace to `upstream` (interface `k8s0` there) and makes `pods`
    /// pod namespaces behind it.
    pub fn new(upstream: &Netns, pods: usize) -> Result<Self, TestbedError> {
        let cluster = Netns::new("cluster")?;
        veth(
            End {
                ns: upstream,
                ifname: "k8s0",
                cidr: "198.51.100.1/24",
            },
            End {
                ns: &cluster,
                ifname: "up0",
                cidr: "198.51.100.2/24",
            },
        )?;
        upstream.run(&["ip", "route", "add", "10.244.0.0/16", "via", "198.51.100.2"])?;
        cluster.enable_forwarding()?;
        cluster.default_route(UPSTREAM_IP)?;
        // No dummy module on every kernel: the Service IP lives on lo.
        cluster.addr("lo", &format!("{SERVICE_IP}/32"))?;
        let mut namespaces = Vec::with_capacity(pods);
        for i in 0..pods {
            let octet = u8::try_from(i).map_err(|_| TestbedError::Command {
                command: "PodNetwork::new".into(),
                detail: format!("{pods} pods do not fit 10.244.0.0/16"),
            })?;
            let pod = Netns::new(&format!("pod{i}"))?;
            veth(
                End {
                    ns: &cluster,
                    ifname: &format!("p{i}"),
                    cidr: &format!("10.244.{i}.1/24"),
                },
                End {
                    ns: &pod,
                    ifname: "eth0",
                    cidr: &format!("10.244.{i}.2/24"),
                },
            )?;
            pod.default_route(Ipv4Addr::new(10, 244, octet, 1))?;
            namespaces.push(pod);
        }
        Ok(Self {
            cluster,
            pods: namespaces,
        })
    }
}
