//! What mesh peers say to each other: the heartbeat, the request and its reply, and the node
//! name ractor_cluster carries in its handshake. Every payload crosses the wire as bytes encoded
//! by [`openclaw_proto::codec`] (version byte + postcard), so a peer never makes ractor decode
//! anything but a `Vec<u8>`. Enums only grow at the end.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What a node reports about its own work in every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Tasks waiting in this node's queue.
    pub queued: u32,
    /// Tasks running on this node.
    pub running: u32,
    /// Worker slots on this node.
    pub workers: u32,
}

/// Cast to every remote watcher each heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Heartbeat {
    pub from: NodeId,
    /// The sender's wall clock, for display only (never compared across nodes for liveness).
    pub sent_ms: u64,
    pub load: LoadReport,
}

/// A request to a peer's watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub from: NodeId,
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RequestKind {
    /// Answered by the watcher itself.
    Ping,
    /// Handed to the handler the application installed.
    App(Vec<u8>),
}

/// The watcher's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    Pong,
    App(Vec<u8>),
    /// The peer has no handler installed (yet).
    NoHandler,
    /// The peer already runs its maximum of concurrent requests.
    Busy,
    /// The peer's handler ran past the peer's own limit.
    HandlerTimeout,
    /// The peer could not decode the request.
    BadRequest,
}

const NAME_PREFIX: &str = "openclaw-";

/// The ractor_cluster node name for a node id (ractor_cluster appends `@host`).
pub(crate) fn node_name(id: NodeId) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// The node id in a peer's full ractor_cluster name (`openclaw-<id>@<host>`), if it is ours.
pub(crate) fn parse_node_name(full: &str) -> Option<NodeId> {
    let name = full.split('@').next()?;
    name.strip_prefix(NAME_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openclaw_proto::codec::{decode, encode};

    #[test]
    fn node_names_round_trip_and_foreign_names_are_rejected() {
        let cases: &[(&str, Option<NodeId>)] = &[
            ("openclaw-7@127.0.0.1", Some(7)),
            ("openclaw-18446744073709551615@h", Some(u64::MAX)),
            ("openclaw-7", Some(7)),
            ("openclaw-@h", None),
            ("openclaw-x@h", None),
            ("other-7@h", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_node_name(input), *expected, "{input}");
        }
        assert_eq!(parse_node_name(&format!("{}@h", node_name(42))), Some(42));
    }

    #[test]
    fn wire_messages_round_trip_and_garbage_is_an_error() -> Result<(), Box<dyn std::error::Error>>
    {
        let hb = Heartbeat {
            from: 3,
            sent_ms: 1_700_000_000_000,
            load: LoadReport {
                queued: 1,
                running: 2,
                workers: 4,
            },
        };
        assert_eq!(decode::<Heartbeat>(&encode(&hb)?)?, hb);
        let req = Request {
            from: 1,
            kind: RequestKind::App(vec![1, 2, 3]),
        };
        assert_eq!(decode::<Request>(&encode(&req)?)?, req);
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[0xff, 1, 2]).is_err());
        Ok(())
    }
}
