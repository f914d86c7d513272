//! A small HTTP client for the node's API, used by the CLI's client commands (`submit`,
//! `cache`, `session`, …).

use std::time::Duration;

use anyhow::{bail, Context};
use openclaw_proto::api::TaskAccepted;
use openclaw_proto::{ErrorBody, Priority, TaskSubmit, TaskView};

use crate::cli::{CacheAction, CacheArgs, NodeUrl, SubmitArgs};

/// An error answer of the node: status and `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(
            f,
            "{} {reason} ({}): {}",
            self.status, self.code, self.message
        )
    }
}

impl std::error::Error for ApiFailure {}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(target: &NodeUrl) -> anyhow::Result<Client> {
        Ok(Client {
            base: target.node.trim_end_matches('/').to_string(),
            token: std::env::var(&target.token_env)
                .ok()
                .filter(|t| !t.is_empty()),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn read<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the node's answer")?;
        if !status.is_success() {
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(&bytes) {
                return Err(ApiFailure {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                }
                .into());
            }
            bail!("{}: {}", status, String::from_utf8_lossy(&bytes));
        }
        serde_json::from_slice(&bytes).context("unexpected answer from the node")
    }

    /// `GET path` (a JSON answer).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .req(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    /// `DELETE path` (a JSON answer).
    pub async fn delete_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let resp = self
            .req(reqwest::Method::DELETE, path)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    /// `PUT path` with a text body (a JSON answer).
    pub async fn put_text<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: String,
    ) -> anyhow::Result<T> {
        let resp = self
            .req(reqwest::Method::PUT, path)
            .header(
                reqwest::header::CONTENT_TYPE,
                "text/markdown; charset=utf-8",
            )
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    pub async fn submit(&self, task: &TaskSubmit) -> anyhow::Result<TaskAccepted> {
        let resp = self
            .req(reqwest::Method::POST, "/api/tasks")
            .json(task)
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    pub async fn task(&self, id: &str, wait_s: u64) -> anyhow::Result<TaskView> {
        let resp = self
            .req(
                reqwest::Method::GET,
                &format!("/api/tasks/{id}?wait={wait_s}"),
            )
            .timeout(Duration::from_secs(wait_s + 30))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }
}

impl Client {
    /// `GET /api/cluster`.
    pub async fn cluster(&self) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .req(reqwest::Method::GET, "/api/cluster")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    /// `POST /api/cluster/leave`.
    pub async fn leave(&self, node: Option<u64>) -> anyhow::Result<serde_json::Value> {
        let body = match node {
            Some(n) => serde_json::json!({ "node": n }),
            None => serde_json::json!({}),
        };
        let resp = self
            .req(reqwest::Method::POST, "/api/cluster/leave")
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    /// `POST path` with no body (a JSON answer).
    pub async fn post_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }

    pub async fn queue(&self) -> anyhow::Result<openclaw_proto::api::QueueView> {
        let resp = self
            .req(reqwest::Method::GET, "/api/queue")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {}", self.base))?;
        Self::read(resp).await
    }
}

/// `openclaw-node submit`: returns the process exit code (0 ok, 1 task failed, 2 still running).
pub async fn submit(args: SubmitArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.target)?;
    let priority = match &args.priority {
        Some(p) => Some(Priority::parse(p).with_context(|| {
            format!("--priority `{p}`: use critical, high, normal, low or background")
        })?),
        None => None,
    };
    let task = TaskSubmit {
        agent: args.agent,
        input: args.input.join(" "),
        session_id: args.session,
        source: args.source,
        priority,
        task_type: args.task_type,
        model: args.model,
        callback_url: args.callback_url,
        idempotency_key: args.idempotency_key,
        max_tokens: args.max_tokens,
        ..Default::default()
    };
    let accepted = client.submit(&task).await?;
    let Some(wait) = args.wait else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&accepted)?);
        } else {
            println!("{} {}", accepted.id, accepted.status.as_str());
        }
        return Ok(0);
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Long-poll in slices, so a task that waits (budget pause, rate limit) is reported while
    // it waits, once per change.
    let mut said: Option<String> = None;
    let mut view = client.task(&accepted.id, wait.min(WAIT_SLICE_S)).await?;
    loop {
        let now_waiting = waiting_line(&view);
        if now_waiting != said {
            if let Some(line) = &now_waiting {
                eprintln!("{line}");
            }
            said = now_waiting;
        }
        if view.status.is_final() || tokio::time::Instant::now() >= deadline {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        view = client
            .task(&accepted.id, left.as_secs().clamp(1, WAIT_SLICE_S))
            .await?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("{}", summary_line(&view));
        if let Some(out) = &view.output {
            println!("{out}");
        }
        if let Some(e) = &view.error {
            eprintln!("error {}: {}", e.code, e.message);
        }
    }
    Ok(match view.status {
        openclaw_proto::TaskStatus::Succeeded => 0,
        s if s.is_final() => 1,
        _ => 2,
    })
}

