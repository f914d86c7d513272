//! Config hot reload: a watcher that notices the config file changed and swaps the node's
//! configuration ([`ConfigCell::set`]), and the same reload on demand (`POST /api/config/reload`).
//!
//! The watcher polls the file's mtime and length every [`WATCH_INTERVAL`] (no inotify
//! dependency; `config set` replaces the file atomically, so a reload never reads half a file).
//! On a change it loads the file the way start-up does (file + `OPENCLAW__` env, strict,
//! validated). A valid config replaces the old one at once: prices, routing rules, fallback,
//! limits, budgets, priorities, `server.workers` / `queue_max` are read through the [`ConfigCell`] per
//! decision, and so is `cache.knowledge_cache.enabled` (the knowledge module's watcher builds or
//! drops the indexes when it flips). An invalid one is logged with its path and reason and the
//! old config stays.
//! What is built once at start-up cannot change under a running node — a model's provider
//! (`provider`, `base_url`, `model`, `api_key_env`, models added or removed), the agent actors,
//! the listen address, auth, the audit writer, the request-size and in-flight bounds, the
//! supervisor's restart policy, sled's page cache, `knowledge_cache.preload_on_startup`, every
//! `cluster` and `channels` setting — so a change there is applied to the [`ConfigCell`] but
//! logged as a warning naming what needs a restart.
//!
//! Reloads are serialized by one lock, so the watcher and the endpoint never interleave.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::config::{self, Config, ConfigCell, ConfigError};

