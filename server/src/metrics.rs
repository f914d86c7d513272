//! Every Prometheus metric of the node, in one registry, rendered by `GET /metrics` (§18.6).
//!
//! The chapter's eight metrics keep the chapter's names (`monitoring/` dashboards and alert rules
//! use them as written); the rest are ours.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `openclaw_requests_total` | counter | `endpoint` (`tasks`, `chat`, `models`, …), `status` (`2xx`, `4xx`, `5xx`, …); probes not counted |
//! | `openclaw_request_duration_seconds` | histogram, 0.5 ms … 120 s | `endpoint`; probes not counted |
//! | `openclaw_probe_requests_total` | counter | `endpoint` (`health`, `ready`, `metrics`) |
//! | `openclaw_tokens_consumed_total` | counter | `model`, `direction` (`input`, `output`) |
//! | `openclaw_active_agents` | gauge | — agents running at least one task |
//! | `openclaw_queue_depth` | gauge | `priority` (`critical` … `background`); alerts use `sum(openclaw_queue_depth)` |
//! | `openclaw_cache_hit_ratio` | gauge | — hits / lookups since start |
//! | `openclaw_model_errors_total` | counter | `model`, `reason` (a provider error code) |
//! | `openclaw_memory_files_total` | gauge | — memory files across agent workspaces (the knowledge cache's indexed files while it is on; set by `knowledge`) |
//! | `openclaw_task_queue_wait_seconds` | histogram, 10 ms … 600 s | `priority` |
//! | `openclaw_tasks_total` | counter | `priority`, `status` (final task status) |
//! | `openclaw_preemptions_total` | counter | — |
//! | `openclaw_provider_latency_seconds` | histogram, 0.5 ms … 120 s | `model` |
//! | `openclaw_cost_usd_total` | counter | `model` |
//! | `openclaw_supervisor_restarts_total` | counter | `actor` (actor kind, not instance id) |
//! | `openclaw_callback_deliveries_total` | counter | `outcome` (`delivered`, `retried`, `failed`) |
//! | `openclaw_cache_requests_total` | counter | `result` (`hit`, `miss`) |
//! | `openclaw_cache_hits_total` | counter | `strategy` (`exact`, `template`, `semantic`): what found the hit |
//! | `openclaw_cache_embeddings_total` | counter | `result` (`ok`, `failed`): the semantic cache's own embedding calls (a failure is a miss) |
//! | `openclaw_cache_replication_total` | counter | `outcome`: cache entries replicated between cluster nodes — sender `sent` / `failed` (per entry and peer), `dropped_full` (the outbound queue at its bound); receiver `received` / `refused` (its own config refused it) |
//! | `openclaw_http_in_flight` | gauge | — |
//! | `openclaw_model_breaker_state` | gauge | `model`; 0 closed, 1 open, 2 half-open |
//! | `openclaw_fallbacks_total` | counter | `from`, `to` (configured models), `reason` (a provider error code or `circuit_open`) |
//! | `openclaw_rate_limit_waits_total` | counter | `model` (a configured model or `global`): grants that had to wait |
//! | `openclaw_rate_limit_rejections_total` | counter | `model`: acquisitions refused with `rate_limited` |
//! | `openclaw_rate_limit_wait_seconds` | histogram, 1 ms … 300 s | `model`: time from asking to grant |
//! | `openclaw_budget_used_ratio` | gauge | `scope` (`total` or `agent:<agent named in budget.limits.per_agent>`) |
//! | `openclaw_cluster_batch_commands` | histogram, 1 … 512 | — commands per Raft entry this node wrote |
//! | `openclaw_cluster_is_leader` | gauge | — 1 on the Raft leader |
//! | `openclaw_cluster_term` | gauge | — this node's Raft term |
//! | `openclaw_cluster_nodes_alive` | gauge | — nodes with a current liveness lease |
//! | `openclaw_cluster_tasks_moved_total` | counter | `reason` (`steal`, `failover`) |
//! | `openclaw_cluster_unknown_admissions_total` | counter | `result` (`accepted`, `refused`, `unknown`): admissions whose first commit outcome was unknown, by how they were answered |
//! | `openclaw_sessions_live` | gauge | — sessions stored (this node's store, or its replica in a cluster), read at each scrape |
//! | `openclaw_context_summary_calls_total` | counter | `status` (`ok`, `failed`): model calls that fold older messages into a session's summary |
//! | `openclaw_context_tokens_saved_total` | counter | `by` (`window`, `compression`): prompt tokens the context layer kept out of calls (the window's net of the summary sent instead) |
//! | `openclaw_process_heap_bytes` | gauge | `kind` (`allocated`, `active`, `resident`, `retained`, `metadata`): the allocator's own figures (jemalloc's `stats.*`), read every 5 s — `allocated` is what the program holds, `resident` what the allocator keeps in RAM for it; absent in a build without jemalloc |
//!
//! Probes (`/health`, `/ready`, `/metrics`: Prometheus's scrapes, Docker's health checks, load
//! balancers) are counted apart, in `openclaw_probe_requests_total`: the chapter's QPS panel
//! (`rate(openclaw_requests_total[5m])`) and HighLatency alert read the request metrics as
//! written, and on a quiet node probes would be most of what they show ([`is_probe`]).
//!
//! Series a dashboard or an alert reads exist from start-up, at zero (see [`Metrics::new`] and
//! [`Metrics::init_models`]): a `rate()` over them shows 0, not "no data".
//!
//! Invariant: labels are bounded. Model names come from the configuration (callers pass only
//! configured names), endpoints, reasons, outcomes and actor kinds are `&'static str` constants;
//! no task id, request id, agent input or other free text ever becomes a label value.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use openclaw_proto::Priority;

