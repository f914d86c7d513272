//! Table tests of the replicated state's `apply`: ownership, fencing, budgets, rate slices,
//! retention.

use super::*;
use crate::disk::MemDisk;
use openclaw_proto::Priority;

/// A replica: the in-memory state and its disk.
#[derive(Default, Clone)]
struct R {
    s: ClusterState,
    d: MemDisk,
}

impl std::ops::Deref for R {
    type Target = ClusterState;
    fn deref(&self) -> &ClusterState {
        &self.s
    }
}

impl std::ops::DerefMut for R {
    fn deref_mut(&mut self) -> &mut ClusterState {
        &mut self.s
    }
}

impl R {
    fn apply(&mut self, req: &Request) -> (Response, Vec<Event>) {
        self.s.apply(req, &mut self.d)
    }

    /// What a snapshot carries: the control state's bytes and the disk; restored as a new
    /// node would (decode, then load the live tasks from disk).
    fn snapshot_round_trip(&self) -> R {
        let bytes = openclaw_proto::codec::encode(&self.s).unwrap();
        let mut s: ClusterState = openclaw_proto::codec::decode(&bytes).unwrap();
        let d = self.d.clone();
        s.load_live(&d);
        R { s, d }
    }
}

fn rec(id: &str, p: Priority) -> TaskRecord {
    TaskRecord::queued(id, "main", "hi", p)
}

fn hb(node: NodeId, workers: u32) -> Command {
    Command::Heartbeat {
        node,
        report: NodeReport {
            http_addr: format!("h{node}"),
            workers,
            lease_ms: 1000,
        },
    }
}

fn admit(id: &str, p: Priority) -> Command {
    Command::Admit {
        rec: Box::new(rec(id, p)),
        via: 1,
        may_preempt: p == Priority::Critical,
    }
}

fn run(s: &mut R, now_ms: u64, cmds: Vec<Command>) -> (Vec<Reply>, Vec<Event>) {
    let (r, e) = s.apply(&Request { now_ms, cmds });
    (r.replies, e)
}

fn task(r: &Reply) -> &TaskRecord {
    match r {
        Reply::Task(t) => t,
        other => panic!("not a task: {other:?}"),
    }
}

#[test]
fn admission_spreads_over_live_nodes_and_honours_idempotency() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 1), hb(2, 1), hb(3, 1)]);
    let (r, ev) = run(
        &mut s,
        10,
        vec![
            admit("a", Priority::Normal),
            admit("b", Priority::Normal),
            admit("c", Priority::Normal),
        ],
    );
    let owners: Vec<_> = r.iter().map(|r| task(r).owner.clone().unwrap()).collect();
    assert_eq!(owners, vec!["1", "2", "3"]);
    assert_eq!(task(&r[2]).seq, 3);
    assert_eq!(ev.len(), 3);

    let mut k = rec("d", Priority::Normal);
    k.idempotency_key = Some("key".into());
    let mut k2 = rec("e", Priority::Normal);
    k2.idempotency_key = Some("key".into());
    let (r, _) = run(
        &mut s,
        11,
        vec![
            Command::Admit {
                rec: Box::new(k),
                via: 1,
                may_preempt: false,
            },
            Command::Admit {
                rec: Box::new(k2),
                via: 1,
                may_preempt: false,
            },
        ],
    );
    assert!(matches!(&r[1], Reply::Duplicate(t) if t.id == "d"));
    assert!(!s.tasks.contains_key("e"));
}

#[test]
fn only_the_owner_starts_and_only_the_current_epoch_finishes() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 2), hb(2, 2)]);
    run(&mut s, 1, vec![admit("a", Priority::High)]);
    let (r, _) = run(
        &mut s,
        2,
        vec![Command::Start {
            id: "a".into(),
            node: 2,
        }],
    );
    assert!(matches!(&r[0], Reply::Rejected(Rejection::NotOwner { .. })));
    let (r, _) = run(
        &mut s,
        3,
        vec![Command::Start {
            id: "a".into(),
            node: 1,
        }],
    );
    let t = task(&r[0]);
    assert_eq!((t.status, t.epoch, t.attempts), (TaskStatus::Running, 1, 1));
    let done = Box::new(Outcome::failed("x", "y"));
    let (r, ev) = run(
        &mut s,
        4,
        vec![
            Command::Finish {
                id: "a".into(),
                epoch: 0,
                outcome: done.clone(),
            },
            Command::Finish {
                id: "a".into(),
                epoch: 1,
                outcome: done.clone(),
            },
            Command::Finish {
                id: "a".into(),
                epoch: 1,
                outcome: done,
            },
        ],
    );
    assert!(matches!(&r[0], Reply::Rejected(Rejection::Fenced { .. })));
    assert_eq!(task(&r[1]).status, TaskStatus::Failed);
    assert!(matches!(
        &r[2],
        Reply::Rejected(Rejection::WrongState { .. })
    ));
    assert_eq!(ev, vec![Event::Finished { id: "a".into() }]);
}

#[test]
fn a_dead_nodes_tasks_move_and_its_old_run_is_fenced() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 1), hb(2, 1)]);
    run(
        &mut s,
        1,
        vec![admit("a", Priority::Normal), admit("b", Priority::Normal)],
    );
    let (r, _) = run(
        &mut s,
        2,
        vec![Command::Start {
            id: "b".into(),
            node: 2,
        }],
    );
    let old_epoch = task(&r[0]).epoch;
    // Node 1 keeps heartbeating, node 2 goes silent.
    run(&mut s, 900, vec![hb(1, 1)]);
    assert!(!s.has_orphans(), "node 2 is still within its lease at 900");
    let (r, ev) = run(&mut s, 1500, vec![Command::Expire]);
    assert_eq!(r[0], Reply::Expired(vec![2]));
    assert!(!s.has_orphans(), "everything moved to node 1");
    assert!(ev.contains(&Event::Revoked {
        id: "b".into(),
        from: 2
    }));
    assert!(ev.contains(&Event::Queued {
        id: "b".into(),
        owner: 1
    }));
    let b = &s.tasks["b"];
    assert_eq!(
        (b.status, b.owner.as_deref()),
        (TaskStatus::Queued, Some("1"))
    );
    assert!(b.epoch > old_epoch);
    // The old owner wakes up and reports: fenced.
    let (r, _) = run(
        &mut s,
        1600,
        vec![Command::Finish {
            id: "b".into(),
            epoch: old_epoch,
            outcome: Box::new(Outcome::cancelled()),
        }],
    );
    assert!(matches!(&r[0], Reply::Rejected(_)));
    // Expire again: nothing more to do.
    let (r, _) = run(&mut s, 1700, vec![Command::Expire]);
    assert_eq!(r[0], Reply::Moved(vec![]));
}

