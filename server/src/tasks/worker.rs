//! A worker runs one task, outside any actor handler: take it in the ledger (new epoch),
//! build the prompt (agent actor), route it and call the model with retries and fallback
//! (`routing`, `fallback`, accounted by `calls`), record
//! the outcome under the epoch (fencing), append to the session, queue the callback, and tell
//! the scheduler its slot is free.
//!
//! Budget (§18.7): before the model call the worker reserves the call's estimate with the
//! accountant (prompt tokens + `max_tokens` or `budget.default_output_tokens`, priced at the
//! routed model), and settles the real usage after it (or releases the reservation when the call
//! failed or the task was stopped). A refused non-critical task is requeued, not failed; the
//! scheduler holds it while the budget is paused. With `downgrade_model` in force, a task that
//! did not name its model goes to the cheapest configured model (route `budget_downgrade`).
//!
//! Stopping: the scheduler cancels the slot's token. A preempted task is requeued in the ledger
//! (attempts kept) and handed back to the scheduler; a cancelled one is finished as cancelled;
//! on shutdown the task is left to start-up recovery, which runs it again.

use openclaw_proto::api::TokenCounts;
use openclaw_proto::openai::{ChatCompletionRequest, ChatMessage};
use openclaw_proto::{Priority, TaskRecord, TaskStatus};
use tracing::Instrument;

use crate::activity;
use crate::agents::Agents;
use crate::budget::{Budget, BudgetWait};
use crate::cache::keys as cache;
use crate::cache::RequestCache;
use crate::calls::fallback;
use crate::calls::routing::{self, RouteDecision, RouteInput, RouteReason};
use crate::calls::{self, CallMeta, Calls};
use crate::config::Config;
use crate::context;
use crate::metrics::metrics;
use crate::sessions::Sessions;
use crate::storage::PendingDelivery;
use crate::supervisor::Current;
use crate::tasks::delivery::DeliveryMsg;
use crate::tasks::ledger::{LedgerError, Outcome, RequeueReason};
use crate::tasks::queue::QueueEntry;
use crate::tasks::running::{RunningSlot, StopReason};
use crate::tasks::scheduler::{entry_of, SchedulerMsg};
use crate::tasks::Tasks;
use crate::util::now_ms;
use openclaw_proto::session::{SessionMessage, TurnUpdate};

/// Everything a worker uses to run a task: the tasks core (ledger, running set, events, the
/// scheduler), the agents (prompts), the calls (routing, fallback, accounting), the budget,
/// the request cache and the delivery actor. The scheduler holds one and hands it to each
/// worker it starts.
#[derive(Clone)]
pub struct Runner {
    pub tasks: Tasks,
    pub agents: Agents,
    pub calls: Calls,
    pub budget: Budget,
    pub cache: RequestCache,
    pub delivery: Current<DeliveryMsg>,
    pub sessions: Sessions,
}

/// Route a task (pure): explicit model, then `model_routing` rules, then the agent's model,
/// then the default. `prompt_tokens` is the size of the built prompt.
pub fn route_task(cfg: &Config, rec: &TaskRecord, prompt_tokens: u64) -> RouteDecision {
    let explicit = rec
        .requested_model
        .as_deref()
        .filter(|m| cfg.models.contains_key(*m));
    let agent_model = cfg.agents.get(&rec.agent).and_then(|a| a.model.as_deref());
    routing::route(
        &cfg.model_routing,
        &RouteInput {
            explicit_model: explicit,
            agent_model,
            task_type: rec.task_type.as_deref(),
            complexity: rec.complexity,
            language: rec.language.as_deref(),
            input_tokens: prompt_tokens,
            input_text: &rec.input,
        },
    )
}

