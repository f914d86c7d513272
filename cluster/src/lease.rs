//! Pure lease arithmetic for cluster-wide limits.
//!
//! Budgets: a scope's allowance is `limit − spent − Σ slices`; a node asks for a slice and gets
//! at most that. Its slice covers its reservations in flight, so the sum of everything granted
//! never passes the limit; spend can pass it only by what real usage exceeds the reservations.
//! An ask **tops the node's slice up** to what it asked for ([`budget_room`]), it does not add to
//! it: the workers of one node that find the slice short at the same moment each ask, and
//! restarts ask again, and adding made a node's slice grow by every ask — busy nodes (whose
//! slices are never idle, so never returned) ended up holding the whole allowance while another
//! node was refused with budget left.
//!
//! Rate limits are **sliding** windows. A window of `W` ms is cut into `span` buckets of
//! `W / span` ms ([`rate_buckets`]); a slice is granted for one bucket and spent only inside it,
//! and the grants of any `span + 1` consecutive buckets stay within the limit. Any `W`-long
//! interval touches at most `span + 1` buckets, so no sliding window at the provider sees more
//! than the limit (clock skew between nodes and grant-to-arrival delays aside). The price: the
//! limit holds over `W + W / span` rather than `W` (1/`span` of the rate, ≤ 20 %). Slices are
//! never returned (the holder may have used them).
//!
//! A **dead node's budget slice** (its lease lapsed in the cluster's liveness view) is what it
//! was granted and never settled: calls it had in flight may have reached the provider and been
//! billed without a `Spend`. The slice is that estimate's upper bound ([`dead_lease`]). It stays
//! withheld from the allowance and reported (`GET /api/budget` → `unsettled_dead_nodes`) for
//! [`DEAD_LEASE_KEEP_LEASES`] node leases after the last one lapsed, then `Expire` returns it.

use std::collections::BTreeMap;

use crate::types::{BudgetLimit, RateLimit};

/// What may still be granted from a budget scope: `(tokens, cost)`; `None` = unlimited.
pub fn budget_free(
    limit: &BudgetLimit,
    spent_tokens: u64,
    spent_cost: f64,
    slices: impl Iterator<Item = (u64, f64)>,
) -> (Option<u64>, Option<f64>) {
    let (held_t, held_c) = slices.fold((0u64, 0f64), |(t, c), (st, sc)| (t + st, c + sc));
    (
        limit
            .tokens
            .map(|l| l.saturating_sub(spent_tokens.saturating_add(held_t))),
        limit.cost_usd.map(|l| (l - spent_cost - held_c).max(0.0)),
    )
}

/// What an ask for `(want_tokens, want_cost)` from a node holding `held` may still be granted:
/// the difference that tops its slice up to the ask, never more (pure).
pub fn budget_room(held: (u64, f64), want_tokens: u64, want_cost: f64) -> (u64, f64) {
    (
        want_tokens.saturating_sub(held.0),
        (want_cost - held.1).max(0.0),
    )
}

/// The grant for a request of `(want_tokens, want_cost)` given what is free. Both dimensions are
/// granted in the same proportion of the request, so a slice never holds tokens it cannot pay
/// for.
pub fn budget_grant(
    free: (Option<u64>, Option<f64>),
    want_tokens: u64,
    want_cost: f64,
) -> (u64, f64) {
    let mut ratio: f64 = 1.0;
    if let Some(ft) = free.0 {
        if want_tokens > 0 {
            ratio = ratio.min(ft as f64 / want_tokens as f64);
        }
    }
    if let Some(fc) = free.1 {
        if want_cost > 0.0 {
            ratio = ratio.min(fc / want_cost);
        }
    }
    let ratio = ratio.clamp(0.0, 1.0);
    let mut tokens = (want_tokens as f64 * ratio).floor() as u64;
    if let Some(ft) = free.0 {
        tokens = tokens.min(ft);
    }
    let mut cost = want_cost * ratio;
    if let Some(fc) = free.1 {
        cost = cost.min(fc);
    }
    (tokens, cost)
}

/// The grant of a rate-limit slice for a minute: `(requests, tokens)`. A slice without a request
/// is useless, so when requests are exhausted nothing is granted.
pub fn rate_grant(
    limit: &RateLimit,
    granted_requests: u64,
    granted_tokens: u64,
    want_requests: u64,
    want_tokens: u64,
) -> (u64, u64) {
    let requests = match limit.requests {
        Some(l) => want_requests.min(l.saturating_sub(granted_requests)),
        None => want_requests,
    };
    if requests == 0 && want_requests > 0 {
        return (0, 0);
    }
    let tokens = match limit.tokens {
        Some(l) => want_tokens.min(l.saturating_sub(granted_tokens)),
        None => want_tokens,
    };
    (requests, tokens)
}