/// Buckets for request and provider latency: 0.5 ms (gateway overhead) … 120 s (a slow agent).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Buckets for queue wait, around the chapter's target maximum waits per level
/// (immediate, < 10 s, < 30 s, < 5 min, idle).
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// Endpoint labels of the probe routes, counted in `openclaw_probe_requests_total` only.
pub const PROBE_ENDPOINTS: [&str; 3] = ["health", "ready", "metrics"];

/// Endpoint labels whose request series exist from start-up (the API's main routes).
pub const MAIN_ENDPOINTS: [&str; 4] = ["tasks", "task", "chat", "models"];

/// Final task statuses (`openclaw_tasks_total`'s `status`).
pub const FINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// `reason` label values of `openclaw_cluster_tasks_moved_total`.
pub const MOVE_REASONS: [&str; 2] = ["steal", "failover"];

/// `result` label values of `openclaw_cluster_unknown_admissions_total`.
pub const UNKNOWN_ADMISSION_RESULTS: [&str; 3] = ["accepted", "refused", "unknown"];

/// `outcome` values of `openclaw_cache_replication_total`.
pub const CACHE_REPLICATION_OUTCOMES: [&str; 5] =
    ["sent", "failed", "dropped_full", "received", "refused"];

/// `status` label values of `openclaw_context_summary_calls_total`.
pub const SUMMARY_STATUSES: [&str; 2] = ["ok", "failed"];

/// Whether an endpoint label is a probe's (health check, readiness, scrape).
pub fn is_probe(endpoint: &str) -> bool {
    PROBE_ENDPOINTS.contains(&endpoint)
}

/// `direction` label values of `openclaw_tokens_consumed_total`.
pub const DIRECTION_INPUT: &str = "input";
pub const DIRECTION_OUTPUT: &str = "output";

