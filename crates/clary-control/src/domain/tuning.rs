//! Hyperparameter tuning: what a tuning job searches (its ranges, objective and limits) and
//! the pure decisions of its search: which hyperparameters the next trial gets
//! ([`strategy::propose`]) and whether a running trial should stop early
//! ([`strategy::should_stop`]). Trials are ordinary training jobs.

pub mod strategy;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `ScalingType` of a numeric range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scaling {
    Auto,
    Linear,
    Logarithmic,
    ReverseLogarithmic,
}

/// One entry of `ParameterRanges`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParameterRange {
    Integer {
        name: String,
        min: i64,
        max: i64,
        scaling: Scaling,
    },
    Continuous {
        name: String,
        min: f64,
        max: f64,
        scaling: Scaling,
    },
    Categorical {
        name: String,
        values: Vec<String>,
    },
}

impl ParameterRange {
    pub fn name(&self) -> &str {
        match self {
            ParameterRange::Integer { name, .. }
            | ParameterRange::Continuous { name, .. }
            | ParameterRange::Categorical { name, .. } => name,
        }
    }
}

/// `HyperParameterTuningJobConfig.Strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategyKind {
    Random,
    Grid,
    Bayesian,
    Hyperband,
}

/// `HyperParameterTuningJobObjective.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectiveType {
    Maximize,
    Minimize,
}

impl ObjectiveType {
    /// Whether `a` is a better objective value than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            ObjectiveType::Maximize => a > b,
            ObjectiveType::Minimize => a < b,
        }
    }
}

/// What the search knows of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialOutcome {
    /// The tuned hyperparameters it ran with, as sent to the trial.
    pub values: BTreeMap<String, String>,
    /// The objective metric's values in the order the trial reported them (its intermediate
    /// results, one per epoch or step as the script prints them).
    pub reports: Vec<f64>,
    /// The final objective, once the trial completed; `None` while it runs or if it failed.
    pub objective: Option<f64>,
    pub running: bool,
}

/// How running trials may be stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopRule {
    /// `TrainingJobEarlyStoppingType: Off`.
    Off,
    /// `Auto`: SageMaker's median rule.
    Median,
    /// The Hyperband strategy's successive halving at rungs of reports.
    Hyperband,
}
