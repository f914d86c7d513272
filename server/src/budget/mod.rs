//! Budgets (§18.7): the pure rules, and the accountant actor that owns the counters, the
//! reservations, the thresholds and the pause/downgrade gate.

pub mod accountant;
pub mod rules;
