//! A tuning job: its spec, its state, and the pure step that decides, from what its trials
//! did so far, which trials to launch, which to stop early and when the job ends.

use super::job::JobStatus;
use super::training::TrainingJobSpec;
use super::tuning::strategy::{propose, should_stop};
use super::tuning::{ObjectiveType, ParameterRange, StopRule, StrategyKind, TrialOutcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The hyperparameter every trial gets, naming the objective metric (the SDK's `attach`
/// removes it and fails when it is missing).
pub const OBJECTIVE_HYPERPARAMETER: &str = "_tuning_objective_metric";

/// What a tuning job searches and within which limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuningJobSpec {
    pub strategy: StrategyKind,
    pub objective_metric: String,
    pub objective_type: ObjectiveType,
    pub ranges: Vec<ParameterRange>,
    pub max_trials: u32,
    pub max_parallel: u32,
    pub max_runtime_secs: Option<u64>,
    pub stop_rule: StopRule,
    pub seed: u64,
    /// `TuningJobCompletionCriteria.TargetObjectiveMetricValue`: stop once a trial reaches it.
    pub target_objective: Option<f64>,
    /// `TuningJobCompletionCriteria.BestObjectiveNotImproving.MaxNumberOfTrainingJobsNotImproving`:
    /// stop once that many trials in a row ended without beating the best.
    #[serde(default)]
    pub max_not_improving: Option<u32>,
    /// The trials' training spec; its hyperparameters are the static ones.
    pub training: TrainingJobSpec,
    /// `WarmStartConfig.ParentHyperParameterTuningJobs`: their trials inform the search.
    #[serde(default)]
    pub parents: Vec<String>,
    /// `TrainingJobDefinitions` (several estimators): trials take them in turn, each searching
    /// its own ranges for its own objective metric. Empty for one `TrainingJobDefinition`
    /// (the fields above).
    #[serde(default)]
    pub definitions: Vec<Definition>,
}

/// One of several `TrainingJobDefinitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    pub objective_metric: String,
    pub ranges: Vec<ParameterRange>,
    pub training: TrainingJobSpec,
}

impl TuningJobSpec {
    /// The definition trial number `index` runs (`None` with a single definition).
    pub fn definition_for(&self, index: u32) -> Option<&Definition> {
        let n = self.definitions.len() as u32;
        (n > 0).then(|| &self.definitions[(index % n) as usize])
    }

    /// A trial's objective metric and training spec.
    pub fn trial_parts(&self, definition: Option<&str>) -> (&str, &TrainingJobSpec) {
        match definition.and_then(|d| self.definitions.iter().find(|x| x.name == d)) {
            Some(d) => (&d.objective_metric, &d.training),
            None => (&self.objective_metric, &self.training),
        }
    }
}

/// `HyperParameterTuningJobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuningStatus {
    InProgress,
    Completed,
    Failed,
    Stopping,
    Stopped,
}

impl TuningStatus {
    pub const ALL: [TuningStatus; 5] = [
        TuningStatus::InProgress,
        TuningStatus::Completed,
        TuningStatus::Failed,
        TuningStatus::Stopping,
        TuningStatus::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TuningStatus::InProgress => "InProgress",
            TuningStatus::Completed => "Completed",
            TuningStatus::Failed => "Failed",
            TuningStatus::Stopping => "Stopping",
            TuningStatus::Stopped => "Stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TuningStatus::Completed | TuningStatus::Failed | TuningStatus::Stopped
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TuningJob {
    pub name: String,
    pub arn: String,
    pub spec: TuningJobSpec,
    /// The request as the edge received it, for the edge to echo.
    pub echo: String,
    pub status: TuningStatus,
    pub failure_reason: Option<String>,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub end_time: Option<f64>,
}

/// A trial as the tuning job sees it: its training job's state and what it reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub name: String,
    pub index: u32,
    /// Its `TrainingJobDefinitionName`, with several definitions.
    pub definition: Option<String>,
    pub values: BTreeMap<String, String>,
    /// `None` when the training job is not created yet (a launch the server did not finish).
    pub status: Option<JobStatus>,
    /// The objective metric's values in report order.
    pub reports: Vec<f64>,
    pub early_stopped: bool,
}

impl Trial {
    pub fn running(&self) -> bool {
        self.status.is_none_or(|s| !s.is_terminal())
    }

    /// The trial's objective: its last report once it completed or was stopped early.
    pub fn objective(&self) -> Option<f64> {
        match self.status {
            Some(JobStatus::Completed) => self.reports.last().copied(),
            Some(JobStatus::Stopped) if self.early_stopped => self.reports.last().copied(),
            _ => None,
        }
    }

    fn outcome(&self) -> TrialOutcome {
        TrialOutcome {
            values: self.values.clone(),
            reports: self.reports.clone(),
            objective: self.objective(),
            running: self.running(),
        }
    }
}

/// The trial's training job name: `<tuning job>-<3-digit index>-<8 hex>`, as SageMaker names
/// them (a tuning job's name is 32 characters at most, so this fits 63).
pub fn trial_name(tuning_job: &str, index: u32, hex8: &str) -> String {
    format!("{tuning_job}-{:03}-{hex8}", index + 1)
}

/// A trial to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub index: u32,
    pub definition: Option<String>,
    pub values: BTreeMap<String, String>,
}

/// What one step of a tuning job does.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// New trials.
    pub launch: Vec<Launch>,
    /// Running trials to stop early (names).
    pub stop_early: Vec<String>,
    /// Running trials to stop because the tuning job is ending.
    pub stop: Vec<String>,
    /// The job's new status and why, when it changes.
    pub status: Option<(TuningStatus, Option<String>)>,
}

