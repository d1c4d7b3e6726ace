//! The uplink's packet filter and NAT, as one nftables table (`ip uplink`) programmed over
//! netlink. The VPS is the least trusted party (DESIGN.md §4, "Trust boundaries"): what
//! arrives on the tunnel may reach only the configured forwards and `/ready`, nothing else
//! in the cluster.
//!
//! ```text
//! table ip uplink {
//!   chain prerouting { type nat hook prerouting priority -100; policy accept;
//!     iifname "wg-uplink" ip daddr 10.200.0.2 meta l4proto tcp th dport 443 dnat to 10.96.0.10:8443  # per forward
//!     iifname != "wg-uplink" meta l4proto tcp th dport 40600 dnat to 10.200.0.1:40600  # admin bridge
//!   }
//!   chain postrouting { type nat hook postrouting priority 100; policy accept;
//!     ip saddr 10.200.0.0/24 oifname != "wg-uplink" masquerade   # targets answer this pod
//!     oifname "wg-uplink" masquerade                             # admin bridge replies return
//!   }
//!   chain forward { type filter hook forward priority 0; policy drop;
//!     ct state established,related accept
//!     iifname "wg-uplink" ct status dnat accept                          # a configured forward
//!     iifname != "wg-uplink" oifname "wg-uplink" ct status dnat accept   # the admin bridge
//!   }
//!   chain input { type filter hook input priority 0; policy accept;
//!     iifname "wg-uplink" ct state established,related accept
//!     iifname "wg-uplink" ct status dnat accept          # a forward whose target is this pod
//!     iifname "wg-uplink" meta l4proto tcp th dport 40500 accept   # /ready
//!     iifname "wg-uplink" drop
//!   }
//! }
//! ```
//!
//! A forward is DNAT'ed only when addressed to this replica's own tunnel address, and only
//! connections our DNAT rules translated may cross the pod: the pod forwards nothing else
//! (an uplink pod routes for no one), so from the VPS the API server, kubelets, other pods
//! and cloud metadata are unreachable even though `ip_forward` is on.
//!
//! [`ruleset`] is pure (tested against the bytes `nft` would send); [`apply`] replaces the
//! whole table in one atomic batch, so a refused batch leaves the previous table in place.
//! Established connections keep their conntrack NAT bindings across a replace (and the
//! forward chain accepts established flows first), which is why a config change does not
//! drop sessions of unchanged ports.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, Immediate,
    InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, TableAttribute,
};
use netlink_packet_netfilter::nftables::{ChainMessage, RuleMessage, TableMessage};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::document::{ADMIN_BRIDGE_PORT, Forward, Protocol};
use crate::netlink::{NetlinkError, transact};
use netlink_packet_netfilter::nftables::{Bitwise, Verdict, VerdictAttribute};

/// The table's name (family `ip`).
pub const TABLE: &str = "uplink";
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
/// `ct state established,related`: the conntrack state bits (host byte order, as nft).
const CT_STATE_ESTABLISHED_RELATED: u32 = 0b110;
/// `ct status dnat` (`IPS_DST_NAT`).
const CT_STATUS_DNAT: u32 = 1 << 5;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const ENOENT: i32 = 2;

/// What the table must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSpec {
    /// The tunnel interface (`wg-uplink`).
    pub interface: String,
    /// This replica's own tunnel address: the only destination a forward is DNAT'ed from.
    pub address: Ipv4Addr,
    /// The tunnel network, masqueraded toward the targets.
    pub network: Ipv4Net,
    /// The `/ready` port, the one local port the tunnel may reach.
    pub ready_port: u16,
    /// Forwarded ports.
    pub forwards: Vec<Forward>,
    /// Envoy's admin on the relay, bridged from TCP [`ADMIN_BRIDGE_PORT`] on other interfaces.
    pub admin_bridge: Option<SocketAddrV4>,
}

/// One message of the batch, with its netlink flags.
pub type Message = NetlinkMessage<NetfilterMessage>;