/// Take an unspent `(requests, tokens)` back out of `bucket`'s grants (never below zero); a
/// bucket left with nothing is removed, one no longer kept is left alone.
pub fn return_rate(
    buckets: &mut BTreeMap<u64, (u64, u64)>,
    bucket: u64,
    requests: u64,
    tokens: u64,
) {
    if let Some(g) = buckets.get_mut(&bucket) {
        g.0 = g.0.saturating_sub(requests);
        g.1 = g.1.saturating_sub(tokens);
        if *g == (0, 0) {
            buckets.remove(&bucket);
        }
    }
}

/// How big a slice a node should ask for: a fair share of the limit among `nodes`, at least what
/// the call at hand needs, at most `cap`.
pub fn slice_size(limit: Option<u64>, nodes: usize, need: u64, cap: u64) -> u64 {
    match limit {
        Some(l) => (l / (2 * nodes.max(1) as u64)).max(need).min(cap.max(need)),
        None => need.max(1),
    }
}

/// How long a dead node's budget slice stays withheld and reported after its liveness lease
/// lapsed, in lengths of that lease (`cluster.node_lease_ms`, 3 s by default: 30 s).
pub const DEAD_LEASE_KEEP_LEASES: u64 = 10;

/// The unsettled estimate of one node's budget slice at `now`: `Some((tokens, cost, expires
/// ms))` when the node is down (`live` false: dead, or its lease `lease_until_ms` lapsed) and
/// holds something, until [`DEAD_LEASE_KEEP_LEASES`] × its lease length (`lease_until_ms −
/// last_heartbeat_ms`) after the lapse; `None` otherwise. The slice is granted − settled, so
/// it bounds what the node may have spent without settling.
pub fn dead_lease(
    slice: (u64, f64),
    live: bool,
    lease_until_ms: u64,
    last_heartbeat_ms: u64,
    now: u64,
) -> Option<(u64, f64, u64)> {
    let expires = dead_lease_expires(lease_until_ms, last_heartbeat_ms);
    let holds = slice.0 > 0 || slice.1 > 0.0;
    (!live && holds && lease_until_ms <= now && now < expires)
        .then_some((slice.0, slice.1, expires))
}

/// When a lapsed node's slice stops being withheld: [`DEAD_LEASE_KEEP_LEASES`] leases after
/// `lease_until_ms`.
pub fn dead_lease_expires(lease_until_ms: u64, last_heartbeat_ms: u64) -> u64 {
    let lease = lease_until_ms.saturating_sub(last_heartbeat_ms).max(1);
    lease_until_ms.saturating_add(lease.saturating_mul(DEAD_LEASE_KEEP_LEASES))
}

/// Most buckets a rate window is cut into (the state keeps `span + 1` entries per scope).
pub const RATE_SPAN_MAX: u64 = 60;
/// Longest bucket: a call that finds the window used up waits at most this long before asking
/// again, so a raised limit is seen within it.
pub const RATE_BUCKET_MAX_MS: u64 = 1000;
/// Fewest buckets a window is cut into: the limit then holds over at most `W + W / 5`.
pub const RATE_SPAN_MIN: u64 = 5;

/// How a rate window of `window_ms` is cut: `(bucket_ms, span)` with `bucket_ms × span =
/// window_ms` (rounded down to whole ms), buckets of at most [`RATE_BUCKET_MAX_MS`] where the
/// span allows, and `span` within [`RATE_SPAN_MIN`]..=[`RATE_SPAN_MAX`].
pub fn rate_buckets(window_ms: u64) -> (u64, u64) {
    let window_ms = window_ms.max(RATE_SPAN_MIN);
    let span = window_ms
        .div_ceil(RATE_BUCKET_MAX_MS)
        .clamp(RATE_SPAN_MIN, RATE_SPAN_MAX);
    (window_ms / span, span)
}

