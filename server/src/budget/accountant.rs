//! The budget accountant actor (§18.7): owns the current period's budget counters per scope
//! (`total`, `agent:<name>`), the reservations in flight, the fired-threshold marks and the
//! resulting gate (paused / downgraded). Decisions are the pure functions of `crate::budget::rules`.
//!
//! - Workers `Reserve` before a model call and `Settle` (or `Release`) after it. A refused
//!   reservation closes the gate for that scope, so the scheduler holds non-critical work
//!   instead of spinning.
//! - `Tick` (every second): period rollover (new counters, fired marks cleared, unpaused),
//!   re-evaluation after a config change (limits raised → unpause), persistence flush.
//! - State is persisted in the store's `budget` tree (written at the next tick after a change,
//!   so at most a second of spend can be lost in a crash; on disk within sled's 500 ms flush
//!   interval, and at shutdown) and reloaded at (re)start, so a restart neither
//!   forgets spend nor re-fires a threshold. Reservations in flight are memory only: a crash
//!   releases them (their calls settle into nothing).
//! - Notifications (webhooks) are POSTed by spawned tasks with retries, never in the handler.
//!   One notification is sent for each threshold that fires (its `action` is in the message).
//!   They are bounded by configuration: each (scope, threshold) fires at most once per period.
//!
//! The gate lives in `Runtime::budget` (not in actor state) so the scheduler and the API read it
//! without a message; the actor is its only writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use openclaw_proto::ops::{BudgetScopeView, BudgetView};

use crate::budget::notify::{send_notice, Notice};
use crate::budget::rules::{self as budget, Counters, Estimate, Exhausted, Limits, ScopeState};
use crate::budget::SharedBudget;
use crate::config::{BudgetAction, Config, ConfigCell};
use crate::metrics::metrics;
use crate::storage::{BudgetRecord, BudgetScopeRecord, Store};
use crate::util::now_ms;

/// How often the accountant checks the period, re-evaluates the gate and flushes.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// Id of a reservation (0 = none: budgets disabled).
pub type ReservationId = u64;

pub enum AccountantMsg {
    Reserve {
        agent: String,
        critical: bool,
        est_tokens: u64,
        est_cost: f64,
        reply: RpcReplyPort<Result<ReservationId, Exhausted>>,
    },
    Settle {
        id: ReservationId,
        tokens: u64,
        cost: f64,
    },
    Release {
        id: ReservationId,
    },
    Snapshot(RpcReplyPort<BudgetView>),
    Tick,
    /// The cluster refused this node a budget slice for `scope`: hold non-critical work.
    ClusterRefused {
        scope: String,
        est: Estimate,
    },
}
impl ractor::Message for AccountantMsg {}

/// What the scheduler, routing and the API need to know, written only by the accountant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateState {
    pub paused_all: bool,
    pub paused_agents: BTreeSet<String>,
    pub downgrade_all: bool,
    pub downgrade_agents: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct BudgetGate {
    inner: RwLock<GateState>,
}

impl BudgetGate {
    fn set(&self, g: GateState) -> GateState {
        std::mem::replace(
            &mut *self.inner.write().unwrap_or_else(|p| p.into_inner()),
            g,
        )
    }
    /// Non-critical work of `agent` must wait.
    pub fn paused_for(&self, agent: &str) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.paused_all || g.paused_agents.contains(agent)
    }
    /// Some scope is paused.
    pub fn any_paused(&self) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.paused_all || !g.paused_agents.is_empty()
    }
    /// Work of `agent` goes to the cheapest model.
    pub fn downgrade_for(&self, agent: &str) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.downgrade_all || g.downgrade_agents.contains(agent)
    }
}

struct Reservation {
    scopes: Vec<String>,
    est: Estimate,
}

/// What the accountant needs: its config section, the store for its counters, the node's name
/// and HTTP client (notices), the gate it writes, the cluster's shared budget (cluster mode),
/// and what to call when held work may start again (the scheduler's wake-up).
#[derive(Clone)]
pub struct AccountantArgs {
    pub cfg: ConfigCell,
    pub store: Store,
    pub node: String,
    pub http: reqwest::Client,
    pub gate: Arc<BudgetGate>,
    pub shared: Option<Arc<dyn SharedBudget>>,
    pub on_open: Arc<dyn Fn() + Send + Sync>,
}