#[test]
fn idle_nodes_steal_from_backlogged_ones() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 1)]);
    let cmds = (0..5)
        .map(|i| admit(&format!("t{i}"), Priority::Normal))
        .collect();
    run(&mut s, 1, cmds);
    run(
        &mut s,
        2,
        vec![Command::Start {
            id: "t0".into(),
            node: 1,
        }],
    );
    run(&mut s, 3, vec![hb(2, 2)]);
    let (r, ev) = run(&mut s, 4, vec![Command::Steal { node: 2, max: 8 }]);
    assert_eq!(r[0], Reply::Moved(vec!["t1".into(), "t2".into()]));
    assert_eq!(ev.len(), 4);
    assert_eq!(s.tasks["t1"].owner.as_deref(), Some("2"));
    assert_eq!(s.tasks["t3"].owner.as_deref(), Some("1"));
}

/// `node` asks for `want` tokens of the `total` budget of 1,000 tokens in `period`.
fn budget_lease(period: &str, node: NodeId, want: u64) -> Command {
    Command::LeaseBudget {
        node,
        period: period.into(),
        scope: "total".into(),
        limit: BudgetLimit {
            tokens: Some(1000),
            cost_usd: None,
        },
        want_tokens: want,
        want_cost_usd: 0.0,
    }
}

#[test]
fn budget_slices_never_pass_the_limit_and_thresholds_fire_once() {
    let mut s = R::default();
    let lease = |node, want| budget_lease("2026-11", node, want);
    let (r, _) = run(&mut s, 0, vec![lease(1, 600), lease(2, 600), lease(3, 600)]);
    let granted: Vec<u64> = r
        .iter()
        .map(|r| match r {
            Reply::BudgetSlice { tokens, .. } => *tokens,
            _ => panic!(),
        })
        .collect();
    assert_eq!(granted, vec![600, 400, 0]);
    let spend = Command::Spend {
        id: "s1".into(),
        node: 1,
        period: "2026-11".into(),
        scopes: vec!["total".into()],
        model: "m".into(),
        tokens: 250,
        cost_usd: 0.01,
        reserved_tokens: 300,
        reserved_cost_usd: 0.0,
    };
    run(&mut s, 1, vec![spend.clone(), spend]);
    let t = &s.budget["total"];
    assert_eq!((t.spent_tokens, t.slices[&1].tokens), (250, 300));
    // An idle node hands part of its slice back.
    let give_back = |tokens| Command::ReturnBudget {
        node: 2,
        scope: "total".into(),
        tokens,
        cost_usd: 0.0,
    };
    run(&mut s, 1, vec![give_back(100)]);
    assert_eq!(s.budget["total"].slices[&2].tokens, 300);
    run(&mut s, 1, vec![give_back(300)]);
    assert!(!s.budget["total"].slices.contains_key(&2));
    // Node 2 takes its 400 again, so the free remainder below stays 50.
    let (r, _) = run(&mut s, 1, vec![lease(2, 400)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 400,
            cost_usd: 0.0
        }
    );
    // 1000 - 250 spent - 300 - 400 held = 50 free.
    let (r, _) = run(&mut s, 2, vec![lease(3, 600)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 50,
            cost_usd: 0.0
        }
    );
    let claim = |p: &str| Command::ClaimThreshold {
        period: p.into(),
        scope: "total".into(),
        percent: 80,
    };
    let (r, _) = run(
        &mut s,
        3,
        vec![claim("2026-11"), claim("2026-11"), claim("2026-10")],
    );
    assert_eq!(
        r,
        vec![
            Reply::Claimed(true),
            Reply::Claimed(false),
            Reply::Claimed(false)
        ]
    );
    // A new period starts from zero.
    let (r, _) = run(&mut s, 4, vec![budget_lease("2026-12", 1, 1000)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 1000,
            cost_usd: 0.0
        }
    );
    let (r, _) = run(&mut s, 5, vec![claim("2026-12")]);
    assert_eq!(r[0], Reply::Claimed(true));
}

/// An ask for a `gpt-4o` rate slice of `bucket` (1-s buckets, a window of 5).
fn rate_ask(
    node: u64,
    bucket: u64,
    limit: RateLimit,
    want_requests: u64,
    want_tokens: u64,
) -> Command {
    Command::LeaseRate {
        node,
        scope: "gpt-4o".into(),
        bucket,
        bucket_ms: 1000,
        span: 5,
        limit,
        want_requests,
        want_tokens,
    }
}