/// How often the watcher looks at the config file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The file a node was started from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// Named explicitly (`--config`): it must exist. The default `<data-dir>/openclaw.json` may be
    /// missing (built-in defaults).
    pub required: bool,
    /// The file's mtime and length when this was made; create it *before* loading the config,
    /// so an edit made while the node starts is still seen as a change.
    initial: Option<(SystemTime, u64)>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl ConfigSource {
    pub fn new(path: PathBuf, required: bool) -> ConfigSource {
        ConfigSource {
            initial: fingerprint(&path),
            path,
            required,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadReport {
    /// Top-level sections whose values changed (`model_routing`, `budget`, ...).
    pub changed: Vec<String>,
    /// Changes that take effect only after a restart, each naming what changed.
    pub restart_needed: Vec<String>,
}

/// Compare two configs: changed sections, and which changes need a restart.
pub fn diff(old: &Config, new: &Config) -> ReloadReport {
    let to_obj = |c: &Config| match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m,
        _ => Default::default(),
    };
    let (a, b) = (to_obj(old), to_obj(new));
    let mut changed: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();

    let mut restart = Vec::new();
    for (name, m) in &old.models {
        match new.models.get(name) {
            None => restart.push(format!("models.{name} removed")),
            Some(n)
                if n.provider != m.provider
                    || n.base_url != m.base_url
                    || n.model != m.model
                    || n.api_key_env != m.api_key_env =>
            {
                restart.push(format!(
                    "models.{name} provider/base_url/model/api_key_env changed"
                ))
            }
            _ => {}
        }
    }
    for name in new.models.keys().filter(|n| !old.models.contains_key(*n)) {
        restart.push(format!("models.{name} added (no provider until a restart)"));
    }
    for name in old.agents.keys().filter(|n| !new.agents.contains_key(*n)) {
        restart.push(format!("agents.{name} removed"));
    }
    for name in new.agents.keys().filter(|n| !old.agents.contains_key(*n)) {
        restart.push(format!("agents.{name} added"));
    }
    let (os, ns) = (&old.server, &new.server);
    for (key, differs) in [
        ("server.listen", os.listen != ns.listen),
        ("server.node_name", os.node_name != ns.node_name),
        ("server.max_body_mb", os.max_body_mb != ns.max_body_mb),
        (
            "server.max_in_flight_requests",
            os.max_in_flight_requests != ns.max_in_flight_requests,
        ),
        ("server.restart_max", os.restart_max != ns.restart_max),
        (
            "server.restart_window_seconds",
            os.restart_window_seconds != ns.restart_window_seconds,
        ),
        (
            "server.restart_backoff_ms",
            os.restart_backoff_ms != ns.restart_backoff_ms,
        ),
        (
            "server.store_cache_mb",
            os.store_cache_mb != ns.store_cache_mb,
        ),
        ("auth", old.auth != new.auth),
        ("audit", old.audit != new.audit),
        (
            "cache.knowledge_cache.preload_on_startup",
            old.cache.knowledge_cache.preload_on_startup
                != new.cache.knowledge_cache.preload_on_startup,
        ),
        ("cluster", old.cluster != new.cluster),
        ("channels", old.channels != new.channels),
    ] {
        if differs {
            restart.push(format!("{key} changed"));
        }
    }
    ReloadReport {
        changed,
        restart_needed: restart,
    }
}

/// Load the node's config file now and apply it if it is valid and different.
pub async fn reload_now(
    cfg: &ConfigCell,
    src: Option<&ConfigSource>,
) -> Result<ReloadReport, ConfigError> {
    let Some(src) = src else {
        return Ok(ReloadReport::default());
    };
    let _guard = src.lock.lock().await;
    let m = crate::metrics::metrics();
    let new = match config::load(Some(&src.path), src.required) {
        Ok(c) => c,
        Err(e) => {
            m.config_reloads_total.with_label_values(&["error"]).inc();
            tracing::error!(path = %src.path.display(), error = %e, "config reload failed; keeping the current config");
            return Err(e);
        }
    };
    let report = diff(&cfg.get(), &new);
    if report.changed.is_empty() {
        m.config_reloads_total
            .with_label_values(&["unchanged"])
            .inc();
        return Ok(report);
    }
    cfg.set(new);
    m.config_reloads_total.with_label_values(&["ok"]).inc();
    tracing::info!(path = %src.path.display(), changed = %report.changed.join(","), "config reloaded");
    if !report.restart_needed.is_empty() {
        tracing::warn!(
            needs_restart = %report.restart_needed.join("; "),
            "config reloaded, but these changes take effect only after a restart"
        );
    }
    Ok(report)
}

/// mtime and length of the file (None when it is missing).
fn fingerprint(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watch the config file until the node shuts down.
pub fn spawn_watcher(
    cfg: ConfigCell,
    src: Option<ConfigSource>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(src) = src else {
        return;
    };
    tokio::spawn(async move {
        let mut last = src.initial;
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let now = fingerprint(&src.path);
            if now == last {
                continue;
            }
            last = now;
            // Errors are logged (and counted) inside; the old config stays.
            let _ = reload_now(&cfg, Some(&src)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Config {
        config::from_value("t", v).unwrap()
    }

    #[test]
    fn diff_names_sections_and_restart_needs() {
        let base = json!({
            "models": {"fast": {"provider": "sim", "price": {"input": 1, "output": 1}},
                       "smart": {"provider": "sim", "price": {"input": 2, "output": 2}}},
            "model_routing": {"default_model": "fast"},
            "agents": {"main": {}}
        });
        let old = cfg(base.clone());
        assert_eq!(diff(&old, &old), ReloadReport::default());

        let mut v = base.clone();
        v["model_routing"]["default_model"] = json!("smart");
        v["models"]["smart"]["price"]["input"] = json!(3);
        v["server"] = json!({"workers": 3});
        let r = diff(&old, &cfg(v));
        assert_eq!(r.changed, ["model_routing", "models", "server"]);
        assert!(r.restart_needed.is_empty(), "{r:?}");

        let mut v = base.clone();
        v["models"]["fast"]["base_url"] = json!("http://127.0.0.1:1/v1");
        v["models"]["new"] = json!({"provider": "sim", "price": {"input": 1, "output": 1}});
        v["agents"] = json!({"ops": {}});
        v["server"] = json!({"max_in_flight_requests": 5, "listen": "127.0.0.1:3999"});
        v["cluster"] = json!({"heartbeat_ms": 400});
        v["cache"] = json!({"knowledge_cache": {"preload_on_startup": true}});
        let r = diff(&old, &cfg(v));
        let text = r.restart_needed.join("; ");
        for want in [
            "models.fast",
            "models.new added",
            "agents.main removed",
            "agents.ops added",
            "server.max_in_flight_requests",
            "server.listen",
            "cluster changed",
            "cache.knowledge_cache.preload_on_startup changed",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }
}