/// The atomic batch that replaces table `ip uplink` with what `spec` asks for.
pub fn ruleset(spec: &NatSpec) -> Vec<Message> {
    let mut batch = vec![control(ControlMessage::BatchBegin)];
    let table = || vec![TableAttribute::Name(TABLE.into())];
    // Create (no-op if present), delete, create: an empty namespace and an existing table
    // end in the same state, in one generation.
    batch.push(nft(
        NfTablesMessage::NewTable(TableMessage {
            attributes: table(),
        }),
        NLM_F_CREATE,
    ));
    batch.push(nft(
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: table(),
        }),
        0,
    ));
    batch.push(nft(
        NfTablesMessage::NewTable(TableMessage {
            attributes: table(),
        }),
        NLM_F_CREATE,
    ));
    for (name, hook, priority, kind, policy) in [
        (
            "prerouting",
            InetHookNumber::PreRouting,
            -100i32,
            "nat",
            NF_ACCEPT,
        ),
        (
            "postrouting",
            InetHookNumber::PostRouting,
            100i32,
            "nat",
            NF_ACCEPT,
        ),
        ("forward", InetHookNumber::Forward, 0i32, "filter", NF_DROP),
        ("input", InetHookNumber::LocalIn, 0i32, "filter", NF_ACCEPT),
    ] {
        batch.push(nft(
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE.into()),
                    ChainAttribute::Name(name.into()),
                    ChainAttribute::Hook(vec![
                        Hook::Number(hook.into()),
                        Hook::Priority(priority.cast_unsigned()),
                    ]),
                    ChainAttribute::Policy(policy),
                    ChainAttribute::Type(kind.into()),
                ],
            }),
            NLM_F_CREATE,
        ));
    }
    let iface = ifname(&spec.interface);
    for fwd in &spec.forwards {
        let mut e = vec![meta(MetaKey::Iifname), cmp(Operator::Equal, iface.to_vec())];
        e.extend(daddr(spec.address));
        e.extend(dport(fwd.protocol, fwd.listen_port));
        e.extend(dnat(fwd.target_ip, fwd.target_port));
        batch.push(rule("prerouting", e));
    }
    if let Some(bridge) = spec.admin_bridge {
        let mut e = vec![
            meta(MetaKey::Iifname),
            cmp(Operator::NotEqual, iface.to_vec()),
        ];
        e.extend(dport(Protocol::Tcp, ADMIN_BRIDGE_PORT));
        e.extend(dnat(*bridge.ip(), bridge.port()));
        batch.push(rule("prerouting", e));
    }
    let mut masq_out = saddr_in(spec.network);
    masq_out.extend([
        meta(MetaKey::Oifname),
        cmp(Operator::NotEqual, iface.to_vec()),
        masquerade(),
    ]);
    batch.push(rule("postrouting", masq_out));
    if spec.admin_bridge.is_some() {
        batch.push(rule(
            "postrouting",
            vec![
                meta(MetaKey::Oifname),
                cmp(Operator::Equal, iface.to_vec()),
                masquerade(),
            ],
        ));
    }
    batch.extend(filter_rules(spec, &iface));
    batch.push(control(ControlMessage::BatchEnd));
    batch
}

/// The `forward` and `input` rules: the tunnel reaches only DNAT'ed forwards and `/ready`.
fn filter_rules(spec: &NatSpec, iface: &[u8; 16]) -> Vec<Message> {
    let from_tunnel = || [meta(MetaKey::Iifname), cmp(Operator::Equal, iface.to_vec())];
    let mut out = Vec::new();
    let mut e = ct_bits(NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED).to_vec();
    e.push(verdict(NF_ACCEPT));
    out.push(rule("forward", e));
    let mut e = from_tunnel().to_vec();
    e.extend(ct_bits(NFT_CT_STATUS, CT_STATUS_DNAT));
    e.push(verdict(NF_ACCEPT));
    out.push(rule("forward", e));
    if spec.admin_bridge.is_some() {
        let mut e = vec![
            meta(MetaKey::Iifname),
            cmp(Operator::NotEqual, iface.to_vec()),
            meta(MetaKey::Oifname),
            cmp(Operator::Equal, iface.to_vec()),
        ];
        e.extend(ct_bits(NFT_CT_STATUS, CT_STATUS_DNAT));
        e.push(verdict(NF_ACCEPT));
        out.push(rule("forward", e));
    }
    for bits in [
        (NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED),
        (NFT_CT_STATUS, CT_STATUS_DNAT),
    ] {
        let mut e = from_tunnel().to_vec();
        e.extend(ct_bits(bits.0, bits.1));
        e.push(verdict(NF_ACCEPT));
        out.push(rule("input", e));
    }
    let mut e = from_tunnel().to_vec();
    e.extend(dport(Protocol::Tcp, spec.ready_port));
    e.push(verdict(NF_ACCEPT));
    out.push(rule("input", e));
    let mut e = from_tunnel().to_vec();
    e.push(verdict(NF_DROP));
    out.push(rule("input", e));
    out
}