/// Longest single long-poll of `submit --wait` (seconds), so waiting is reported as it changes.
pub const WAIT_SLICE_S: u64 = 5;

/// What a waiting task is held by, as one line (None when it is not held).
pub fn waiting_line(v: &TaskView) -> Option<String> {
    let reason = v.waiting_reason.as_deref()?;
    Some(match (reason, v.waiting_scope.as_deref()) {
        ("rate_limited", Some(scope)) => format!(
            "task {} {}: waiting for the rate limit of `{scope}` (see `openclaw-node queue`, GET /api/limits)",
            v.id,
            v.status.as_str()
        ),
        ("budget_paused", _) => format!(
            "task {} {}: waiting, the budget holds non-critical work of agent `{}` (see GET /api/budget)",
            v.id,
            v.status.as_str(),
            v.agent
        ),
        (other, scope) => format!(
            "task {} {}: waiting ({other}{})",
            v.id,
            v.status.as_str(),
            scope.map(|s| format!(", {s}")).unwrap_or_default()
        ),
    })
}

/// The one-line summary `submit --wait` prints: status, model and provider (`sim` marked as
/// the built-in simulator), tokens, cost, attempts, and what a still-running task waits for.
pub fn summary_line(v: &TaskView) -> String {
    let provider = match v.provider.as_deref() {
        Some("sim") => " via sim (built-in simulator, not a real model)".to_string(),
        Some(p) => format!(" via {p}"),
        None => String::new(),
    };
    let waiting = match (v.waiting_reason.as_deref(), v.waiting_scope.as_deref()) {
        (Some(r), Some(s)) => format!(", waiting: {r} on `{s}`"),
        (Some(r), None) => format!(", waiting: {r}"),
        _ => String::new(),
    };
    format!(
        "task {} {} (model {}{provider}, {} in / {} out tokens, ${:.6}, attempts {}{waiting})",
        v.id,
        v.status.as_str(),
        v.model.as_deref().unwrap_or("-"),
        v.tokens.input,
        v.tokens.output,
        v.cost_usd,
        v.attempts
    )
}

/// `openclaw-node cache stats|prune|clear`: talks to the node over HTTP (the node holds the
/// store's lock). Returns the exit code.
pub async fn cache(args: CacheArgs) -> anyhow::Result<i32> {
    use openclaw_proto::api::{CacheRemoved, CacheStats};
    let (method, path, opts) = match args.action {
        CacheAction::Stats(o) => (reqwest::Method::GET, "/api/cache", o),
        CacheAction::Prune(o) => (reqwest::Method::POST, "/api/cache/prune", o),
        CacheAction::Clear(o) => (reqwest::Method::DELETE, "/api/cache", o),
    };
    let stats = path == "/api/cache" && method == reqwest::Method::GET;
    let client = Client::new(&opts.target)?;
    let resp = client
        .req(method, path)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {}", client.base))?;
    if stats {
        let s: CacheStats = Client::read(resp).await?;
        if opts.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!("enabled     {}", s.enabled);
            println!("strategy    {}", s.active_strategy);
            println!("entries     {}", s.entries);
            println!(
                "size        {} / {} bytes ({:.1}%)",
                s.bytes,
                s.max_bytes,
                if s.max_bytes == 0 {
                    0.0
                } else {
                    100.0 * s.bytes as f64 / s.max_bytes as f64
                }
            );
            println!("ttl         {} s", s.ttl_seconds);
            println!(
                "lookups     {} hits, {} misses (hit ratio {:.3})",
                s.hits, s.misses, s.hit_ratio
            );
            let h = s.hits_by_strategy;
            println!(
                "hits by     exact {}, template {}, semantic {}",
                h.exact, h.template, h.semantic
            );
            if s.strategy == "semantic" {
                println!(
                    "semantic    {} entries in {} partitions; {} embedding calls ({} failed)",
                    s.semantic_entries,
                    s.semantic_partitions,
                    s.embedding_calls,
                    s.embedding_failures
                );
            }
            println!("dropped     {} evicted, {} expired", s.evictions, s.expired);
        }
    } else {
        let r: CacheRemoved = Client::read(resp).await?;
        if opts.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!("removed {} entries", r.removed);
        }
    }
    Ok(0)
}
