//! The cluster watcher: one actor per node, named [`watcher_name`] and a member of the
//! [`WATCHERS_GROUP`] process group; every connected node holds a proxy of it. It records the heartbeats peers cast to it and
//! answers their requests: `Ping` itself, application requests through the installed handler.
//!
//! Its messages carry only bytes (decoded here with [`openclaw_proto::codec`]), so a malformed
//! payload is a logged error, never a panic in ractor's decoder.
//!
//! Mailbox: ractor mailboxes are unbounded. Inflow is bounded by the peers: one heartbeat per
//! peer per interval, and requests that are answered at once (`Ping`, `Busy`) or handed to a task
//! under a [`INBOUND_INFLIGHT_MAX`] semaphore, so the handler's run time never queues messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openclaw_proto::codec::{decode, encode};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::Semaphore;

use super::registry::Shared;
use super::wire::{Heartbeat, Reply, Request, RequestKind};
use crate::types::NodeId;

/// The process group every node's watcher joins.
pub const WATCHERS_GROUP: &str = "openclaw.watchers";
/// The registered name of node `id`'s watcher; peers find it by this name among their session's
/// proxies.
pub fn watcher_name(id: NodeId) -> String {
    format!("openclaw.watcher.{id}")
}

/// Application requests handled at once on this node; more are answered `Busy`.
pub(crate) const INBOUND_INFLIGHT_MAX: usize = 256;
/// A handler running longer than this is abandoned and answered `HandlerTimeout` (callers have
/// given up long before).
pub(crate) const HANDLER_TIME_MAX: Duration = Duration::from_secs(60);

/// Everything that can happen to a watcher. Both variants may come from another node.
#[derive(RactorClusterMessage)]
pub enum WatcherMsg {
    /// An encoded [`Heartbeat`].
    Heartbeat(Vec<u8>),
    /// An encoded [`Request`]; the reply is an encoded [`Reply`].
    #[rpc]
    Request(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

pub(crate) struct Watcher;

pub(crate) struct WatcherArgs {
    pub me: NodeId,
    pub shared: Shared,
}

pub(crate) struct WatcherState {
    me: NodeId,
    shared: Shared,
    inflight: Arc<Semaphore>,
}

fn send_reply(port: RpcReplyPort<Vec<u8>>, reply: &Reply) {
    match encode(reply) {
        // The caller may have timed out and gone: nothing to do then.
        Ok(bytes) => {
            let _ = port.send(bytes);
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a mesh reply"),
    }
}

impl Actor for Watcher {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = WatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(WATCHERS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(WatcherState {
            me: args.me,
            shared: args.shared,
            inflight: Arc::new(Semaphore::new(INBOUND_INFLIGHT_MAX)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatcherMsg::Heartbeat(bytes) => match decode::<Heartbeat>(&bytes) {
                Ok(hb) if hb.from == state.me => {}
                Ok(hb) => {
                    let kept = state.shared.lock().record_contact(
                        hb.from,
                        hb.sent_ms,
                        hb.load,
                        Instant::now(),
                    );
                    if !kept {
                        tracing::warn!(
                            from = hb.from,
                            "heartbeat dropped: too many distinct nodes"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable heartbeat dropped"),
            },
            WatcherMsg::Request(bytes, port) => {
                let req = match decode::<Request>(&bytes) {
                    Ok(req) => req,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable mesh request");
                        send_reply(port, &Reply::BadRequest);
                        return Ok(());
                    }
                };
                let body = match req.kind {
                    RequestKind::Ping => {
                        send_reply(port, &Reply::Pong);
                        return Ok(());
                    }
                    RequestKind::App(body) => body,
                };
                let Some(handler) = state.shared.lock().handler.clone() else {
                    send_reply(port, &Reply::NoHandler);
                    return Ok(());
                };
                let Ok(permit) = state.inflight.clone().try_acquire_owned() else {
                    send_reply(port, &Reply::Busy);
                    return Ok(());
                };
                let from = req.from;
                tokio::spawn(async move {
                    let reply = match tokio::time::timeout(HANDLER_TIME_MAX, handler(from, body))
                        .await
                    {
                        Ok(out) => Reply::App(out),
                        Err(_) => {
                            tracing::warn!(from, "mesh request handler exceeded its time limit");
                            Reply::HandlerTimeout
                        }
                    };
                    send_reply(port, &reply);
                    drop(permit);
                });
            }
        }
        Ok(())
    }
}