/// Run `entry` in its own task (never inside the scheduler's handler), in the slot `slot`.
pub fn spawn(rt: Runner, entry: QueueEntry, slot: RunningSlot) {
    // A root span (`parent: None`): the worker is spawned from the scheduler's handler, and a task
    // must never become the parent of the next task it happens to make room for.
    let span = tracing::info_span!(parent: None, "task", id = %entry.id, agent = %entry.agent, priority = %entry.priority);
    tokio::spawn(
        async move {
            let requeued = run(&rt, &entry, &slot).await;
            let t = &rt.tasks;
            // Report to whichever scheduler incarnation is current.
            if let Some(s) = t.scheduler.get() {
                let _ = s.cast(SchedulerMsg::Done {
                    id: entry.id.clone(),
                    requeued: requeued.map(|r| entry_of(&r, t.mono.ms())),
                });
            } else {
                t.running.remove(&entry.id);
            }
        }
        .instrument(span),
    );
}

/// Run the task; returns the record when it was requeued (preempted).
async fn run(rt: &Runner, entry: &QueueEntry, slot: &RunningSlot) -> Option<TaskRecord> {
    let ledger = &rt.tasks.ledger;
    let rec = match ledger.start(&entry.id, &rt.tasks.node, now_ms()).await {
        Ok(r) => r,
        Err(LedgerError::WrongState { status, .. }) => {
            tracing::debug!(status, "task no longer queued; skipping");
            return None;
        }
        Err(LedgerError::SessionBusy { session, .. }) => {
            // An earlier turn runs on another node (cluster): this node is told when this one
            // may start (`Event::Queued`).
            tracing::debug!(%session, "an earlier turn of the session is not final; waiting");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start task");
            return None;
        }
    };
    let epoch = rec.epoch;
    tracing::debug!(attempt = rec.attempts, epoch, "task started");
    let outcome = tokio::select! {
        biased;
        _ = slot.cancel.cancelled() => None,
        o = execute(rt, &rec, &slot.wait) => Some(o),
    };
    let outcome = match (outcome, slot.stop_reason()) {
        (Some(Ok(o)), _) => o,
        (Some(Err(BudgetWait(scope))), _) => {
            // Not failed: back to the queue; the scheduler holds it while the budget is paused.
            return match ledger
                .requeue(&rec.id, epoch, RequeueReason::BudgetHeld)
                .await
            {
                Ok(r) => {
                    activity::bump(&activity::activity().budget_held);
                    tracing::debug!(%scope, "budget exhausted; task waits in the queue");
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "budget-held task could not be requeued");
                    None
                }
            };
        }
        (None, Some(StopReason::Preempted)) => {
            return match ledger
                .requeue(&rec.id, epoch, RequeueReason::Preempted)
                .await
            {
                Ok(r) => {
                    activity::bump(&activity::activity().preempted);
                    tracing::debug!("task preempted and requeued");
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "preempted task could not be requeued");
                    None
                }
            };
        }
        (None, Some(StopReason::Cancelled)) => Outcome::cancelled(),
        (None, Some(StopReason::Revoked)) => {
            tracing::warn!("another node owns the task now; this run stops");
            return None;
        }
        (None, _) => {
            tracing::info!("node shutting down; task left for recovery");
            return None;
        }
    };
    let status = outcome.status;
    if status == TaskStatus::Failed {
        // A failed turn counts in its session (no messages), so the next turn runs after it.
        record_failed_turn(rt, &rec).await;
    }
    match finish_surely(ledger.as_ref(), &rec.id, epoch, outcome).await {
        Ok(done) => {
            note_finished(&done);
            metrics()
                .tasks_total
                .with_label_values(&[done.priority.as_str(), status.as_str()])
                .inc();
            rt.tasks.finished(&done.id);
            if let Some(url) = done.callback_url.clone() {
                queue_callback(rt, &done.id, url).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "task outcome refused (fenced)"),
    }
    None
}

/// Tries of a task's outcome while the cluster cannot commit (no leader for a moment).
pub const FINISH_TRIES: u32 = 8;
/// First pause between them (doubled, at most [`FINISH_PAUSE_MAX_MS`]).
pub const FINISH_PAUSE_MS: u64 = 100;
pub const FINISH_PAUSE_MAX_MS: u64 = 2_000;

/// What to do after one try of recording a task's outcome (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishStep {
    /// Recorded: go on (callback, metrics).
    Done,
    /// The cluster could not commit: try again after a pause.
    Retry,
    /// Refused, but an earlier try may have been committed without its answer reaching us:
    /// read the task and take it as ours if it is final under our epoch.
    Check,
    /// Refused for good (fenced: another node owns the task now).
    GiveUp,
}

