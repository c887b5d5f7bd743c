//! Alarms and range-safety boundaries (issue 25), as pure code: the rule file
//! ([`rules`]), boundaries and the impact point ([`geometry`], [`import`]), the evaluator
//! that turns samples into alarm transitions ([`eval`]); the transition as it goes on the
//! bus is tspi-core's ([`event`]), which every reader of the bus shares.
//!
//! **Architecture Invariant:** no I/O and no clock: the `alarmer` daemon feeds it the
//! bus's records in stream order and the time, so its output is a function of its input
//! (what makes a restarted daemon publish the same transitions under the same ids).

pub mod eval;
pub use tspi_core::alarm as event;
pub mod geometry;
pub mod import;
pub mod rules;

pub use eval::{Evaluator, Sample};
pub use event::{
    AlarmEvent, EventKind, Level, RuleKind, CONTROL_SUBJECT, EVENT_PREFIX, STREAM_SUBJECT,
};
pub use rules::{Check, Rule, RuleSet, RulesError};
