//! A blocking netlink request/acknowledge loop shared by the NAT and route code: sends a
//! batch of messages in one `send`, then reads replies until every message that asked for an
//! acknowledgement got one, or the first error. Control path only (not per packet).

use std::fmt::Debug;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// How long to wait for the kernel's replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, used, or timed out.
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused message `index` of the batch.
    #[error("kernel refused message {index} ({what}): {source}")]
    Refused {
        /// Position of the refused message in the batch.
        index: usize,
        /// What the message was.
        what: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// A reply could not be decoded.
    #[error("cannot decode the kernel's reply: {0}")]
    Decode(#[source] netlink_packet_core::DecodeError),
}

impl NetlinkError {
    /// A stable, low-cardinality name for metrics labels and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Socket(_) => "NetlinkSocketFailed",
            Self::Refused { .. } => "NetlinkRefused",
            Self::Decode(_) => "NetlinkDecodeFailed",
        }
    }

    /// The errno of a refusal, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Sends `messages` (flags already set; sequence numbers are filled in) over a `protocol`
/// socket and returns the data messages the kernel answered with.
pub fn transact<T>(
    protocol: isize,
    mut messages: Vec<NetlinkMessage<T>>,
) -> Result<Vec<NetlinkMessage<T>>, NetlinkError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut socket = Socket::new(protocol).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    socket2::SockRef::from(&socket)
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(NetlinkError::Socket)?;

    let mut expected = 0usize;
    let mut buf = Vec::new();
    for (seq, msg) in (1u32..).zip(messages.iter_mut()) {
        msg.header.sequence_number = seq;
        msg.finalize();
        if msg.header.flags & NLM_F_ACK != 0 {
            expected += 1;
        }
        let start = buf.len();
        buf.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut buf[start..]);
    }
    socket.send(&buf, 0).map_err(NetlinkError::Socket)?;

    let mut answers = Vec::new();
    let mut acked = 0usize;
    while acked < expected {
        let (reply, _) = socket.recv_from_full().map_err(NetlinkError::Socket)?;
        let mut offset = 0;
        while offset < reply.len() {
            let msg =
                NetlinkMessage::<T>::deserialize(&reply[offset..]).map_err(NetlinkError::Decode)?;
            let len = usize::try_from(msg.header.length).unwrap_or(0);
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            let seq = msg.header.sequence_number;
            match msg.payload {
                NetlinkPayload::Error(err) => {
                    if err.code.is_none() {
                        acked += 1;
                    } else {
                        let index = usize::try_from(seq).unwrap_or(1).saturating_sub(1);
                        let mut what = messages
                            .get(index)
                            .map(|m| format!("{:?}", m.payload))
                            .unwrap_or_default();
                        what.truncate(160);
                        return Err(NetlinkError::Refused {
                            index,
                            what,
                            source: err.to_io(),
                        });
                    }
                }
                NetlinkPayload::Done(_) => {}
                _ => answers.push(msg),
            }
        }
    }
    Ok(answers)
}