pub struct AccountantState {
    args: AccountantArgs,
    period: String,
    counters: BTreeMap<String, Counters>,
    fired: BTreeMap<String, Vec<u32>>,
    /// Scopes that refused non-critical work, with the smallest refused estimate: reopened when
    /// that estimate fits again (or at rollover, or when the limits change).
    refused: BTreeMap<String, Estimate>,
    /// Scopes the cluster refused a slice for: held until the next tick's sync with the
    /// replicated counters (local counters may be a second stale), so refused work is retried
    /// at most once a second instead of spinning.
    cluster_refused: BTreeSet<String>,
    /// Cluster mode: per scope, the slices other nodes hold (tokens, cost) as of the last sync.
    /// Part of `counters[..].reserved_*` (so admission is exact), but not this node's
    /// reservations: the view shows them apart.
    others: BTreeMap<String, (u64, f64)>,
    /// Cluster mode: per scope, the slices of nodes that are down (unsettled estimates), as of
    /// the last sync.
    dead: BTreeMap<String, Vec<super::DeadLease>>,
    reservations: HashMap<ReservationId, Reservation>,
    next_id: ReservationId,
    dirty: bool,
    limits_seen: Vec<(String, Limits)>,
}

#[derive(Clone)]
pub struct Accountant;

/// The current period key (the one place the clock is read, local date).
pub fn current_period(cfg: &Config) -> String {
    budget::period_key(cfg.budget.period, chrono::Local::now().date_naive())
}

impl Actor for Accountant {
    type Msg = AccountantMsg;
    type State = AccountantState;
    type Arguments = AccountantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AccountantArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cfg = args.cfg.get();
        let period = current_period(&cfg);
        let mut state = AccountantState {
            args: args.clone(),
            period: period.clone(),
            counters: BTreeMap::new(),
            fired: BTreeMap::new(),
            refused: BTreeMap::new(),
            cluster_refused: BTreeSet::new(),
            others: BTreeMap::new(),
            dead: BTreeMap::new(),
            reservations: HashMap::new(),
            next_id: 1,
            dirty: false,
            limits_seen: budget::all_scopes(&cfg.budget),
        };
        load(&mut state);
        myself.send_interval(TICK_EVERY, || AccountantMsg::Tick);
        recompute(&mut state);
        tracing::info!(%period, "budget accountant started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        persist(state);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountantMsg::Reserve {
                agent,
                critical,
                est_tokens,
                est_cost,
                reply,
            } => {
                let r = on_reserve(state, &agent, critical, est_tokens, est_cost);
                let _ = reply.send(r);
            }
            AccountantMsg::Settle { id, tokens, cost } => {
                on_settle(
                    state,
                    id,
                    Some(Estimate {
                        tokens,
                        cost_usd: cost,
                    }),
                );
            }
            AccountantMsg::Release { id } => on_settle(state, id, None),
            AccountantMsg::Snapshot(reply) => {
                let _ = reply.send(view(state));
            }
            AccountantMsg::Tick => on_tick(state),
            AccountantMsg::ClusterRefused { scope, est } => {
                state.cluster_refused.insert(scope.clone());
                note_refused(state, scope, est);
                recompute(state);
            }
        }
        Ok(())
    }
}