/// Sum of grants (per node or per bucket; for checks and status).
pub fn total_granted<K>(grants: &BTreeMap<K, (u64, u64)>) -> (u64, u64) {
    grants
        .values()
        .fold((0, 0), |(r, t), (nr, nt)| (r + nr, t + nt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_nodes_slice_is_its_unsettled_estimate_until_it_expires() {
        // Lease of 1000 ms: last heartbeat at 0, lapsed at 1000, kept until 1000 + 10 × 1000.
        let (until, hb) = (1_000, 0);
        // (case, slice, live, now, want)
        let cases = [
            ("live node", (300, 0.5), true, 2_000, None),
            ("within its lease", (300, 0.5), false, 999, None),
            ("lapsed", (300, 0.5), false, 1_000, Some((300, 0.5, 11_000))),
            (
                "declared dead",
                (300, 0.5),
                false,
                5_000,
                Some((300, 0.5, 11_000)),
            ),
            (
                "last moment",
                (300, 0.5),
                false,
                10_999,
                Some((300, 0.5, 11_000)),
            ),
            ("expired", (300, 0.5), false, 11_000, None),
            ("holds nothing", (0, 0.0), false, 2_000, None),
            (
                "cost only",
                (0, 0.25),
                false,
                2_000,
                Some((0, 0.25, 11_000)),
            ),
        ];
        for (case, slice, live, now, want) in cases {
            assert_eq!(dead_lease(slice, live, until, hb, now), want, "{case}");
        }
        // A 3 s lease (the default) keeps it 30 s; a node never heard of expires at once.
        assert_eq!(dead_lease_expires(13_000, 10_000), 43_000);
        assert_eq!(dead_lease_expires(0, 0), 10);
    }

    #[test]
    fn budget_free_table() {
        let l = BudgetLimit {
            tokens: Some(1000),
            cost_usd: Some(1.0),
        };
        let cases = [
            ("nothing used", 0, 0.0, vec![], (Some(1000), Some(1.0))),
            (
                "spent and held",
                300,
                0.25,
                vec![(100, 0.25), (50, 0.0)],
                (Some(550), Some(0.5)),
            ),
            (
                "overspent clamps to zero",
                1200,
                2.0,
                vec![(10, 0.1)],
                (Some(0), Some(0.0)),
            ),
        ];
        for (name, st, sc, slices, want) in cases {
            assert_eq!(budget_free(&l, st, sc, slices.into_iter()), want, "{name}");
        }
        let unlimited = BudgetLimit::default();
        assert_eq!(
            budget_free(&unlimited, 5, 5.0, std::iter::empty()),
            (None, None)
        );
    }

    #[test]
    fn budget_room_table() {
        // (held, want) -> room
        let cases = [
            ((0, 0.0), (100, 1.0), (100, 1.0)),
            ((40, 0.4), (100, 1.0), (60, 0.6)),
            ((100, 1.0), (100, 1.0), (0, 0.0)),
            ((900, 9.0), (100, 1.0), (0, 0.0)),
            ((0, 0.0), (0, 0.0), (0, 0.0)),
            ((50, 0.0), (100, 0.0), (50, 0.0)),
        ];
        for (held, (wt, wc), want) in cases {
            let (t, c) = budget_room(held, wt, wc);
            assert_eq!(t, want.0, "{held:?} {wt}");
            assert!((c - want.1).abs() < 1e-9, "{held:?} {wc}");
        }
    }

    #[test]
    fn budget_grant_table() {
        let cases = [
            ("unlimited", (None, None), 100, 0.5, (100, 0.5)),
            ("enough", (Some(500), Some(1.0)), 100, 0.5, (100, 0.5)),
            ("tokens short", (Some(50), Some(1.0)), 100, 0.5, (50, 0.25)),
            ("cost short", (Some(500), Some(0.1)), 100, 0.5, (20, 0.1)),
            ("nothing free", (Some(0), Some(1.0)), 100, 0.5, (0, 0.0)),
        ];
        for (name, free, wt, wc, want) in cases {
            let (t, c) = budget_grant(free, wt, wc);
            assert_eq!(t, want.0, "{name}");
            assert!((c - want.1).abs() < 1e-9, "{name}: {c}");
        }
    }

    #[test]
    fn rate_grant_table() {
        let l = RateLimit {
            requests: Some(10),
            tokens: Some(1000),
        };
        let cases = [
            ("fresh minute", 0, 0, 3, 300, (3, 300)),
            ("partial", 8, 900, 5, 300, (2, 100)),
            ("requests exhausted", 10, 0, 1, 10, (0, 0)),
            (
                "tokens exhausted still grants requests",
                1,
                1000,
                1,
                10,
                (1, 0),
            ),
        ];
        for (name, gr, gt, wr, wt, want) in cases {
            assert_eq!(rate_grant(&l, gr, gt, wr, wt), want, "{name}");
        }
        assert_eq!(rate_grant(&RateLimit::default(), 99, 99, 2, 5), (2, 5));
    }

    #[test]
    fn rate_bucket_table() {
        let cases = [
            ("1 s window: 5 buckets of 200 ms", 1_000, (200, 5)),
            ("5 s window: 1 s buckets", 5_000, (1_000, 5)),
            ("10 s window", 10_000, (1_000, 10)),
            ("a minute: 60 buckets of 1 s", 60_000, (1_000, 60)),
            ("an hour: capped at 60 buckets", 3_600_000, (60_000, 60)),
            ("odd width rounds the bucket down", 7_500, (937, 8)),
        ];
        for (name, window, want) in cases {
            assert_eq!(rate_buckets(window), want, "{name}");
            let (b, span) = rate_buckets(window);
            assert!(b * span <= window && window - b * span < span, "{name}");
        }
    }

    #[test]
    fn slice_sizes() {
        assert_eq!(slice_size(Some(60), 3, 1, 100), 10);
        assert_eq!(slice_size(Some(4), 3, 1, 100), 1);
        assert_eq!(slice_size(Some(6000), 3, 10, 50), 50);
        assert_eq!(slice_size(None, 3, 7, 50), 7);
    }
}
