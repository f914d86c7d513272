//! Channels: chat platforms whose messages become tasks and whose conversations get the answers
//! back. Today one, [`feishu`] (Feishu / Lark): its event subscription in, its Open API out.
//!
//! A channel owns its wire format (pure parsing, signatures, decryption), its outbound client and
//! the decision of what becomes a task; it admits tasks through the [`crate::tasks::Tasks`]
//! handle and sends answers through the delivery seam ([`crate::tasks::delivery::ChannelSender`]),
//! so a reply is retried and parked like a callback. Channels never import `api/`, `node/` or
//! `cluster/`.

pub mod feishu;
