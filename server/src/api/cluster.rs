//! `GET /api/cluster` (status) and `POST /api/cluster/leave` (this node, or `{"node": id}`,
//! leaves the cluster cleanly: removed from the membership, its tasks moved, then it stops).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::Code;
use super::{ApiError, AppState};
use crate::cluster::server::MembershipReply;

fn not_clustered() -> ApiError {
    ApiError::not_found(
        Code::NotClustered,
        "this node runs alone (start it with --cluster ADDR to form or join a cluster)",
    )
}

pub async fn status(
    State(st): State<AppState>,
) -> Result<Json<openclaw_proto::cluster::ClusterStatusView>, ApiError> {
    let c = st.app.cluster.as_ref().ok_or_else(not_clustered)?;
    Ok(Json(crate::cluster::status::status(c)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    /// The node to remove; default this one.
    pub node: Option<u64>,
}

pub async fn leave(
    State(st): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = st.app.cluster.as_ref().ok_or_else(not_clustered)?;
    let req: LeaveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LeaveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                Code::InvalidBody,
                format!("expected {{\"node\": <id>}}: {e}"),
            )
        })?
    };
    let node = req.node.unwrap_or(c.id);
    match c.remove_member(node).await {
        MembershipReply::Done { .. } => {
            if node == c.id {
                // Out of the membership: stop taking work and exit cleanly.
                let token = st.app.shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    token.cancel();
                });
            }
            Ok(Json(json!({"left": node})))
        }
        MembershipReply::NotLeader(_) => Err(ApiError::unavailable(
            Code::NoLeader,
            "the cluster has no leader right now; retry",
            1,
        )),
        MembershipReply::Failed(e) => Err(ApiError::unavailable(Code::LeaveFailed, e, 1)),
    }
}
