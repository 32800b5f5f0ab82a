//! Load-balancing decisions: which release pool a request goes to, and which instance inside it.
//!
//! Everything here is pure and deterministic: randomness is passed in, so tests use a seeded RNG
//! and the runtime a thread-local one.

mod cohort;
mod instance;
mod smooth;

pub use cohort::{COHORTS, cohort_pool, parse_cohort, random_cohort};
pub use instance::{p2c, round_robin};
pub use smooth::SmoothWeighted;