#[test]
fn rate_slices_stay_within_every_sliding_window() {
    // 10 requests per window of 5 buckets: any 6 consecutive buckets hold at most 10 grants.
    let mut s = R::default();
    let limit = RateLimit {
        requests: Some(10),
        tokens: None,
    };
    let ask = |node, bucket, want| rate_ask(node, bucket, limit, want, 100);
    let grants = |r: Vec<Reply>| -> Vec<u64> {
        r.iter()
            .map(|r| match r {
                Reply::RateSlice { requests, .. } => *requests,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // Bucket 5: the limit is reached; a late ask for bucket 4 gets nothing.
    let (r, _) = run(
        &mut s,
        0,
        vec![ask(1, 5, 4), ask(2, 5, 4), ask(3, 5, 4), ask(1, 4, 4)],
    );
    assert_eq!(grants(r), vec![4, 4, 2, 0]);
    // A calendar window would start afresh at bucket 6..10; the sliding one does not: the
    // grants of bucket 5 count until bucket 5 is more than `span` buckets old.
    for b in 6..=10 {
        let (r, _) = run(&mut s, b * 1000, vec![ask(3, b, 4)]);
        assert_eq!(grants(r), vec![0], "bucket {b}");
    }
    let (r, _) = run(
        &mut s,
        11_000,
        vec![ask(3, 11, 4), ask(1, 11, 4), ask(2, 11, 4)],
    );
    assert_eq!(grants(r), vec![4, 4, 2]);
    assert_eq!(s.rate["gpt-4o"].buckets.len(), 1, "old buckets pruned");
    // A change of the bucket width starts a fresh history.
    let (r, _) = run(
        &mut s,
        12_000,
        vec![Command::LeaseRate {
            node: 1,
            scope: "gpt-4o".into(),
            bucket: 24,
            bucket_ms: 500,
            span: 10,
            limit,
            want_requests: 3,
            want_tokens: 0,
        }],
    );
    assert_eq!(grants(r), vec![3]);
}

/// An unspent slice given back (`ReturnRate`) leaves the window: the room is granted again in
/// the next bucket, where without the return nothing would be; a return never goes below zero,
/// and one for another bucket width or a bucket no longer kept changes nothing.
#[test]
fn a_returned_rate_slice_makes_room_in_the_window() {
    let mut s = R::default();
    let limit = RateLimit {
        requests: Some(10),
        tokens: Some(1000),
    };
    let ask = |node, bucket, want| rate_ask(node, bucket, limit, want, want * 100);
    let give_back = |node, bucket, bucket_ms, requests, tokens| Command::ReturnRate {
        node,
        scope: "gpt-4o".into(),
        bucket,
        bucket_ms,
        requests,
        tokens,
    };
    let granted = |r: &Reply| match r {
        Reply::RateSlice { requests, tokens } => (*requests, *tokens),
        other => panic!("{other:?}"),
    };
    let (r, _) = run(&mut s, 5_000, vec![ask(1, 5, 6), ask(2, 5, 6)]);
    assert_eq!(granted(&r[0]), (6, 600));
    assert_eq!(granted(&r[1]), (4, 400), "the window is full");
    // Without a return, bucket 6 gets nothing.
    let (r, _) = run(&mut s, 6_000, vec![ask(3, 6, 2)]);
    assert_eq!(granted(&r[0]), (0, 0));
    // Node 1's reply came late: it gives its 6 back; the window has room again.
    let (r, _) = run(
        &mut s,
        6_100,
        vec![give_back(1, 5, 1000, 6, 600), ask(3, 6, 4)],
    );
    assert_eq!(r[0], Reply::Ok);
    assert_eq!(granted(&r[1]), (4, 400));
    assert_eq!(s.rate["gpt-4o"].granted_requests, 8);
    assert_eq!(s.rate["gpt-4o"].per_node.get(&3), Some(&(4, 400)));
    // Returning more than was granted stops at zero: bucket 5 held 4 (node 2), 9 come back.
    let (r, _) = run(&mut s, 6_200, vec![give_back(2, 5, 1000, 9, 900)]);
    assert_eq!(r[0], Reply::Ok);
    assert_eq!(
        s.rate["gpt-4o"].buckets.get(&5),
        None,
        "an emptied bucket is dropped"
    );
    assert_eq!(s.rate["gpt-4o"].granted_requests, 4);
    // Another width, or a bucket no longer kept: nothing changes.
    let before = s.rate["gpt-4o"].clone();
    let (r, _) = run(
        &mut s,
        6_300,
        vec![give_back(3, 6, 500, 4, 400), give_back(3, 1, 1000, 4, 400)],
    );
    assert_eq!(r, vec![Reply::Ok, Reply::Ok]);
    assert_eq!(s.rate["gpt-4o"].buckets, before.buckets);
    assert_eq!(s.rate["gpt-4o"].granted_requests, before.granted_requests);
}

#[test]
fn apply_is_deterministic_and_survives_a_snapshot_round_trip() {
    let batches: Vec<Request> = (0..20u64)
        .map(|i| Request {
            now_ms: i * 300,
            cmds: vec![
                hb(1 + i % 3, 2),
                admit(
                    &format!("t{i}"),
                    Priority::from_level((i % 5) as u8).unwrap(),
                ),
                Command::Start {
                    id: format!("t{}", i / 2),
                    node: 1 + (i / 2) % 3,
                },
                Command::Expire,
                Command::Steal {
                    node: 1 + i % 3,
                    max: 2,
                },
            ],
        })
        .collect();
    let mut a = R::default();
    let mut b = R::default();
    for (i, req) in batches.iter().enumerate() {
        // Finish what was started two batches ago, with a payload, and keep at most 4.
        let mut req = req.clone();
        if i >= 2 {
            let id = format!("t{}", (i - 2) / 2);
            let epoch = a.tasks.get(&id).map(|r| r.epoch).unwrap_or(0);
            let mut out = Outcome::failed("x", "y");
            out.status = TaskStatus::Succeeded;
            out.output = Some(format!("output of {id}"));
            req.cmds.push(Command::Finish {
                id,
                epoch,
                outcome: Box::new(out),
            });
            req.cmds.push(Command::Retain {
                before_ms: 0,
                keep_max: 4,
                max: 2,
            });
        }
        if i == 10 {
            // b restarts from a snapshot of itself here.
            let restored = b.snapshot_round_trip();
            assert!(
                restored.s == b.s && restored.d == b.d,
                "a restored snapshot compares equal, payloads included"
            );
            b = restored;
        }
        let ra = a.apply(&req);
        let rb = b.apply(&req);
        assert_eq!(ra, rb, "batch {i}");
    }
    assert!(a.retained_total() > 0, "some finished records are kept");
    assert!(a.retained_total() <= 4);
    assert_eq!(a.s, b.s);
    assert_eq!(a.d, b.d, "the disks hold the same bytes, payloads included");
    assert_eq!(a.loads, b.loads);
    let restored = a.snapshot_round_trip();
    assert!(restored.s == a.s && restored.d == a.d);
}

fn finish(id: &str, epoch: u64, output: &str) -> Command {
    let mut out = Outcome::failed("x", "y");
    out.status = TaskStatus::Succeeded;
    out.output = Some(output.into());
    Command::Finish {
        id: id.into(),
        epoch,
        outcome: Box::new(out),
    }
}

#[test]
fn finished_tasks_leave_memory_and_are_read_from_disk() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 1)]);
    let mut k = rec("a", Priority::Normal);
    k.idempotency_key = Some("key".into());
    run(
        &mut s,
        1,
        vec![Command::Admit {
            rec: Box::new(k),
            via: 1,
            may_preempt: false,
        }],
    );
    run(
        &mut s,
        2,
        vec![Command::Start {
            id: "a".into(),
            node: 1,
        }],
    );
    let (r, ev) = run(&mut s, 3, vec![finish("a", 1, "the answer")]);
    assert_eq!(task(&r[0]).status, TaskStatus::Succeeded);
    assert_eq!(ev, vec![Event::Finished { id: "a".into() }]);
    assert!(s.tasks.is_empty(), "a finished task is not held in memory");
    let got = s.s.task(&s.d, "a").unwrap();
    assert_eq!(
        (got.output.as_deref(), got.input.as_str()),
        (Some("the answer"), "hi")
    );
    assert_eq!(s.retained_total(), 1);
    // Its idempotency key still finds it; a second finish is refused as before.
    let mut k2 = rec("b", Priority::Normal);
    k2.idempotency_key = Some("key".into());
    let (r, _) = run(
        &mut s,
        4,
        vec![
            Command::Admit {
                rec: Box::new(k2),
                via: 1,
                may_preempt: false,
            },
            finish("a", 1, "again"),
        ],
    );
    assert!(matches!(&r[0], Reply::Duplicate(t) if t.id == "a"));
    assert!(matches!(
        &r[1],
        Reply::Rejected(Rejection::WrongState { .. })
    ));
}