/// The decision after try `attempt` (1-based) answered `r` (pure).
pub fn finish_step(
    r: &Result<(), &LedgerError>,
    attempt: u32,
    tried_unavailable: bool,
) -> FinishStep {
    match r {
        Ok(()) => FinishStep::Done,
        Err(LedgerError::Unavailable(_)) if attempt < FINISH_TRIES => FinishStep::Retry,
        Err(LedgerError::Unavailable(_)) => FinishStep::Check,
        Err(LedgerError::WrongState { .. }) if tried_unavailable => FinishStep::Check,
        Err(_) => FinishStep::GiveUp,
    }
}

/// Record the outcome; an answer lost to a leader change is not taken for a refusal. Without
/// this, a `Finish` committed while its reply timed out left a final task whose callback (a
/// Feishu reply, a webhook) was never queued.
async fn finish_surely(
    ledger: &dyn crate::tasks::ledger::Ledger,
    id: &str,
    epoch: u64,
    outcome: Outcome,
) -> Result<TaskRecord, LedgerError> {
    let mut pause = FINISH_PAUSE_MS;
    let mut tried_unavailable = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = ledger.finish(id, epoch, outcome.clone(), now_ms()).await;
        let step = finish_step(&r.as_ref().map(|_| ()), attempt, tried_unavailable);
        match step {
            FinishStep::Done | FinishStep::GiveUp => return r,
            FinishStep::Retry => {
                tried_unavailable = true;
                if let Err(e) = &r {
                    tracing::debug!(error = %e, attempt, "the outcome could not be committed yet; retrying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                pause = (pause * 2).min(FINISH_PAUSE_MAX_MS);
            }
            FinishStep::Check => {
                // The replica may apply the committed outcome a moment after the leader.
                for _ in 0..20 {
                    if let Ok(Some(t)) = ledger.get(id) {
                        if t.status.is_final() && t.epoch == epoch {
                            return Ok(t);
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                return r;
            }
        }
    }
}

/// Count a finished task; only a failure gets its own line at `info` (throttled per error code,
/// so a dead provider does not write one line per task).
fn note_finished(done: &TaskRecord) {
    let a = activity::activity();
    match done.status {
        TaskStatus::Succeeded => activity::bump(&a.succeeded),
        TaskStatus::Cancelled => activity::bump(&a.cancelled),
        _ => activity::bump(&a.failed),
    }
    match (&done.status, &done.error) {
        (TaskStatus::Failed, Some(e)) => {
            if let Some(suppressed) = crate::throttled!(&e.code) {
                tracing::info!(code = %e.code, suppressed, "task failed");
            }
        }
        (status, _) => tracing::debug!(status = status.as_str(), "task finished"),
    }
}

async fn queue_callback(rt: &Runner, task_id: &str, url: String) {
    let d = PendingDelivery {
        task_id: task_id.to_string(),
        callback_url: url,
        attempts: 0,
    };
    let store = &rt.tasks.store;
    let stored = store.put_delivery(&d);
    if let Err(e) = stored {
        tracing::error!(error = %e, "cannot store callback");
        return;
    }
    let _ = store.flush().await;
    if let Some(a) = rt.delivery.get() {
        let _ = a.cast(DeliveryMsg::Deliver(d));
    }
}

/// Run the model call(s) for a task; `wait` shows the rate-limit scope a call waits for.
async fn execute(
    rt: &Runner,
    rec: &TaskRecord,
    wait: &crate::limits::WaitNote,
) -> Result<Outcome, BudgetWait> {
    let session = match &rec.session_id {
        Some(s) => match rt.sessions.get(s).await {
            Ok(t) => t,
            Err(e) => return Ok(Outcome::failed("storage", e.to_string())),
        },
        None => None,
    };
    let history: Vec<ChatMessage> = session
        .as_ref()
        .map(|s| {
            s.messages
                .iter()
                .map(|m| ChatMessage::new(m.role.clone(), m.content.clone()))
                .collect()
        })
        .unwrap_or_default();
    let prompt = match rt
        .agents
        .build_prompt(&rec.agent, history.clone(), &rec.input)
        .await
    {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::failed("agent_unavailable", e)),
    };
    // The knowledge cache's chunks (empty when it is off), reported on every outcome below.
    let chunks = prompt.memory_chunks.clone();
    let prompt_tokens = u64::from(
        prompt.breakdown.system
            + prompt.breakdown.memory
            + prompt.breakdown.tools
            + prompt.breakdown.history
            + prompt.breakdown.input,
    );
    let cfg = rt.calls.cfg.get();
    let mut route = route_task(&cfg, rec, prompt_tokens);
    if route.reason != RouteReason::Explicit && rt.budget.downgrade_for(&rec.agent) {
        if let Some(cheapest) = crate::budget::rules::cheapest_model(&cfg) {
            route.model = cheapest;
            route.reason = RouteReason::BudgetDowngrade;
        }
    }
    tracing::debug!(
        model = %route.model,
        route = %route.reason.label(),
        complexity = route.complexity.as_str(),
        language = %route.language,
        "model chosen"
    );
    let mut meta = CallMeta {
        task_id: Some(rec.id.clone()),
        wait: Some(wait.clone()),
        prompt: Some(crate::audit::AuditPrompt::of(&prompt.breakdown)),
        ..CallMeta::new(
            rec.id.clone(),
            rec.agent.clone(),
            rec.source.clone(),
            rec.priority,
        )
    };
    // Context management (§18.3): the sliding window, the running summary, compression and the
    // hard window of min(max_context_tokens, the model's context_window).
    let too_long = |needed: u64, breakdown| {
        let mut out = Outcome::failed(
            routing::CONTEXT_LENGTH_EXCEEDED,
            context::too_long_message(&cfg, &route.model, rec.max_tokens, needed),
        );
        out.model = Some(route.model.clone());
        out.route = Some(route.reason.label());
        out.prompt = breakdown;
        out.memory_chunks = chunks.clone();
        out
    };
    let limits = context::limits_for(&cfg, &route.model, rec.max_tokens);
    let Some(system_msg) = prompt.messages.first() else {
        return Ok(Outcome::failed(
            "agent_unavailable",
            "the agent built no prompt",
        ));
    };
    let mut summary = session.as_ref().and_then(|s| s.summary.clone());
    let parts = context::parts_of(
        system_msg,
        summary.as_ref(),
        &history,
        prompt.breakdown.input,
    );
    let mut plan = match context::plan::decide(&parts, &limits) {
        Ok(p) => p,
        Err(e) => return Ok(too_long(u64::from(e.needed), prompt.breakdown)),
    };
    let mut new_summary = None;
    let mut summarised = 0u32;
    if let (Some(sess), true) = (&session, plan.fold > 0 && context::summarises(&cfg)) {
        let folded = &history[..plan.fold];
        let critical = rec.priority == Priority::Critical;
        if let Some(s) = context::summarise(
            &rt.calls,
            &rt.budget,
            &meta,
            critical,
            sess,
            folded,
            limits.window,
        )
        .await?
        {
            summarised = plan.fold as u32;
            let rest = context::parts_of(
                system_msg,
                Some(&s),
                &history[plan.fold..],
                prompt.breakdown.input,
            );
            plan = match context::replan(&plan, &rest, &limits) {
                Ok(p) => p,
                Err(e) => return Ok(too_long(u64::from(e.needed), prompt.breakdown)),
            };
            summary = Some(s.clone());
            new_summary = Some(s);
        }
    }
    let sent = context::assemble(&prompt.messages, summary.as_ref(), &plan);
    let saved = context::note_saved(&parts, &plan, sent.summary);
    let mut breakdown = prompt.breakdown;
    breakdown.history = sent.history;
    breakdown.summary = sent.summary;
    if let Some(cut) = sent.system_cut {
        // A cut system message loses its tail first: tools, then memory.
        breakdown.system = breakdown.system.min(cut);
        breakdown.memory = breakdown.memory.min(cut - breakdown.system);
        breakdown.tools = cut - breakdown.system - breakdown.memory;
    }
    // The answer's audit line carries the prompt as sent, and what the context layer saved.
    meta.prompt = Some(crate::audit::AuditPrompt {
        summary: u64::from(breakdown.summary),
        saved,
        ..crate::audit::AuditPrompt::of(&breakdown)
    });
    let cut = context::cut_of(&plan, summarised);
    let turn = Turn {
        fold: plan.fold as u32,
        summary: new_summary,
    };
    let req = ChatCompletionRequest {
        model: route.model.clone(),
        messages: sent.messages,
        stream: false,
        max_tokens: rec.max_tokens,
        max_completion_tokens: None,
        temperature: None,
        extra: Default::default(),
    };
    // The assembled prompt is checked as the provider counts it (the plan's invariant, kept
    // honest): a prompt over the window is never sent.
    let est_prompt = u64::from(crate::tokens::count_messages(&req.messages));
    if let Err(msg) = context::check_prompt(&cfg, &route.model, est_prompt, rec.max_tokens) {
        let mut out = Outcome::failed(routing::CONTEXT_LENGTH_EXCEEDED, msg);
        out.model = Some(route.model.clone());
        out.route = Some(route.reason.label());
        out.prompt = breakdown;
        out.memory_chunks = chunks.clone();
        out.context = cut;
        keep_summary_of_failed_turn(rt, rec, turn).await;
        return Ok(out);
    }
    let mut cache_probe = request_cache_probe(&cfg, rec, &route.model, &req);
    drop(cfg);
    if let Some(probe) = &mut cache_probe {
        if let Some(hit) = rt.cache.find(probe, &rt.calls, &rt.budget, &meta).await {
            let score = hit.score_f64();
            let hit = hit.entry;
            tracing::debug!(model = %hit.model, ?score, "answer served from the request cache");
            calls::account_cache_hit(&rt.calls, &meta, &hit.model, score).await;
            append_session(rt, rec, &hit.text, turn).await;
            breakdown.output = hit.usage.completion_tokens as u32;
            return Ok(Outcome {
                status: TaskStatus::Succeeded,
                model: Some(hit.model),
                route: Some(route.reason.label()),
                fallbacks: Vec::new(),
                output: Some(hit.text),
                tokens: TokenCounts::default(),
                cost_usd: 0.0,
                error: None,
                cache_hit: true,
                cache_score: score,
                prompt: breakdown,
                context: cut,
                memory_chunks: chunks.clone(),
            });
        }
    }
    let held = rt
        .budget
        .reserve(
            &rec.agent,
            rec.priority == Priority::Critical,
            &route.model,
            est_prompt,
            rec.max_tokens,
        )
        .await?;
    let answer = fallback::chat(&rt.calls, &meta, &req, &route.model).await;
    Ok(match answer {
        Ok(answer) => {
            let done = answer.value;
            held.settle(
                done.usage.prompt_tokens + done.usage.completion_tokens,
                done.cost_usd,
            );
            let output = done.response.text();
            append_session(rt, rec, &output, turn).await;
            if let Some(probe) = cache_probe {
                let finish = done
                    .response
                    .choices
                    .first()
                    .and_then(|c| c.finish_reason.clone());
                if cache::cacheable(&output, finish.as_deref()) {
                    rt.cache.store_answer(
                        probe,
                        crate::cache::store::entry_now(
                            &answer.model,
                            output.clone(),
                            finish,
                            done.usage,
                        ),
                    );
                }
            }
            breakdown.output = done.usage.completion_tokens as u32;
            Outcome {
                status: TaskStatus::Succeeded,
                model: Some(answer.model),
                route: Some(route.reason.label()),
                fallbacks: answer.fallbacks,
                output: Some(output),
                tokens: TokenCounts {
                    input: done.usage.prompt_tokens,
                    output: done.usage.completion_tokens,
                },
                cost_usd: done.cost_usd,
                error: None,
                cache_hit: false,
                cache_score: None,
                prompt: breakdown,
                context: cut,
                memory_chunks: chunks.clone(),
            }
        }
        Err(f) => {
            let message = match &f.limited {
                Some(le) => le.to_string(),
                None => format!("model {}: {}", f.model, f.error),
            };
            let mut out = Outcome::failed(f.error.code(), message);
            out.model = Some(f.model);
            out.route = Some(route.reason.label());
            out.fallbacks = f.fallbacks;
            out.prompt = breakdown;
            out.memory_chunks = chunks.clone();
            out.context = cut;
            drop(held);
            keep_summary_of_failed_turn(rt, rec, turn).await;
            out
        }
    })
}

async fn record_failed_turn(rt: &Runner, rec: &TaskRecord) {
    if let Some(s) = &rec.session_id {
        let upd = TurnUpdate {
            session: s.clone(),
            agent: rec.agent.clone(),
            task_id: rec.id.clone(),
            fold: 0,
            summary: None,
            append: Vec::new(),
        };
        if let Err(e) = rt.sessions.record_turn(upd).await {
            tracing::warn!(error = %e, "cannot record the failed turn in its session");
        }
    }
}

/// What a turn changes in its session besides its two messages: the oldest messages that left
/// the window, and the new running summary when a summary call made one.
struct Turn {
    fold: u32,
    summary: Option<openclaw_proto::session::SessionSummary>,
}

async fn append_session(rt: &Runner, rec: &TaskRecord, output: &str, turn: Turn) {
    let msg = |role: &str, content: &str| SessionMessage {
        role: role.into(),
        content: content.to_string(),
        tokens: crate::tokens::count(content),
    };
    let append = vec![msg("user", &rec.input), msg("assistant", output)];
    record_turn(rt, rec, turn, append).await;
}

/// A turn whose answer failed after its summary call made a new summary: the summary (paid
/// for) is kept and the messages it folded leave the window, so the next turn does not
/// summarise them again. Its two messages are not added (the failure records the turn once;
/// the session's `last_task` makes the later `record_failed_turn` a no-op).
async fn keep_summary_of_failed_turn(rt: &Runner, rec: &TaskRecord, turn: Turn) {
    if turn.summary.is_some() {
        record_turn(rt, rec, turn, Vec::new()).await;
    }
}

async fn record_turn(rt: &Runner, rec: &TaskRecord, turn: Turn, append: Vec<SessionMessage>) {
    if let Some(s) = &rec.session_id {
        let upd = TurnUpdate {
            session: s.clone(),
            agent: rec.agent.clone(),
            task_id: rec.id.clone(),
            fold: turn.fold,
            summary: turn.summary,
            append,
        };
        if let Err(e) = rt.sessions.record_turn(upd).await {
            tracing::warn!(error = %e, "cannot record the turn in its session");
        }
    }
}

/// The request-cache probe of a task's call to `model` (its key, and under `semantic` its
/// partition and query), or None when the cache is off (config `enabled: false`, or the
/// task's `cache: false`). Pure.
pub fn request_cache_probe(
    cfg: &Config,
    rec: &TaskRecord,
    model: &str,
    req: &ChatCompletionRequest,
) -> Option<crate::cache::Probe> {
    let rc = &cfg.cache.request_cache;
    if !rc.enabled || !rec.cache {
        return None;
    }
    let params: serde_json::Value = rec
        .template_params
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let template = rec.template_id.as_deref().map(|id| (id, &params));
    Some(crate::cache::probe(rc, model, &rec.agent, req, template))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_step_table() {
        let unavailable = LedgerError::Unavailable("no leader".into());
        let wrong = LedgerError::WrongState {
            id: "t".into(),
            status: "succeeded".into(),
        };
        let fenced = LedgerError::Fenced {
            id: "t".into(),
            given: 1,
            current: 2,
        };
        use FinishStep::*;
        let cases: [(Result<(), &LedgerError>, u32, bool, FinishStep); 8] = [
            (Ok(()), 1, false, Done),
            (Ok(()), 3, true, Done),
            (Err(&unavailable), 1, false, Retry),
            (Err(&unavailable), FINISH_TRIES - 1, true, Retry),
            // Out of tries: whatever was committed is read back.
            (Err(&unavailable), FINISH_TRIES, true, Check),
            // Already final after a try whose answer was lost: maybe ours.
            (Err(&wrong), 2, true, Check),
            // Final without any lost answer: someone else's outcome.
            (Err(&wrong), 1, false, GiveUp),
            (Err(&fenced), 2, true, GiveUp),
        ];
        for (r, attempt, lost, want) in cases {
            assert_eq!(
                finish_step(&r, attempt, lost),
                want,
                "{r:?} {attempt} {lost}"
            );
        }
    }

    #[test]
    fn route_task_table() {
        let mut cfg = Config::default();
        cfg.agents.insert(
            "writer".into(),
            crate::config::AgentConfig {
                model: Some("deepseek-v3".into()),
                ..Default::default()
            },
        );
        let mut rec = crate::tasks::ledger::tests_support::record("t");
        let cases = [
            (Some("gpt-4o"), "main", "gpt-4o", "explicit"),
            (None, "main", "gpt-4o-mini", "default"),
            (None, "writer", "deepseek-v3", "agent"),
            (
                Some("claude-3-5-haiku"),
                "writer",
                "claude-3-5-haiku",
                "explicit",
            ),
            (Some("not-configured"), "main", "gpt-4o-mini", "default"),
        ];
        for (requested, agent, want, why) in cases {
            rec.requested_model = requested.map(String::from);
            rec.agent = agent.into();
            let d = route_task(&cfg, &rec, 10);
            assert_eq!(
                (d.model.as_str(), d.reason.label().as_str()),
                (want, why),
                "{requested:?} {agent}"
            );
        }
    }

    #[test]
    fn request_cache_probe_table() {
        let key = |cfg: &Config, rec: &TaskRecord, model: &str, req: &ChatCompletionRequest| {
            request_cache_probe(cfg, rec, model, req).map(|p| p.key)
        };
        let mut cfg = Config::default();
        let mut rec = crate::tasks::ledger::tests_support::record("t");
        let req = ChatCompletionRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            stream: false,
            max_tokens: None,
            max_completion_tokens: None,
            temperature: None,
            extra: Default::default(),
        };
        assert_eq!(key(&cfg, &rec, "gpt-4o-mini", &req), None, "disabled");
        cfg.cache.request_cache.enabled = true;
        let k = key(&cfg, &rec, "gpt-4o-mini", &req);
        assert!(k.is_some());
        assert_ne!(
            key(&cfg, &rec, "gpt-4o", &req),
            k,
            "routed model is in the key"
        );
        rec.cache = false;
        assert_eq!(key(&cfg, &rec, "gpt-4o-mini", &req), None, "task opted out");
        rec.cache = true;
        rec.template_id = Some("daily".into());
        rec.template_params = Some(r#"{"day":"mon"}"#.into());
        assert_eq!(
            key(&cfg, &rec, "gpt-4o-mini", &req),
            k,
            "exact ignores templates"
        );
        cfg.cache.request_cache.hash_strategy = crate::config::HashStrategy::Template;
        let t = key(&cfg, &rec, "gpt-4o-mini", &req);
        let mut other = req.clone();
        other.messages = vec![ChatMessage::new("user", "something else")];
        assert_eq!(key(&cfg, &rec, "gpt-4o-mini", &other), t);
        assert_ne!(t, k);
        let p = request_cache_probe(&cfg, &rec, "gpt-4o-mini", &req).unwrap();
        assert_eq!(p.by, crate::cache::HitStrategy::Template);
        assert!(p.semantic.is_none());
        // Semantic: the agent is in the partition; the query is the task's input.
        cfg.cache.request_cache.hash_strategy = crate::config::HashStrategy::Semantic;
        let s = request_cache_probe(&cfg, &rec, "gpt-4o-mini", &req).unwrap();
        let sp = s.semantic.clone().unwrap();
        assert_eq!(sp.key.query, "hi");
        assert_eq!(sp.embedding_model, "text-embedding-3-small");
        assert_ne!(Some(s.key.clone()), k);
        rec.agent = "ops".into();
        let o = request_cache_probe(&cfg, &rec, "gpt-4o-mini", &req).unwrap();
        assert_ne!(o.semantic.unwrap().key.partition, sp.key.partition);
        assert_ne!(o.key, s.key);
    }
}