/// Replaces the table with `spec`'s rules in one atomic batch.
pub fn apply(spec: &NatSpec) -> Result<(), NetlinkError> {
    transact(netlink_sys::protocols::NETLINK_NETFILTER, ruleset(spec)).map(|_| ())
}

/// Whether table `ip uplink` exists (the readiness check "rules in place").
pub fn table_present() -> Result<bool, NetlinkError> {
    let mut get = nft(
        NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        }),
        0,
    );
    get.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    match transact(netlink_sys::protocols::NETLINK_NETFILTER, vec![get]) {
        Ok(answers) => Ok(!answers.is_empty()),
        Err(e) if e.errno() == Some(ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the table (for a clean stop); absent is fine.
pub fn remove() -> Result<(), NetlinkError> {
    let batch = vec![
        control(ControlMessage::BatchBegin),
        nft(
            NfTablesMessage::DeleteTable(TableMessage {
                attributes: vec![TableAttribute::Name(TABLE.into())],
            }),
            0,
        ),
        control(ControlMessage::BatchEnd),
    ];
    match transact(netlink_sys::protocols::NETLINK_NETFILTER, batch) {
        Err(e) if e.errno() == Some(ENOENT) => Ok(()),
        other => other.map(|_| ()),
    }
}

fn control(message: ControlMessage) -> Message {
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            message,
        )),
    );
    msg.header.flags = NLM_F_REQUEST;
    msg
}

fn nft(message: NfTablesMessage, flags: u16) -> Message {
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            message,
        )),
    );
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    msg
}

fn rule(chain: &str, expressions: Vec<Expressions>) -> Message {
    nft(
        NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain(chain.into()),
                RuleAttribute::Expressions(
                    expressions
                        .into_iter()
                        .map(ListAttribute::<ExpressionAttribute>::from)
                        .collect(),
                ),
            ],
        }),
        NLM_F_CREATE | netlink_packet_core::NLM_F_APPEND,
    )
}

/// An interface name as nft compares it: 16 bytes, zero-padded (exact match).
fn ifname(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

fn meta(key: MetaKey) -> Expressions {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
}

fn cmp(op: Operator, data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

fn payload(base: u32, offset: u32, len: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

fn immediate(register: Register, data: Vec<u8>) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(register),
        Immediate::Data(DataAttribute::Value(data)),
    ])
}

/// `meta l4proto <proto> th dport <port>`.
fn dport(protocol: Protocol, port: u16) -> [Expressions; 4] {
    [
        meta(MetaKey::Other(NFT_META_L4PROTO)),
        cmp(Operator::Equal, vec![protocol.ip_number()]),
        payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
        cmp(Operator::Equal, port.to_be_bytes().to_vec()),
    ]
}

/// `ip saddr <network>`, as nft writes it: whole bytes compared when the prefix is a byte
/// boundary, else the full address masked.
fn saddr_in(network: Ipv4Net) -> Vec<Expressions> {
    let prefix = network.prefix_len();
    let octets = network.network().octets();
    if prefix == 0 {
        return Vec::new();
    }
    if prefix.is_multiple_of(8) {
        let len = usize::from(prefix / 8);
        return vec![
            payload(NFT_PAYLOAD_NETWORK_HEADER, 12, u32::from(prefix / 8)),
            cmp(Operator::Equal, octets[..len].to_vec()),
        ];
    }
    vec![
        payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(network.netmask().octets().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ]),
        cmp(Operator::Equal, octets.to_vec()),
    ]
}