#[test]
fn retention_removes_the_oldest_finished_first_within_a_bounded_batch() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 8)]);
    let n = 6u64;
    for i in 0..n {
        let id = format!("t{i}");
        let mut r = rec(&id, Priority::Normal);
        r.idempotency_key = Some(format!("k{i}"));
        run(
            &mut s,
            10 + i * 10,
            vec![
                Command::Admit {
                    rec: Box::new(r),
                    via: 1,
                    may_preempt: false,
                },
                Command::Start {
                    id: id.clone(),
                    node: 1,
                },
                finish(&id, 1, "out"),
            ],
        );
    }
    assert_eq!(s.retained_total(), n);
    // Past the TTL: t0 and t1 ended before 30.
    let (r, _) = run(
        &mut s,
        100,
        vec![Command::Retain {
            before_ms: 30,
            keep_max: u64::MAX,
            max: 100,
        }],
    );
    assert_eq!(r[0], Reply::Purged(2));
    assert!(s.s.task(&s.d, "t1").is_none() && s.s.task(&s.d, "t2").is_some());
    assert!(s.d.get(&key::idempotency("k1")).is_none());
    // Over the count bound: the oldest go first, at most `max` per command.
    let (r, _) = run(
        &mut s,
        101,
        vec![
            Command::Retain {
                before_ms: 0,
                keep_max: 1,
                max: 2,
            },
            Command::Retain {
                before_ms: 0,
                keep_max: 1,
                max: 2,
            },
        ],
    );
    assert_eq!(r, vec![Reply::Purged(2), Reply::Purged(1)]);
    assert_eq!(s.retained_total(), 1);
    assert!(s.s.task(&s.d, "t5").is_some() && s.s.task(&s.d, "t4").is_none());
    // Only t5's keys are left on disk.
    let keys: Vec<Vec<u8>> = s.d.0.keys().cloned().collect();
    assert_eq!(
        keys,
        vec![
            key::finished(60, "t5"),
            key::idempotency("k5"),
            key::task("t5")
        ]
    );
    // A key whose task was purged is free again.
    let mut again = rec("t9", Priority::Normal);
    again.idempotency_key = Some("k0".into());
    let (r, _) = run(
        &mut s,
        102,
        vec![Command::Admit {
            rec: Box::new(again),
            via: 1,
            may_preempt: false,
        }],
    );
    assert_eq!(task(&r[0]).id, "t9");
}

#[test]
fn spend_ids_are_remembered_on_disk_for_their_window_only() {
    let mut s = R::default();
    let spend = Command::Spend {
        id: "s1".into(),
        node: 1,
        period: "p".into(),
        scopes: vec!["total".into()],
        model: "m".into(),
        tokens: 10,
        cost_usd: 0.0,
        reserved_tokens: 0,
        reserved_cost_usd: 0.0,
    };
    run(&mut s, 1, vec![spend.clone(), spend.clone()]);
    assert_eq!(s.budget["total"].spent_tokens, 10);
    run(
        &mut s,
        SPEND_IDS_KEEP_MS,
        vec![Command::Purge { before_ms: 0 }],
    );
    assert!(s.d.get(&key::spend("s1")).is_some(), "still in its window");
    run(
        &mut s,
        SPEND_IDS_KEEP_MS + 2,
        vec![Command::Purge { before_ms: 0 }],
    );
    assert!(s.d.0.is_empty(), "forgotten after its window");
    run(&mut s, SPEND_IDS_KEEP_MS + 3, vec![spend]);
    assert_eq!(s.budget["total"].spent_tokens, 20);
}

fn admit_in(id: &str, session: &str, p: Priority) -> Command {
    let mut r = rec(id, p);
    r.session_id = Some(session.into());
    Command::Admit {
        rec: Box::new(r),
        via: 1,
        may_preempt: false,
    }
}

fn start(id: &str, node: NodeId) -> Command {
    Command::Start {
        id: id.into(),
        node,
    }
}