/// The node's metrics. Get the one instance with [`metrics()`].
pub struct Metrics {
    registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub probe_requests_total: IntCounterVec,
    pub tokens_consumed_total: IntCounterVec,
    pub active_agents: IntGauge,
    pub queue_depth: IntGaugeVec,
    pub cache_hit_ratio: Gauge,
    pub model_errors_total: IntCounterVec,
    pub memory_files_total: IntGauge,
    pub task_queue_wait_seconds: HistogramVec,
    pub tasks_total: IntCounterVec,
    pub preemptions_total: IntCounter,
    pub provider_latency_seconds: HistogramVec,
    pub cost_usd_total: prometheus::CounterVec,
    pub supervisor_restarts_total: IntCounterVec,
    pub callback_deliveries_total: IntCounterVec,
    pub cache_requests_total: IntCounterVec,
    pub cache_hits_total: IntCounterVec,
    pub cache_embeddings_total: IntCounterVec,
    pub cache_replication_total: IntCounterVec,
    pub http_in_flight: IntGauge,
    pub model_breaker_state: IntGaugeVec,
    pub fallbacks_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub rate_limit_waits_total: IntCounterVec,
    pub rate_limit_rejections_total: IntCounterVec,
    pub rate_limit_wait_seconds: HistogramVec,
    pub budget_used_ratio: prometheus::GaugeVec,
    pub cluster_batch_size: prometheus::Histogram,
    pub cluster_is_leader: IntGauge,
    pub cluster_term: IntGauge,
    pub cluster_nodes_alive: IntGauge,
    pub cluster_tasks_moved_total: IntCounterVec,
    pub cluster_unknown_admissions_total: IntCounterVec,
    pub sessions_live: IntGauge,
    pub process_heap_bytes: IntGaugeVec,
    pub context_summary_calls_total: IntCounterVec,
    pub context_tokens_saved_total: IntCounterVec,
}

/// `by` label values of `openclaw_context_tokens_saved_total`.
pub const SAVED_BY: [&str; 2] = ["window", "compression"];

/// Buckets for rate-limit waits: none (1 ms) … `rate_limiting.max_wait_ms`'s default (300 s).
pub const RATE_LIMIT_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The text exposition format of every metric, for `GET /metrics`.
pub fn render() -> String {
    metrics().render()
}

/// `"2xx"`, `"4xx"`, … for an HTTP status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

// The definitions below are constants of this file; registering them can only fail on a
// programming error (a bad name or a duplicate), which `every_metric_renders` catches.
#[allow(clippy::expect_used)]
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric definitions are valid and unique");
    m
}

#[allow(clippy::expect_used)]
fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition"),
    )
}

#[allow(clippy::expect_used)]
fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        r,
        HistogramVec::new(opts, labels).expect("valid histogram definition"),
    )
}

#[allow(clippy::expect_used)]
fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        r,
        IntGauge::new(name, help).expect("valid gauge definition"),
    )
}