/// `ip daddr <addr>`.
fn daddr(addr: Ipv4Addr) -> [Expressions; 2] {
    [
        payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
        cmp(Operator::Equal, addr.octets().to_vec()),
    ]
}

/// `ct <state|status> <bits>`: conntrack key `key` has any of `bits` set.
fn ct_bits(key: u32, bits: u32) -> [Expressions; 3] {
    let be = |v: u32| v.to_be_bytes().to_vec();
    [
        Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                DefaultNla::new(NFTA_CT_DREG, be(NFT_REG_1)),
                DefaultNla::new(NFTA_CT_KEY, be(key)),
            ],
        },
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            // Conntrack keys are host-endian words, like nft writes them.
            Bitwise::Mask(DataAttribute::Value(bits.to_ne_bytes().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ]),
        cmp(Operator::NotEqual, vec![0; 4]),
    ]
}

/// `accept` / `drop`.
fn verdict(code: u32) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(code),
        )])),
    ])
}

/// `dnat to <addr>:<port>`.
fn dnat(addr: Ipv4Addr, port: u16) -> [Expressions; 3] {
    let be = |v: u32| v.to_be_bytes().to_vec();
    [
        immediate(Register::Reg1, addr.octets().to_vec()),
        immediate(Register::Reg2, port.to_be_bytes().to_vec()),
        Expressions::Other {
            expression_type: "nat".into(),
            attributes: vec![
                DefaultNla::new(NFTA_NAT_TYPE, be(NFT_NAT_DNAT)),
                DefaultNla::new(NFTA_NAT_FAMILY, be(NFPROTO_IPV4)),
                DefaultNla::new(NFTA_NAT_REG_ADDR_MIN, be(NFT_REG_1)),
                DefaultNla::new(NFTA_NAT_REG_PROTO_MIN, be(NFT_REG_2)),
            ],
        },
    ]
}

fn masquerade() -> Expressions {
    Expressions::Other {
        expression_type: "masq".into(),
        attributes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NatSpec {
        NatSpec {
            interface: "wg-uplink".into(),
            address: Ipv4Addr::new(10, 200, 0, 2),
            network: "10.200.0.0/24".parse().unwrap(),
            ready_port: 40500,
            forwards: vec![
                Forward {
                    protocol: Protocol::Tcp,
                    listen_port: 8080,
                    target_ip: Ipv4Addr::new(10, 1, 2, 3),
                    target_port: 80,
                },
                Forward {
                    protocol: Protocol::Udp,
                    listen_port: 5353,
                    target_ip: Ipv4Addr::new(10, 1, 2, 3),
                    target_port: 53,
                },
            ],
            admin_bridge: Some("10.200.0.1:40600".parse().unwrap()),
        }
    }

    #[test]
    fn batch_shape() {
        let batch = ruleset(&spec());
        // begin, 3 table ops, 4 chains, 2 forwards + bridge, 2 masquerades, 3 forward-chain
        // rules, 4 input rules, end
        assert_eq!(batch.len(), 1 + 3 + 4 + 3 + 2 + 3 + 4 + 1);
        for msg in &batch {
            let mut m = msg.clone();
            m.finalize();
            let mut buf = vec![0; m.buffer_len()];
            m.serialize(&mut buf);
            assert!(buf.len() >= 20);
        }
        let no_bridge = NatSpec {
            admin_bridge: None,
            forwards: vec![],
            ..spec()
        };
        assert_eq!(ruleset(&no_bridge).len(), 1 + 3 + 4 + 1 + 2 + 4 + 1);
    }

    #[test]
    fn interface_names_are_exact_matches() {
        let name = ifname("wg-uplink");
        assert_eq!(&name[..9], b"wg-uplink");
        assert!(name[9..].iter().all(|b| *b == 0));
    }

    #[test]
    fn network_match_uses_whole_bytes_and_a_mask() {
        assert_eq!(saddr_in("10.200.0.0/24".parse().unwrap()).len(), 2);
        assert_eq!(saddr_in("10.200.0.0/20".parse().unwrap()).len(), 3);
    }
}