fn turn(session: &str, task: &str, text: &str) -> Command {
    use openclaw_proto::session::{SessionMessage, TurnUpdate};
    let m = |role: &str| SessionMessage {
        role: role.into(),
        content: format!("{role}: {text}"),
        tokens: 3,
    };
    Command::RecordTurn {
        turn: Box::new(TurnUpdate {
            session: session.into(),
            agent: "main".into(),
            task_id: task.into(),
            fold: 0,
            summary: None,
            append: if text.is_empty() {
                Vec::new()
            } else {
                vec![m("user"), m("assistant")]
            },
        }),
        node: 1,
        messages_max: 4,
        sessions_max: 3,
    }
}

/// One turn at a time, in submission order, cluster-wide: a later task of a session cannot
/// start (even on its owner, even at a higher priority) until every earlier one is final; when
/// one ends the next one's owner hears `Queued`; a waiting turn is not stolen; the session's
/// tasks wait on one node; the per-session bound refuses more.
#[test]
fn a_sessions_turns_start_one_at_a_time_in_order() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 4), hb(2, 4), hb(3, 4)]);
    let (r, _) = run(
        &mut s,
        1,
        vec![
            admit_in("s1", "conv", Priority::Low),
            admit_in("s2", "conv", Priority::Critical),
            admit_in("s3", "conv", Priority::Normal),
            admit("other", Priority::Normal),
        ],
    );
    let owner = task(&r[0]).owner.clone();
    assert_eq!(
        task(&r[1]).owner,
        owner,
        "a session's turns wait on one node"
    );
    assert_eq!(task(&r[2]).owner, owner);
    let o: NodeId = owner.as_deref().unwrap().parse().unwrap();
    // The later turns may not start first (the critical one included).
    let (r, _) = run(&mut s, 2, vec![start("s2", o), start("s3", o)]);
    for r in &r {
        assert!(
            matches!(r, Reply::Rejected(Rejection::SessionBusy { session, .. }) if session == "conv"),
            "{r:?}"
        );
    }
    assert!(!s.session_turn_ready(s.tasks.get("s2").unwrap()));
    // An idle node steals nothing of the session's waiting turns.
    let idle = [1, 2, 3].into_iter().find(|n| *n != o).unwrap();
    let (r, _) = run(
        &mut s,
        3,
        vec![Command::Steal {
            node: idle,
            max: 10,
        }],
    );
    if let Reply::Moved(m) = &r[0] {
        assert!(!m.iter().any(|id| id == "s2" || id == "s3"), "{m:?}");
    }
    // The first runs and ends (failed): the second's owner is told it may start now.
    let (r, _) = run(&mut s, 4, vec![start("s1", o)]);
    assert_eq!(task(&r[0]).status, TaskStatus::Running);
    let (_, ev) = run(
        &mut s,
        5,
        vec![Command::Finish {
            id: "s1".into(),
            epoch: 1,
            outcome: Box::new(Outcome::failed("provider_error", "boom")),
        }],
    );
    assert!(ev.contains(&Event::Queued {
        id: "s2".into(),
        owner: o
    }));
    let (r, _) = run(&mut s, 6, vec![start("s3", o), start("s2", o)]);
    assert!(matches!(
        &r[0],
        Reply::Rejected(Rejection::SessionBusy { .. })
    ));
    assert_eq!(task(&r[1]).status, TaskStatus::Running);
    // Its end lets the next one go.
    let (_, ev) = run(&mut s, 7, vec![finish("s2", 1, "ok")]);
    assert!(ev.contains(&Event::Queued {
        id: "s3".into(),
        owner: o
    }));
    // The bound: SESSION_WAITING_MAX live tasks per session.
    let cmds = (0..SESSION_WAITING_MAX + 1)
        .map(|i| admit_in(&format!("b{i}"), "busy", Priority::Normal))
        .collect();
    let (r, _) = run(&mut s, 8, cmds);
    assert!(r[..SESSION_WAITING_MAX]
        .iter()
        .all(|r| matches!(r, Reply::Task(_))));
    assert!(matches!(
        &r[SESSION_WAITING_MAX],
        Reply::Rejected(Rejection::SessionFull { .. })
    ));
}

/// Turns recorded through `apply`: at the batch's time, once per task (a retried write changes
/// nothing), a failed turn counts with no messages, the window bound holds; the session sticks
/// to the node that ran its last turn; `sessions_max` and the ttl forget the least recently
/// updated first; everything survives a snapshot round trip, and two replicas agree.
#[test]
fn recorded_turns_apply_once_stay_bounded_and_expire() {
    let mut a = R::default();
    run(&mut a, 0, vec![hb(1, 1), hb(2, 1)]);
    let mut b = a.clone();
    let batches: Vec<(u64, Vec<Command>)> = vec![
        (10, vec![turn("x", "t1", "one"), turn("x", "t1", "one")]),
        (20, vec![turn("x", "t2", "two"), turn("y", "t3", "hi")]),
        (30, vec![turn("x", "t4", "")]),
        (40, vec![turn("z", "t5", "z")]),
    ];
    for (now, cmds) in batches.clone() {
        run(&mut a, now, cmds.clone());
        run(&mut b, now, cmds);
    }
    assert!(a.s == b.s && a.d == b.d, "replicas agree");
    let x = a.session(&a.d, "x").unwrap();
    // t1 once, t2, failed t4: 3 turns; 4 messages at most (the window bound).
    assert_eq!(x.turns, 3);
    assert_eq!(x.messages.len(), 4);
    assert_eq!(x.messages[0].content, "user: one");
    assert_eq!(x.last_task.as_deref(), Some("t4"));
    assert_eq!(x.updated_at_ms, 30);
    assert_eq!(a.sessions_kept(&a.d), 3);
    assert_eq!(a.session_node(&a.d, "x"), Some(1));
    // Sticky: the next turn of `x` goes to node 1 while it is live.
    let (r, _) = run(&mut a, 41, vec![admit_in("n1", "x", Priority::Normal)]);
    assert_eq!(task(&r[0]).owner.as_deref(), Some("1"));
    // The bound (3): a fourth session makes the least recently updated (`y`, at 20) leave.
    run(&mut a, 50, vec![turn("w", "t6", "w")]);
    assert!(a.session(&a.d, "y").is_none());
    assert_eq!(a.sessions_kept(&a.d), 3);
    // Snapshot round trip keeps them.
    let restored = a.snapshot_round_trip();
    assert!(restored.s == a.s && restored.d == a.d);
    assert_eq!(restored.session(&restored.d, "x").unwrap().turns, 3);
    // Expiry: everything updated before 45 goes (x at 30, z at 40); at most `max` per command.
    let (r, _) = run(
        &mut a,
        60,
        vec![Command::SweepSessions {
            before_ms: 45,
            keep_max: 10,
            max: 1,
        }],
    );
    assert_eq!(r[0], Reply::Purged(1));
    let (r, _) = run(
        &mut a,
        60,
        vec![Command::SweepSessions {
            before_ms: 45,
            keep_max: 10,
            max: 10,
        }],
    );
    assert_eq!(r[0], Reply::Purged(1));
    assert!(a.session(&a.d, "x").is_none() && a.session(&a.d, "z").is_none());
    assert!(a.session(&a.d, "w").is_some());
    assert_eq!(a.sessions_kept(&a.d), 1);
    assert_eq!(a.session_node(&a.d, "x"), None);
}

