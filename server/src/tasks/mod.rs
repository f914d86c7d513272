//! Tasks: admission, the ledger (ownership, epochs, transitions), the ready queue's order, the
//! scheduler actor, the workers that run tasks, and callback delivery.

pub mod delivery;
pub mod ledger;
pub mod queue;
pub mod scheduler;
pub mod worker;