impl TuningJob {
    /// The best trial so far: the best objective among trials that have one.
    pub fn best<'t>(&self, trials: &'t [Trial]) -> Option<&'t Trial> {
        let kind = self.spec.objective_type;
        trials
            .iter()
            .filter_map(|t| t.objective().map(|o| (t, o)))
            .reduce(|a, b| if kind.better(b.1, a.1) { b } else { a })
            .map(|(t, _)| t)
    }

    /// How many trials, in the order they were launched, ended since the best objective last
    /// improved (`TuningJobCompletionDetails.NumberOfTrainingJobsObjectiveNotImproving`).
    pub fn not_improving(&self, trials: &[Trial]) -> u32 {
        let mut best: Option<f64> = None;
        let mut since = 0;
        let mut ended: Vec<&Trial> = trials.iter().filter(|t| !t.running()).collect();
        ended.sort_by_key(|t| t.index);
        for t in ended {
            match (t.objective(), best) {
                (Some(v), None) => {
                    best = Some(v);
                    since = 0;
                }
                (Some(v), Some(b)) if self.spec.objective_type.better(v, b) => {
                    best = Some(v);
                    since = 0;
                }
                _ => since += 1,
            }
        }
        since
    }

    /// One step: stop what should stop, launch what fits, and end the job when it is done.
    /// `prior` are the trials of the parent jobs a warm start names: the strategy learns from
    /// them, and they count toward no limit of this job.
    pub fn step(&self, trials: &[Trial], prior: &[TrialOutcome], now: f64) -> Plan {
        let mut plan = Plan::default();
        let running: Vec<&Trial> = trials.iter().filter(|t| t.running()).collect();
        let stopping = self.status == TuningStatus::Stopping;
        let timed_out = self
            .spec
            .max_runtime_secs
            .is_some_and(|m| now - self.creation_time >= m as f64);
        let target_reached = self.spec.target_objective.is_some_and(|target| {
            self.best(trials)
                .and_then(Trial::objective)
                .is_some_and(|best| best == target || self.spec.objective_type.better(best, target))
        });
        let stalled = self
            .spec
            .max_not_improving
            .is_some_and(|n| self.not_improving(trials) >= n);
        if stopping || timed_out || target_reached || stalled {
            plan.stop = running.iter().map(|t| t.name.clone()).collect();
            if running.is_empty() {
                plan.status = Some(if stopping {
                    (TuningStatus::Stopped, None)
                } else {
                    self.ending(trials)
                });
            }
            return plan;
        }
        let outcomes: Vec<TrialOutcome> = trials.iter().map(Trial::outcome).collect();
        for (i, t) in trials.iter().enumerate() {
            if !t.running() || t.status.is_none() {
                continue;
            }
            // Trials of other definitions measure another objective.
            let others: Vec<TrialOutcome> = outcomes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i && trials[*j].definition == t.definition)
                .map(|(_, o)| o.clone())
                .collect();
            if should_stop(
                self.spec.stop_rule,
                self.spec.objective_type,
                &outcomes[i],
                &others,
            ) {
                plan.stop_early.push(t.name.clone());
            }
        }
        let mut history: Vec<(Option<String>, TrialOutcome)> =
            prior.iter().map(|o| (None, o.clone())).collect();
        history.extend(
            trials
                .iter()
                .zip(outcomes)
                .map(|(t, o)| (t.definition.clone(), o)),
        );
        let mut launched = trials.len() as u32;
        // A trial told to stop frees its slot for the next one.
        let mut busy = (running.len() - plan.stop_early.len()) as u32;
        while launched < self.spec.max_trials && busy < self.spec.max_parallel.max(1) {
            let definition = self.spec.definition_for(launched);
            let (ranges, seed, nth) = match definition {
                Some(d) => {
                    let n = self.spec.definitions.len() as u32;
                    // Each definition's own seeded sequence.
                    let salt = d
                        .name
                        .bytes()
                        .fold(0u64, |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
                    (&d.ranges, self.spec.seed ^ salt, launched / n)
                }
                None => (&self.spec.ranges, self.spec.seed, launched),
            };
            let name = definition.map(|d| d.name.clone());
            let own: Vec<TrialOutcome> = history
                .iter()
                .filter(|(d, _)| *d == name)
                .map(|(_, o)| o.clone())
                .collect();
            let Some(values) = propose(
                self.spec.strategy,
                ranges,
                self.spec.objective_type,
                &own,
                seed,
                nth,
            ) else {
                break;
            };
            history.push((
                name.clone(),
                TrialOutcome {
                    values: values.clone(),
                    reports: Vec::new(),
                    objective: None,
                    running: true,
                },
            ));
            plan.launch.push(Launch {
                index: launched,
                definition: name,
                values,
            });
            launched += 1;
            busy += 1;
        }
        if plan.launch.is_empty() && running.is_empty() {
            plan.status = Some(self.ending(trials));
        }
        plan
    }

    /// How a job whose trials are all over ends: Completed when one reached an objective,
    /// Failed with why otherwise.
    fn ending(&self, trials: &[Trial]) -> (TuningStatus, Option<String>) {
        if self.best(trials).is_some() || trials.is_empty() {
            (TuningStatus::Completed, None)
        } else {
            (
                TuningStatus::Failed,
                Some(format!(
                    "No training job reported the objective metric {}: all {} training jobs failed or never printed a line its MetricDefinitions regex matches. See the training jobs' logs.",
                    self.spec.objective_metric,
                    trials.len()
                )),
            )
        }
    }
}

#[cfg(test)]
#[path = "tuning_job_tests.rs"]
mod tests;