/// A dead node's session tasks move together, to one live node, and keep their order.
#[test]
fn a_sessions_waiting_turns_move_together_on_failover() {
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 1), hb(2, 1), hb(3, 1)]);
    let (r, _) = run(
        &mut s,
        1,
        vec![
            admit_in("a", "conv", Priority::Normal),
            admit_in("b", "conv", Priority::Normal),
            admit_in("c", "conv", Priority::Normal),
        ],
    );
    let dead: NodeId = task(&r[0]).owner.as_deref().unwrap().parse().unwrap();
    run(&mut s, 2, vec![start("a", dead)]);
    // Only the others renew; the owner's lease runs out.
    let live: Vec<NodeId> = [1, 2, 3].into_iter().filter(|n| *n != dead).collect();
    run(&mut s, 900, live.iter().map(|n| hb(*n, 1)).collect());
    run(&mut s, 1500, vec![Command::Expire]);
    let owners: BTreeSet<Option<String>> = ["a", "b", "c"]
        .iter()
        .map(|id| s.tasks.get(*id).unwrap().owner.clone())
        .collect();
    assert_eq!(owners.len(), 1, "moved together: {owners:?}");
    assert_ne!(owners.into_iter().next().unwrap(), Some(dead.to_string()));
    assert!(s.session_turn_ready(s.tasks.get("a").unwrap()));
    assert!(!s.session_turn_ready(s.tasks.get("b").unwrap()));
}