fn load(state: &mut AccountantState) {
    match state.args.store.budget(&state.period) {
        Ok(Some(rec)) => {
            for (scope, s) in rec.scopes {
                state.counters.insert(
                    scope.clone(),
                    Counters {
                        tokens: s.tokens,
                        cost_usd: s.cost_usd,
                        ..Default::default()
                    },
                );
                state.fired.insert(scope, s.fired);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot read budget counters; starting from zero"),
    }
}

fn persist(state: &AccountantState) {
    let rec = BudgetRecord {
        period: state.period.clone(),
        scopes: state
            .counters
            .iter()
            .map(|(scope, c)| {
                (
                    scope.clone(),
                    BudgetScopeRecord {
                        tokens: c.tokens,
                        cost_usd: c.cost_usd,
                        fired: state.fired.get(scope).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect(),
    };
    if let Err(e) = state.args.store.put_budget(&rec) {
        tracing::error!(error = %e, "cannot store budget counters");
    }
}

fn on_reserve(
    state: &mut AccountantState,
    agent: &str,
    critical: bool,
    est_tokens: u64,
    est_cost: f64,
) -> Result<ReservationId, Exhausted> {
    let cfg = state.args.cfg.get();
    if !cfg.budget.enabled {
        return Ok(0);
    }
    let scopes = budget::scopes_for(&cfg.budget, agent);
    let est = Estimate {
        tokens: est_tokens,
        cost_usd: est_cost,
    };
    // A scope paused by its `pause_non_critical` action refuses non-critical work outright.
    if !critical {
        let acts = budget::thresholds(&cfg.budget);
        for (scope, limits) in &scopes {
            let c = state.counters.get(scope).copied().unwrap_or_default();
            let fired = state.fired.get(scope).map(Vec::as_slice).unwrap_or(&[]);
            if budget::action_active(
                c.used_ratio(limits),
                &acts,
                fired,
                BudgetAction::PauseNonCritical,
            ) {
                return Err(Exhausted {
                    scope: scope.clone(),
                });
            }
        }
    }
    match budget::reserve(&mut state.counters, &scopes, critical, &est) {
        Ok(()) => {
            let id = state.next_id;
            state.next_id += 1;
            state.reservations.insert(
                id,
                Reservation {
                    scopes: scopes.into_iter().map(|(s, _)| s).collect(),
                    est,
                },
            );
            Ok(id)
        }
        Err(e) => {
            if let Some(suppressed) = crate::throttled!(&e.scope) {
                tracing::info!(scope = %e.scope, est_tokens, suppressed, "budget reservation refused; non-critical work waits");
            }
            note_refused(state, e.scope.clone(), est);
            recompute(state);
            Err(e)
        }
    }
}

/// Remember that `scope` refused `est`: the scope reopens when the smallest refused estimate
/// (tokens and cost each) fits again.
fn note_refused(state: &mut AccountantState, scope: String, est: Estimate) {
    let r = state.refused.entry(scope).or_insert(est);
    r.tokens = r.tokens.min(est.tokens);
    r.cost_usd = r.cost_usd.min(est.cost_usd);
}

fn on_settle(state: &mut AccountantState, id: ReservationId, actual: Option<Estimate>) {
    let Some(res) = state.reservations.remove(&id) else {
        return;
    };
    let cfg = state.args.cfg.get();
    let before: BTreeMap<String, f64> = budget::all_scopes(&cfg.budget)
        .into_iter()
        .map(|(s, l)| {
            let r = state
                .counters
                .get(&s)
                .copied()
                .unwrap_or_default()
                .used_ratio(&l);
            (s, r)
        })
        .collect();
    budget::settle(&mut state.counters, &res.scopes, &res.est, actual.as_ref());
    if actual.is_some() {
        state.dirty = true;
        fire_thresholds(state, &cfg, &before);
    }
    recompute(state);
}

fn fire_thresholds(state: &mut AccountantState, cfg: &Config, before: &BTreeMap<String, f64>) {
    let acts = budget::thresholds(&cfg.budget);
    for (scope, limits) in budget::all_scopes(&cfg.budget) {
        if limits.is_unlimited() {
            continue;
        }
        let c = state.counters.get(&scope).copied().unwrap_or_default();
        let after = c.used_ratio(&limits);
        let fired = state.fired.entry(scope.clone()).or_default();
        let crossed = budget::thresholds_crossed(
            before.get(&scope).copied().unwrap_or(0.0),
            after,
            &acts,
            fired,
        );
        for (percent, action) in crossed {
            fired.push(percent);
            tracing::warn!(%scope, percent, action = ?action, period = %state.period, "budget threshold reached");
            let n = Notice {
                scope: scope.clone(),
                percent,
                action,
                period: state.period.clone(),
                counters: c,
                limits,
                node: state.args.node.clone(),
                at_ms: now_ms(),
                recipients: cfg.budget.notification.recipients.clone(),
            };
            match state.args.shared.clone() {
                // Once per period for the whole cluster: the node whose claim commits first
                // sends the notice.
                Some(shared) => {
                    let (http, cfg) = (state.args.http.clone(), state.args.cfg.clone());
                    tokio::spawn(async move {
                        match shared.claim_threshold(&n.period, &n.scope, n.percent).await {
                            Ok(true) => send_notice(&http, &cfg.get(), n),
                            Ok(false) => {
                                tracing::debug!(scope = %n.scope, percent = n.percent, "another node sends this threshold's notice")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "threshold claim not committed; notice not sent")
                            }
                        }
                    });
                }
                None => send_notice(&state.args.http, cfg, n),
            }
        }
    }
}

fn ratios(state: &AccountantState, cfg: &Config) -> BTreeMap<String, f64> {
    budget::all_scopes(&cfg.budget)
        .into_iter()
        .map(|(s, l)| {
            let r = state
                .counters
                .get(&s)
                .copied()
                .unwrap_or_default()
                .used_ratio(&l);
            (s, r)
        })
        .collect()
}

/// Cluster mode: the counters become the cluster's — spend from the replicated state, and as
/// "reserved" this node's reservations plus the slices other nodes hold (what they may still
/// spend). A reservation then fits here exactly when the cluster could lease it.
fn sync_from_cluster(state: &mut AccountantState) {
    let Some(shared) = state.args.shared.clone() else {
        return;
    };
    let counters = shared.counters(&state.period);
    state.dead = counters
        .iter()
        .filter(|s| !s.dead.is_empty())
        .map(|s| (s.scope.clone(), s.dead.clone()))
        .collect();
    let cluster: Vec<(String, u64, f64, u64, f64)> = counters
        .into_iter()
        .map(|s| {
            (
                s.scope,
                s.spent_tokens,
                s.spent_cost_usd,
                s.others_tokens,
                s.others_cost_usd,
            )
        })
        .collect();
    let mut local: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for r in state.reservations.values() {
        for s in &r.scopes {
            let e = local.entry(s.as_str()).or_default();
            e.0 += r.est.tokens;
            e.1 += r.est.cost_usd;
        }
    }
    let mut fresh: BTreeMap<String, Counters> = BTreeMap::new();
    state.others = cluster
        .iter()
        .map(|(scope, _, _, t, c)| (scope.clone(), (*t, *c)))
        .collect();
    for (scope, spent_t, spent_c, other_t, other_c) in cluster {
        let (lt, lc) = local.get(scope.as_str()).copied().unwrap_or_default();
        fresh.insert(
            scope,
            Counters {
                tokens: spent_t,
                cost_usd: spent_c,
                reserved_tokens: lt + other_t,
                reserved_cost: lc + other_c,
            },
        );
    }
    for (scope, (lt, lc)) in local {
        fresh.entry(scope.to_string()).or_insert(Counters {
            reserved_tokens: lt,
            reserved_cost: lc,
            ..Counters::default()
        });
    }
    state.counters = fresh;
}

fn on_tick(state: &mut AccountantState) {
    let cfg = state.args.cfg.get();
    let period = current_period(&cfg);
    if period != state.period {
        persist(state);
        tracing::info!(from = %state.period, to = %period, "budget period rolled over");
        state.period = period;
        // Reservations in flight carry over: they settle into the new period.
        let mut fresh: BTreeMap<String, Counters> = BTreeMap::new();
        for r in state.reservations.values() {
            for s in &r.scopes {
                let c = fresh.entry(s.clone()).or_default();
                c.reserved_tokens += r.est.tokens;
                c.reserved_cost += r.est.cost_usd;
            }
        }
        state.counters = fresh;
        state.others.clear();
        state.dead.clear();
        state.fired.clear();
        state.refused.clear();
        load(state);
        state.dirty = true;
    }
    if state.args.shared.is_some() {
        let before = ratios(state, &cfg);
        sync_from_cluster(state);
        state.cluster_refused.clear();
        fire_thresholds(state, &cfg, &before);
    }
    let limits = budget::all_scopes(&cfg.budget);
    if limits != state.limits_seen {
        tracing::info!("budget limits changed; re-evaluating");
        state.limits_seen = limits;
        state.refused.clear();
    }
    recompute(state);
    if state.dirty {
        state.dirty = false;
        // sled writes itself to disk every 500 ms (and the node flushes at shutdown), which
        // meets "at least every second". An extra `flush_async` here, concurrent with the
        // admissions' flushes, made admissions hang under load (see the commit message).
        persist(state);
    }
}

/// Recompute the gate and the gauges from the counters; wake the scheduler when work may start.
fn recompute(state: &mut AccountantState) {
    let cfg = state.args.cfg.get();
    // Refusals reopen when the smallest refused estimate fits again (spend settled lower than
    // reserved, or reservations released).
    let scopes = budget::all_scopes(&cfg.budget);
    let held = &state.cluster_refused;
    state.refused.retain(|scope, est| {
        let Some((_, l)) = scopes.iter().find(|(s, _)| s == scope) else {
            return false;
        };
        if held.contains(scope) {
            return true;
        }
        let c = state.counters.get(scope).copied().unwrap_or_default();
        !budget::fits(&c, l, est)
    });
    let acts = budget::thresholds(&cfg.budget);
    let mut gate = GateState::default();
    let m = metrics();
    for (scope, limits) in &scopes {
        let c = state.counters.get(scope).copied().unwrap_or_default();
        let ratio = c.used_ratio(limits);
        m.budget_used_ratio
            .with_label_values(&[scope.as_str()])
            .set(ratio);
        if !cfg.budget.enabled {
            continue;
        }
        let fired = state.fired.get(scope).map(Vec::as_slice).unwrap_or(&[]);
        let st = budget::scope_state(ratio, &acts, fired, state.refused.contains_key(scope));
        let down = budget::action_active(ratio, &acts, fired, BudgetAction::DowngradeModel);
        let agent = scope.strip_prefix("agent:");
        if st == ScopeState::Paused {
            match agent {
                Some(a) => drop(gate.paused_agents.insert(a.to_string())),
                None => gate.paused_all = true,
            }
        }
        if down {
            match agent {
                Some(a) => drop(gate.downgrade_agents.insert(a.to_string())),
                None => gate.downgrade_all = true,
            }
        }
    }
    let old = state.args.gate.set(gate.clone());
    let released = (old.paused_all && !gate.paused_all)
        || old
            .paused_agents
            .iter()
            .any(|a| !gate.paused_agents.contains(a));
    if released {
        tracing::info!("budget pause lifted; held tasks may start");
        (state.args.on_open)();
    }
}

/// The unsettled estimates of down nodes as the view shows them.
pub fn unsettled_view(dead: &[super::DeadLease]) -> Vec<openclaw_proto::ops::UnsettledDeadNode> {
    dead.iter()
        .map(|d| openclaw_proto::ops::UnsettledDeadNode {
            node: d.node,
            tokens: d.tokens,
            cost_usd: d.cost_usd,
            lease_expires_at: crate::tasks::view::rfc3339(d.expires_ms),
        })
        .collect()
}

fn view(state: &AccountantState) -> BudgetView {
    let cfg = state.args.cfg.get();
    let acts = budget::thresholds(&cfg.budget);
    let scopes = budget::all_scopes(&cfg.budget)
        .into_iter()
        .map(|(scope, l)| {
            let c = state.counters.get(&scope).copied().unwrap_or_default();
            let ratio = c.used_ratio(&l);
            let fired = state.fired.get(&scope).cloned().unwrap_or_default();
            let st = if cfg.budget.enabled {
                budget::scope_state(ratio, &acts, &fired, state.refused.contains_key(&scope))
            } else {
                ScopeState::Ok
            };
            let (others_t, others_c) = state.others.get(&scope).copied().unwrap_or_default();
            let dead = unsettled_view(
                state
                    .dead
                    .get(&scope)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            BudgetScopeView {
                unsettled_dead_tokens: dead.iter().map(|d| d.tokens).sum(),
                unsettled_dead_cost_usd: dead.iter().map(|d| d.cost_usd).sum(),
                unsettled_dead_nodes: dead,
                spent_tokens: c.tokens,
                spent_cost_usd: c.cost_usd,
                reserved_tokens: c.reserved_tokens.saturating_sub(others_t),
                reserved_cost_usd: (c.reserved_cost - others_c).max(0.0),
                others_leased_tokens: others_t,
                others_leased_cost_usd: others_c,
                limit_tokens: l.tokens,
                limit_cost_usd: l.cost_usd,
                used_ratio: ratio,
                fired_thresholds: fired,
                state: st.as_str().to_string(),
                scope,
            }
        })
        .collect();
    BudgetView {
        enabled: cfg.budget.enabled,
        period: state.period.clone(),
        scopes,
    }
}