impl Metrics {
    #[allow(clippy::expect_used)]
    fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            requests_total: counter_vec(
                &r,
                "openclaw_requests_total",
                "HTTP requests served, by endpoint and status class (probes not counted).",
                &["endpoint", "status"],
            ),
            request_duration_seconds: histogram_vec(
                &r,
                "openclaw_request_duration_seconds",
                "HTTP request handling time in seconds, by endpoint (probes not counted).",
                &["endpoint"],
                LATENCY_BUCKETS,
            ),
            probe_requests_total: counter_vec(
                &r,
                "openclaw_probe_requests_total",
                "Probe requests (/health, /ready, /metrics), by endpoint.",
                &["endpoint"],
            ),
            tokens_consumed_total: counter_vec(
                &r,
                "openclaw_tokens_consumed_total",
                "Tokens consumed by model calls, by model and direction (input, output).",
                &["model", "direction"],
            ),
            active_agents: int_gauge(
                &r,
                "openclaw_active_agents",
                "Agents currently running at least one task.",
            ),
            queue_depth: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "openclaw_queue_depth",
                        "Tasks waiting in this node's queue, by priority level.",
                    ),
                    &["priority"],
                )
                .expect("valid gauge definition"),
            ),
            cache_hit_ratio: register(
                &r,
                Gauge::new(
                    "openclaw_cache_hit_ratio",
                    "Request cache hits / lookups since the node started.",
                )
                .expect("valid gauge definition"),
            ),
            model_errors_total: counter_vec(
                &r,
                "openclaw_model_errors_total",
                "Failed model calls, by model and reason.",
                &["model", "reason"],
            ),
            memory_files_total: int_gauge(
                &r,
                "openclaw_memory_files_total",
                "Memory files (MEMORY.md and memory/*.md) across agent workspaces.",
            ),
            task_queue_wait_seconds: histogram_vec(
                &r,
                "openclaw_task_queue_wait_seconds",
                "Time from submission to start of a task, by priority.",
                &["priority"],
                QUEUE_WAIT_BUCKETS,
            ),
            tasks_total: counter_vec(
                &r,
                "openclaw_tasks_total",
                "Tasks finished, by priority and final status.",
                &["priority", "status"],
            ),
            preemptions_total: register(
                &r,
                IntCounter::new(
                    "openclaw_preemptions_total",
                    "Running tasks stopped and requeued for a more urgent one.",
                )
                .expect("valid counter definition"),
            ),
            provider_latency_seconds: histogram_vec(
                &r,
                "openclaw_provider_latency_seconds",
                "Model provider call time in seconds, by model.",
                &["model"],
                LATENCY_BUCKETS,
            ),
            cost_usd_total: register(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "openclaw_cost_usd_total",
                        "Cost of model calls in USD, by model.",
                    ),
                    &["model"],
                )
                .expect("valid counter definition"),
            ),
            supervisor_restarts_total: counter_vec(
                &r,
                "openclaw_supervisor_restarts_total",
                "Actors restarted by the supervisor, by actor kind.",
                &["actor"],
            ),
            callback_deliveries_total: counter_vec(
                &r,
                "openclaw_callback_deliveries_total",
                "Callback delivery attempts, by outcome.",
                &["outcome"],
            ),
            cache_requests_total: counter_vec(
                &r,
                "openclaw_cache_requests_total",
                "Request cache lookups, by result (hit, miss).",
                &["result"],
            ),
            cache_hits_total: counter_vec(
                &r,
                "openclaw_cache_hits_total",
                "Request cache hits, by the strategy that found them (exact, template, semantic).",
                &["strategy"],
            ),
            cache_embeddings_total: counter_vec(
                &r,
                "openclaw_cache_embeddings_total",
                "Embedding calls made by the semantic request cache, by result (ok, failed).",
                &["result"],
            ),
            cache_replication_total: counter_vec(
                &r,
                "openclaw_cache_replication_total",
                "Request cache entries replicated between cluster nodes, by outcome (sent, \
                 failed, dropped_full on the sender; received, refused on the receiver).",
                &["outcome"],
            ),
            http_in_flight: int_gauge(
                &r,
                "openclaw_http_in_flight",
                "HTTP requests being served right now.",
            ),
            model_breaker_state: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "openclaw_model_breaker_state",
                        "Circuit breaker per model: 0 closed, 1 open, 2 half-open.",
                    ),
                    &["model"],
                )
                .expect("valid gauge definition"),
            ),
            fallbacks_total: counter_vec(
                &r,
                "openclaw_fallbacks_total",
                "Calls moved to the next model of the fallback chain, by from, to and reason.",
                &["from", "to", "reason"],
            ),
            config_reloads_total: counter_vec(
                &r,
                "openclaw_config_reloads_total",
                "Config reloads (file watcher and POST /api/config/reload), by result (ok, unchanged, error).",
                &["result"],
            ),
            rate_limit_waits_total: counter_vec(
                &r,
                "openclaw_rate_limit_waits_total",
                "Rate-limit grants that had to wait, by scope (model or global).",
                &["model"],
            ),
            rate_limit_rejections_total: counter_vec(
                &r,
                "openclaw_rate_limit_rejections_total",
                "Rate-limit acquisitions refused (wait beyond the deadline or too many waiters), by scope.",
                &["model"],
            ),
            rate_limit_wait_seconds: histogram_vec(
                &r,
                "openclaw_rate_limit_wait_seconds",
                "Time from asking a rate limiter to its grant, by scope (model or global).",
                &["model"],
                RATE_LIMIT_WAIT_BUCKETS,
            ),
            budget_used_ratio: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "openclaw_budget_used_ratio",
                        "Settled spend of the current budget period over its limit, per scope.",
                    ),
                    &["scope"],
                )
                .expect("valid gauge definition"),
            ),
            cluster_batch_size: register(
                &r,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "openclaw_cluster_batch_commands",
                        "Commands carried by one Raft entry written by this node.",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
                )
                .expect("valid histogram definition"),
            ),
            cluster_is_leader: int_gauge(
                &r,
                "openclaw_cluster_is_leader",
                "1 while this node is the Raft leader.",
            ),
            cluster_term: int_gauge(&r, "openclaw_cluster_term", "This node's current Raft term."),
            cluster_nodes_alive: int_gauge(
                &r,
                "openclaw_cluster_nodes_alive",
                "Nodes whose liveness lease is current, as this node's replica sees it.",
            ),
            cluster_tasks_moved_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "openclaw_cluster_tasks_moved_total",
                        "Tasks this node's proposals moved between nodes (steal, failover).",
                    ),
                    &["reason"],
                )
                .expect("valid counter definition"),
            ),
            cluster_unknown_admissions_total: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "openclaw_cluster_unknown_admissions_total",
                        "Admissions whose first commit outcome was unknown, by their answer \
                         (accepted: found committed; refused: surely not; unknown: gave up).",
                    ),
                    &["result"],
                )
                .expect("valid counter definition"),
            ),
            sessions_live: int_gauge(
                &r,
                "openclaw_sessions_live",
                "Sessions stored (this node's store, or its replica of the cluster's).",
            ),
            process_heap_bytes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "openclaw_process_heap_bytes",
                        "The allocator's figures for this process, by kind (allocated, active, \
                         resident, retained, metadata).",
                    ),
                    &["kind"],
                )
                .expect("valid gauge definition"),
            ),
            context_summary_calls_total: counter_vec(
                &r,
                "openclaw_context_summary_calls_total",
                "Summary calls folding a session's older messages into its running summary, by \
                 status (ok, failed).",
                &["status"],
            ),
            context_tokens_saved_total: counter_vec(
                &r,
                "openclaw_context_tokens_saved_total",
                "Prompt tokens the context layer did not send, by what cut them (window: \
                 messages that left the sliding window, net of the summary sent instead; \
                 compression: condensed messages).",
                &["by"],
            ),
            registry: r,
        };
        // Series that always exist, so dashboards and `rate()` see zeros instead of nothing.
        for endpoint in MAIN_ENDPOINTS {
            for status in ["2xx", "4xx", "5xx"] {
                m.requests_total.with_label_values(&[endpoint, status]);
            }
            m.request_duration_seconds.with_label_values(&[endpoint]);
        }
        for endpoint in PROBE_ENDPOINTS {
            m.probe_requests_total.with_label_values(&[endpoint]);
        }
        for p in Priority::ALL {
            m.queue_depth.with_label_values(&[p.as_str()]).set(0);
            m.task_queue_wait_seconds.with_label_values(&[p.as_str()]);
            for status in FINAL_STATUSES {
                m.tasks_total.with_label_values(&[p.as_str(), status]);
            }
        }
        for reason in MOVE_REASONS {
            m.cluster_tasks_moved_total.with_label_values(&[reason]);
        }
        for result in UNKNOWN_ADMISSION_RESULTS {
            m.cluster_unknown_admissions_total
                .with_label_values(&[result]);
        }
        for status in SUMMARY_STATUSES {
            m.context_summary_calls_total.with_label_values(&[status]);
        }
        for by in SAVED_BY {
            m.context_tokens_saved_total.with_label_values(&[by]);
        }
        for result in ["hit", "miss"] {
            m.cache_requests_total.with_label_values(&[result]);
        }
        for strategy in ["exact", "template", "semantic"] {
            m.cache_hits_total.with_label_values(&[strategy]);
        }
        for result in ["ok", "failed"] {
            m.cache_embeddings_total.with_label_values(&[result]);
        }
        for outcome in CACHE_REPLICATION_OUTCOMES {
            m.cache_replication_total.with_label_values(&[outcome]);
        }
        for result in ["ok", "unchanged", "error"] {
            m.config_reloads_total.with_label_values(&[result]);
        }
        m
    }

    /// Create the per-model series at zero (call once with the configured model names and the
    /// providers' error codes), so a model that has not been used yet shows 0 rather than no data.
    pub fn init_models<'a>(&self, models: impl IntoIterator<Item = &'a str>, error_codes: &[&str]) {
        for model in models {
            for direction in [DIRECTION_INPUT, DIRECTION_OUTPUT] {
                self.tokens_consumed_total
                    .with_label_values(&[model, direction]);
            }
            self.cost_usd_total.with_label_values(&[model]);
            self.model_breaker_state.with_label_values(&[model]).set(0);
            for reason in error_codes {
                self.model_errors_total.with_label_values(&[model, reason]);
            }
        }
    }

    /// One HTTP request: its endpoint (a constant), status code and duration. A probe
    /// ([`is_probe`]) is only counted in `openclaw_probe_requests_total`.
    pub fn observe_request(&self, endpoint: &'static str, status: u16, seconds: f64) {
        if is_probe(endpoint) {
            self.probe_requests_total
                .with_label_values(&[endpoint])
                .inc();
            return;
        }
        self.requests_total
            .with_label_values(&[endpoint, status_class(status)])
            .inc();
        self.request_duration_seconds
            .with_label_values(&[endpoint])
            .observe(seconds);
    }

    /// One successful model call. `model` must be a configured model name.
    pub fn observe_model_call(
        &self,
        model: &str,
        input: u64,
        output: u64,
        cost_usd: f64,
        secs: f64,
    ) {
        self.tokens_consumed_total
            .with_label_values(&[model, DIRECTION_INPUT])
            .inc_by(input);
        self.tokens_consumed_total
            .with_label_values(&[model, DIRECTION_OUTPUT])
            .inc_by(output);
        let cost = self.cost_usd_total.with_label_values(&[model]);
        if cost_usd.is_finite() && cost_usd > 0.0 {
            cost.inc_by(cost_usd);
        }
        self.provider_latency_seconds
            .with_label_values(&[model])
            .observe(secs);
    }

    /// One failed model call. `model` must be a configured name, `reason` a stable error code.
    pub fn observe_model_error(&self, model: &str, reason: &'static str) {
        self.model_errors_total
            .with_label_values(&[model, reason])
            .inc();
    }

    /// One request-cache lookup; also refreshes `openclaw_cache_hit_ratio`.
    pub fn observe_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_requests_total.with_label_values(&[result]).inc();
        let hits = self.cache_requests_total.with_label_values(&["hit"]).get();
        let misses = self.cache_requests_total.with_label_values(&["miss"]).get();
        let lookups = hits + misses;
        if lookups > 0 {
            self.cache_hit_ratio.set(hits as f64 / lookups as f64);
        }
    }

    /// A request-cache hit found by `strategy` (`exact`, `template`, `semantic`).
    pub fn observe_cache_hit_strategy(&self, strategy: &str) {
        self.cache_hits_total.with_label_values(&[strategy]).inc();
    }

    /// One embedding call of the semantic request cache.
    pub fn observe_cache_embedding(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.cache_embeddings_total
            .with_label_values(&[result])
            .inc();
    }

    /// `n` cache entries replicated with `outcome` (one of [`CACHE_REPLICATION_OUTCOMES`]).
    pub fn observe_cache_replication(&self, outcome: &str, n: u64) {
        self.cache_replication_total
            .with_label_values(&[outcome])
            .inc_by(n);
    }

    /// The queue depth of one level.
    pub fn set_queue_depth(&self, priority: Priority, depth: usize) {
        self.queue_depth
            .with_label_values(&[priority.as_str()])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// One of the allocator's figures (`kind` is one of a fixed set, see the table above).
    pub fn set_heap_bytes(&self, kind: &'static str, bytes: u64) {
        self.process_heap_bytes
            .with_label_values(&[kind])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sessions stored now.
    pub fn set_sessions_live(&self, n: u64) {
        self.sessions_live.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One summary call (the context layer folding older messages into a session's summary).
    pub fn observe_summary_call(&self, ok: bool) {
        let status = if ok { "ok" } else { "failed" };
        self.context_summary_calls_total
            .with_label_values(&[status])
            .inc();
    }

    /// Prompt tokens the context layer kept out of a call; `by` is one of [`SAVED_BY`] (any
    /// other value is counted as `window`, so the label stays bounded).
    pub fn add_context_tokens_saved(&self, by: &'static str, tokens: u64) {
        let by = if SAVED_BY.contains(&by) { by } else { "window" };
        self.context_tokens_saved_total
            .with_label_values(&[by])
            .inc_by(tokens);
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The chapter's metric names (§18.6), which `monitoring/` relies on.
    const CHAPTER_METRICS: [&str; 8] = [
        "openclaw_requests_total",
        "openclaw_request_duration_seconds",
        "openclaw_tokens_consumed_total",
        "openclaw_active_agents",
        "openclaw_queue_depth",
        "openclaw_cache_hit_ratio",
        "openclaw_model_errors_total",
        "openclaw_memory_files_total",
    ];

    const OUR_METRICS: [&str; 13] = [
        "openclaw_cache_hits_total",
        "openclaw_cache_replication_total",
        "openclaw_cache_embeddings_total",
        "openclaw_model_breaker_state",
        "openclaw_task_queue_wait_seconds",
        "openclaw_tasks_total",
        "openclaw_preemptions_total",
        "openclaw_provider_latency_seconds",
        "openclaw_cost_usd_total",
        "openclaw_supervisor_restarts_total",
        "openclaw_callback_deliveries_total",
        "openclaw_cache_requests_total",
        "openclaw_http_in_flight",
    ];

    #[test]
    fn every_metric_renders() {
        let m = metrics();
        // Vec metrics appear once a series exists.
        m.init_models(["gpt-4o-mini"], &crate::calls::providers::ERROR_CODES);
        m.observe_request("tasks", 202, 0.002);
        m.observe_model_call("gpt-4o-mini", 120, 30, 0.0001, 0.8);
        m.observe_model_error("gpt-4o-mini", "timeout");
        m.task_queue_wait_seconds
            .with_label_values(&["normal"])
            .observe(0.5);
        m.tasks_total
            .with_label_values(&["normal", "succeeded"])
            .inc();
        m.supervisor_restarts_total
            .with_label_values(&["scheduler"])
            .inc();
        m.callback_deliveries_total
            .with_label_values(&["delivered"])
            .inc();
        m.preemptions_total.inc();
        m.set_queue_depth(Priority::High, 7);

        let text = render();
        for name in CHAPTER_METRICS.iter().chain(OUR_METRICS.iter()) {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
        assert!(text.contains(
            "openclaw_request_duration_seconds_bucket{endpoint=\"tasks\",le=\"0.0005\"}"
        ));
        assert!(text
            .contains("openclaw_request_duration_seconds_bucket{endpoint=\"tasks\",le=\"120\"}"));
        assert!(text.contains("openclaw_requests_total{endpoint=\"tasks\",status=\"2xx\"}"));
        assert!(text.contains("openclaw_queue_depth{priority=\"high\"} 7"));
        for p in Priority::ALL {
            assert!(text.contains(&format!("openclaw_queue_depth{{priority=\"{p}\"}}")));
        }
        assert!(text
            .contains("openclaw_tokens_consumed_total{direction=\"input\",model=\"gpt-4o-mini\"}"));
        assert!(text
            .contains("openclaw_task_queue_wait_seconds_bucket{priority=\"normal\",le=\"600\"}"));
    }

    #[test]
    fn probes_are_counted_apart() {
        // A private instance: the global one is shared with other tests.
        let m = Metrics::new();
        let requests = |endpoint: &str| {
            ["2xx", "4xx", "5xx"]
                .iter()
                .map(|s| m.requests_total.with_label_values(&[endpoint, s]).get())
                .sum::<u64>()
        };
        // (endpoint, is a probe)
        let cases = [
            ("health", true),
            ("ready", true),
            ("metrics", true),
            ("tasks", false),
            ("chat", false),
            ("other", false),
        ];
        for (endpoint, probe) in cases {
            assert_eq!(is_probe(endpoint), probe, "{endpoint}");
            m.observe_request(endpoint, 200, 0.001);
            let probes = m.probe_requests_total.with_label_values(&[endpoint]).get();
            let durations = m
                .request_duration_seconds
                .with_label_values(&[endpoint])
                .get_sample_count();
            // (probe counter, request counter, duration samples)
            let want = if probe { (1, 0, 0) } else { (0, 1, 1) };
            assert_eq!((probes, requests(endpoint), durations), want, "{endpoint}");
        }
    }

    #[test]
    fn read_series_exist_at_zero_from_start() {
        let text = Metrics::new().render();
        let mut want: Vec<String> = Vec::new();
        for e in MAIN_ENDPOINTS {
            want.push(format!(
                "openclaw_requests_total{{endpoint=\"{e}\",status=\"2xx\"}} 0"
            ));
            want.push(format!(
                "openclaw_request_duration_seconds_count{{endpoint=\"{e}\"}} 0"
            ));
        }
        for e in PROBE_ENDPOINTS {
            want.push(format!(
                "openclaw_probe_requests_total{{endpoint=\"{e}\"}} 0"
            ));
        }
        for p in Priority::ALL {
            want.push(format!(
                "openclaw_task_queue_wait_seconds_count{{priority=\"{p}\"}} 0"
            ));
            want.push(format!(
                "openclaw_tasks_total{{priority=\"{p}\",status=\"failed\"}} 0"
            ));
        }
        for r in MOVE_REASONS {
            want.push(format!(
                "openclaw_cluster_tasks_moved_total{{reason=\"{r}\"}} 0"
            ));
        }
        for r in UNKNOWN_ADMISSION_RESULTS {
            want.push(format!(
                "openclaw_cluster_unknown_admissions_total{{result=\"{r}\"}} 0"
            ));
        }
        for r in SUMMARY_STATUSES {
            want.push(format!(
                "openclaw_context_summary_calls_total{{status=\"{r}\"}} 0"
            ));
        }
        for by in SAVED_BY {
            want.push(format!(
                "openclaw_context_tokens_saved_total{{by=\"{by}\"}} 0"
            ));
        }
        want.push("openclaw_sessions_live 0".into());
        want.push("openclaw_cluster_nodes_alive 0".into());
        want.push("openclaw_cluster_is_leader 0".into());
        for line in want {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn session_metrics_count_with_bounded_labels() {
        // A private instance: the global one is shared with other tests.
        let m = Metrics::new();
        m.set_sessions_live(3);
        m.observe_summary_call(true);
        m.observe_summary_call(false);
        m.observe_summary_call(true);
        m.add_context_tokens_saved("window", 100);
        m.add_context_tokens_saved("compression", 40);
        m.add_context_tokens_saved("made-up", 1);
        assert_eq!(m.sessions_live.get(), 3);
        let calls = |r: &str| m.context_summary_calls_total.with_label_values(&[r]).get();
        assert_eq!((calls("ok"), calls("failed")), (2, 1));
        let saved = |b: &str| m.context_tokens_saved_total.with_label_values(&[b]).get();
        assert_eq!((saved("window"), saved("compression")), (101, 40));
        let text = m.render();
        assert!(!text.contains("made-up"), "{text}");
    }

    #[test]
    fn status_classes() {
        let cases = [
            (200, "2xx"),
            (202, "2xx"),
            (304, "3xx"),
            (404, "4xx"),
            (429, "4xx"),
            (503, "5xx"),
            (99, "other"),
        ];
        for (code, want) in cases {
            assert_eq!(status_class(code), want, "{code}");
        }
    }

    #[test]
    fn cache_ratio_follows_lookups() {
        // A private instance: the global one is shared with other tests.
        let m = Metrics::new();
        m.observe_cache(true);
        m.observe_cache(false);
        m.observe_cache(false);
        m.observe_cache(true);
        assert!((m.cache_hit_ratio.get() - 0.5).abs() < 1e-9);
        m.observe_cache(true);
        assert!((m.cache_hit_ratio.get() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn buckets_are_increasing() {
        for b in [LATENCY_BUCKETS, QUEUE_WAIT_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        }
    }
}