/// The cost of replicated sessions, measured (printed; run with `--nocapture`): Raft bytes per
/// turn (one `RecordTurn` entry as encoded in the log) and the bytes sessions add to a
/// snapshot, for 20 sessions × 40 turns of a ~60-word question and a ~180-word answer, the
/// window at 200 messages. Asserted loosely: a turn's entry does not grow with the session.
#[test]
fn session_bytes_per_turn_and_in_a_snapshot() {
    use openclaw_proto::session::{SessionMessage, TurnUpdate};
    let words = |n: usize, seed: usize| -> String {
        (0..n)
            .map(|i| ["agent", "cluster", "node", "turn", "answer", "memory"][(i + seed) % 6])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = R::default();
    run(&mut s, 0, vec![hb(1, 4)]);
    let (sessions, turns) = (20usize, 40usize);
    let mut entry_bytes = Vec::new();
    for t in 0..turns {
        for k in 0..sessions {
            let (q, a) = (words(60, t + k), words(180, t * k));
            let msg = |role: &str, content: String| SessionMessage {
                role: role.into(),
                tokens: content.split(' ').count() as u32,
                content,
            };
            let req = Request {
                now_ms: 1_000 + (t * sessions + k) as u64,
                cmds: vec![Command::RecordTurn {
                    turn: Box::new(TurnUpdate {
                        session: format!("session-{k:04}"),
                        agent: "main".into(),
                        task_id: format!("0b6f1c2e-0000-4000-8000-{:012}", t * sessions + k),
                        fold: 0,
                        summary: None,
                        append: vec![msg("user", q), msg("assistant", a)],
                    }),
                    node: 1,
                    messages_max: 200,
                    sessions_max: 100_000,
                }],
            };
            entry_bytes.push(encode(&req).unwrap().len());
            s.apply(&req);
        }
    }
    let session_bytes: usize =
        s.d.0
            .iter()
            .filter(|(k, _)| [&b"v/"[..], b"V/", b"w/", b"v#"].contains(&&k[..2]))
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
    let control = encode(&s.s).unwrap().len();
    let (min, max) = (
        *entry_bytes.iter().min().unwrap(),
        *entry_bytes.iter().max().unwrap(),
    );
    let mean = entry_bytes.iter().sum::<usize>() as f64 / entry_bytes.len() as f64;
    println!(
        "sessions: {sessions} x {turns} turns: Raft entry per turn {min}..{max} bytes (mean {mean:.0}); \
         sessions in a snapshot {session_bytes} bytes ({} per session, {} per turn kept); control record {control} bytes",
        session_bytes / sessions,
        session_bytes / (sessions * turns)
    );
    assert!(
        max - min < 64,
        "a turn's entry carries the turn, not the session"
    );
    assert_eq!(s.sessions_kept(&s.d), sessions as u64);
}

/// A dead node's budget slice is its unsettled estimate: withheld and reported after its lease
/// lapses, reduced by a late settle, returned by the sweep after it expires — or at once when
/// the node comes back.
#[test]
fn a_dead_nodes_budget_slice_is_withheld_and_reported_until_it_expires() {
    let mut s = R::default();
    let lease = |node, want| budget_lease("2026-11", node, want);
    // Leases of 1000 ms from t=0: kept 10 leases after the lapse, until 11 000.
    run(
        &mut s,
        0,
        vec![hb(1, 1), hb(2, 1), lease(1, 300), lease(2, 200)],
    );
    assert!(s.dead_leases(500).is_empty(), "everyone is live");
    run(&mut s, 900, vec![hb(1, 1)]);
    // Node 2 lapsed at 1000: reported before the sweep, and after it.
    assert_eq!(
        s.dead_leases(1_200),
        vec![("total".to_string(), 2, 200, 0.0, 11_000)]
    );
    let (r, _) = run(&mut s, 1_500, vec![Command::Expire]);
    assert_eq!(r[0], Reply::Expired(vec![2]));
    assert_eq!(s.budget["total"].slices[&2].tokens, 200, "withheld");
    // Withheld: node 1 gets only what is free besides it.
    let (r, _) = run(&mut s, 1_600, vec![hb(1, 1), lease(1, 1000)]);
    assert_eq!(
        r[1],
        Reply::BudgetSlice {
            tokens: 800,
            cost_usd: 0.0
        }
    );
    // A settle of node 2 that arrives late (it was only cut off) lowers the estimate.
    let late = Command::Spend {
        id: "late".into(),
        node: 2,
        period: "2026-11".into(),
        scopes: vec!["total".into()],
        model: "m".into(),
        tokens: 40,
        cost_usd: 0.0,
        reserved_tokens: 50,
        reserved_cost_usd: 0.0,
    };
    run(&mut s, 2_000, vec![late]);
    assert_eq!(s.dead_leases(2_000)[0].2, 150);
    assert!(s.dead_leases_due(10_999).is_empty());
    assert_eq!(s.dead_leases_due(11_000), vec![2]);
    assert!(
        !s.dead_leases(11_000).iter().any(|d| d.1 == 2),
        "expired: no longer reported"
    );
    // The sweep after the expiry returns it to the pool.
    run(&mut s, 11_000, vec![hb(1, 1), Command::Expire]);
    assert!(!s.budget["total"].slices.contains_key(&2));
    // A node that comes back from the dead gives its old slice back at once.
    run(&mut s, 11_100, vec![hb(1, 1), lease(1, 100)]);
    let before = s.budget["total"].slices[&1].tokens;
    assert!(before > 0);
    run(&mut s, 13_000, vec![hb(2, 1), Command::Expire]);
    assert!(s.nodes[&1].dead, "node 1 lapsed at 12 100");
    assert_eq!(s.budget["total"].slices[&1].tokens, before, "withheld");
    run(&mut s, 13_100, vec![hb(1, 1)]);
    assert!(
        !s.budget["total"].slices.contains_key(&1),
        "returned on revival"
    );
    assert!(s.dead_leases(13_100).is_empty());
}

/// `RemoveSession` (DELETE /api/sessions/{id}): removes the session, its sticky node and its
/// place in the expiry index on every replica alike; the count follows; an unknown or already
/// removed session changes nothing; a later turn starts a fresh session.
#[test]
fn removing_a_session_forgets_it_everywhere_once() {
    let mut a = R::default();
    run(&mut a, 0, vec![hb(1, 1), hb(2, 1)]);
    run(
        &mut a,
        10,
        vec![turn("x", "t1", "one"), turn("y", "t2", "hi")],
    );
    let mut b = a.clone();
    let remove = |id: &str| Command::RemoveSession { id: id.into() };
    // (command, reply, sessions kept after)
    let table: Vec<(Command, Reply, u64)> = vec![
        (remove("x"), Reply::Purged(1), 1),
        (remove("x"), Reply::Purged(0), 1),
        (remove("nope"), Reply::Purged(0), 1),
    ];
    for (i, (cmd, want, kept)) in table.into_iter().enumerate() {
        let (r, _) = run(&mut a, 20, vec![cmd.clone()]);
        run(&mut b, 20, vec![cmd]);
        assert_eq!(r[0], want, "row {i}");
        assert_eq!(a.sessions_kept(&a.d), kept, "row {i}");
        assert!(a.s == b.s && a.d == b.d, "row {i}: replicas agree");
    }
    assert!(a.session(&a.d, "x").is_none());
    assert_eq!(a.session_node(&a.d, "x"), None);
    assert!(a.session(&a.d, "y").is_some());
    // The expiry index holds no trace of `x`: a sweep of everything finds only `y`.
    let (r, _) = run(
        &mut a,
        30,
        vec![Command::SweepSessions {
            before_ms: 1_000,
            keep_max: 10,
            max: 10,
        }],
    );
    assert_eq!(r[0], Reply::Purged(1));
    assert_eq!(a.sessions_kept(&a.d), 0);
    // A new turn of `x` starts over.
    run(&mut a, 40, vec![turn("x", "t3", "again")]);
    let x = a.session(&a.d, "x").unwrap();
    assert_eq!((x.turns, x.messages.len()), (1, 2));
    let restored = a.snapshot_round_trip();
    assert!(restored.s == a.s && restored.d == a.d);
}

/// Agent memory files (`PutMemory` / `DeleteMemory`): written and removed on every replica
/// alike, usage kept right, each bound refusing a write that would pass it (nothing changed),
/// bad paths refused, an event per change, and all of it in a snapshot.
#[test]
fn memory_files_are_replicated_within_their_bounds() {
    use openclaw_proto::memory::{MEMORY_AGENT_FILES_MAX, MEMORY_FILE_MAX_BYTES};
    let put = |agent: &str, path: &str, content: &str| Command::PutMemory {
        agent: agent.into(),
        path: path.into(),
        content: content.into(),
    };
    let del = |agent: &str, path: &str| Command::DeleteMemory {
        agent: agent.into(),
        path: path.into(),
    };
    let refused = |r: &Reply, kind: &str| {
        matches!(
            (r, kind),
            (Reply::Rejected(Rejection::MemoryRefused(_)), "path")
                | (Reply::Rejected(Rejection::MemoryFull(_)), "full")
        )
    };
    let mut a = R::default();
    let mut b = R::default();
    let big = "x".repeat(MEMORY_FILE_MAX_BYTES);
    // (command, reply kind, usage of `main` after: (bytes, files))
    let table: Vec<(Command, &str, (u64, u64))> = vec![
        (put("main", "MEMORY.md", "team uses Rust"), "ok", (14, 1)),
        (put("main", "memory/a.md", "alpha"), "ok", (19, 2)),
        // Rewriting a file counts its new size, not both.
        (put("main", "memory/a.md", "alpha beta"), "ok", (24, 2)),
        (put("main", "../etc/passwd", "x"), "path", (24, 2)),
        (put("main", "SOUL.md", "x"), "path", (24, 2)),
        (put("../x", "MEMORY.md", "x"), "path", (24, 2)),
        (
            put("main", "memory/big.md", &format!("{big}y")),
            "full",
            (24, 2),
        ),
        (
            put("main", "memory/big.md", &big),
            "ok",
            (24 + big.len() as u64, 3),
        ),
        (del("main", "memory/big.md"), "purged1", (24, 2)),
        (del("main", "memory/big.md"), "purged0", (24, 2)),
        (put("ops", "MEMORY.md", "ops memory"), "ok", (24, 2)),
    ];
    for (i, (cmd, want, usage)) in table.into_iter().enumerate() {
        let (ra, eva) = run(&mut a, 10, vec![cmd.clone()]);
        let (rb, _) = run(&mut b, 10, vec![cmd]);
        assert_eq!(ra, rb, "row {i}");
        let ok = match want {
            "ok" => ra[0] == Reply::Ok,
            "purged1" => ra[0] == Reply::Purged(1),
            "purged0" => ra[0] == Reply::Purged(0),
            kind => refused(&ra[0], kind),
        };
        assert!(ok, "row {i}: {:?}", ra[0]);
        let changed = matches!(want, "ok" | "purged1");
        assert_eq!(
            eva.iter()
                .filter(|e| matches!(e, Event::MemoryChanged { .. }))
                .count(),
            usize::from(changed),
            "row {i}: one event per change"
        );
        assert_eq!(a.memory_usage(&a.d, "main"), usage, "row {i}");
        assert!(a.d == b.d, "row {i}: replicas agree");
    }
    assert_eq!(
        a.memory_file(&a.d, "main", "memory/a.md").as_deref(),
        Some(&b"alpha beta"[..])
    );
    let files: Vec<String> = a
        .memory_files(&a.d, "main", 100)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(files, ["MEMORY.md", "memory/a.md"]);
    assert_eq!(a.memory_agents(&a.d), ["main", "ops"]);
    let restored = a.snapshot_round_trip();
    assert!(restored.d == a.d);
    assert_eq!(restored.memory_usage(&restored.d, "ops"), (10, 1));
    // The per-agent bound on files: the next file past it is refused.
    let mut c = R::default();
    let many: Vec<Command> = (0..MEMORY_AGENT_FILES_MAX)
        .map(|n| put("main", &format!("memory/{n}.md"), "x"))
        .collect();
    let (r, _) = run(&mut c, 10, many);
    assert!(r.iter().all(|r| *r == Reply::Ok));
    let (r, _) = run(&mut c, 10, vec![put("main", "memory/one-more.md", "x")]);
    assert!(refused(&r[0], "full"), "{:?}", r[0]);
    // Removing every file forgets the agent.
    let (r, _) = run(&mut a, 20, vec![del("ops", "MEMORY.md")]);
    assert_eq!(r[0], Reply::Purged(1));
    assert_eq!(a.memory_agents(&a.d), ["main"]);
}

/// An ask tops the node's slice up to what it asked for; it does not add to it. The workers of
/// a node that find its slice short at once each ask (and a restarted node asks again): when
/// asks added up, an overload chaos run (`openclaw-chaos --seed 7 --rounds 3 --round-seconds 8
/// --rate 150`) had two nodes holding 999.95 M of a 10⁹-token budget with a few hundred
/// thousand spent, and the third refused "budget reservation refused" for up to two minutes.
#[test]
fn asks_top_a_slice_up_so_no_node_hoards_the_budget() {
    let mut s = R::default();
    let lease = |node, want| budget_lease("2026-11", node, want);
    // Node 1's four workers ask for 150 of the 1000 at once: it holds 150, not 600.
    let (r, _) = run(&mut s, 0, (0..4).map(|_| lease(1, 150)).collect());
    let held: Vec<u64> = r
        .iter()
        .map(|r| match r {
            Reply::BudgetSlice { tokens, .. } => *tokens,
            _ => panic!("{r:?}"),
        })
        .collect();
    assert_eq!(held, vec![150, 150, 150, 150]);
    // Node 2 the same; node 3, asking last, gets its whole ask.
    run(&mut s, 1, (0..4).map(|_| lease(2, 150)).collect());
    let (r, _) = run(&mut s, 2, vec![lease(3, 150)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 150,
            cost_usd: 0.0
        }
    );
    // Spend settles part of node 1's slice; its next ask tops it up again.
    let spend = Command::Spend {
        id: "s-topup".into(),
        node: 1,
        period: "2026-11".into(),
        scopes: vec!["total".into()],
        model: "m".into(),
        tokens: 80,
        cost_usd: 0.0,
        reserved_tokens: 100,
        reserved_cost_usd: 0.0,
    };
    run(&mut s, 3, vec![spend]);
    assert_eq!(s.budget["total"].slices[&1].tokens, 50);
    let (r, _) = run(&mut s, 4, vec![lease(1, 150)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 150,
            cost_usd: 0.0
        }
    );
    // A larger ask (fewer live nodes, or a larger call) grows it to that ask.
    let (r, _) = run(&mut s, 5, vec![lease(1, 400)]);
    assert_eq!(
        r[0],
        Reply::BudgetSlice {
            tokens: 400,
            cost_usd: 0.0
        }
    );
    let t = &s.budget["total"];
    let held: u64 = t.slices.values().map(|x| x.tokens).sum();
    assert_eq!((t.spent_tokens, held), (80, 700));
}
