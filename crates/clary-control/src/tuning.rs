//! Hyperparameter tuning jobs on the training lifecycle: each trial is an ordinary training
//! job. A loop steps every tuning job in progress: it reads its trials' states and objective
//! reports, lets the domain decide (`TuningJob::step`), and carries that out (create trials,
//! stop trials, end the job).

use crate::config::ControlConfig;
use crate::domain::tuning::TrialOutcome;
use crate::domain::tuning_job::{
    OBJECTIVE_HYPERPARAMETER, Plan, Trial, TuningJob, TuningJobSpec, TuningStatus, trial_name,
};
use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::now_secs;
use crate::store::metrics::SampleQuery;
use crate::store::tuning::{TrialRow, TuningStore};
use crate::training::{NewTrainingJob, TrainingJobs};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Builds a trial's request, as the edge echoes it, from the tuning job's request: the
/// trial's name, the tuning job's ARN and the trial's hyperparameters.
pub type TrialEcho = fn(
    tuning_echo: &str,
    definition: Option<&str>,
    trial: &str,
    tuning_arn: &str,
    hps: &[(String, String)],
) -> String;

pub struct NewTuningJob {
    pub name: String,
    pub spec: TuningJobSpec,
    pub echo: String,
    pub tags: Vec<(String, String)>,
}

pub struct Tuning {
    store: TuningStore,
    training: Arc<TrainingJobs>,
    metrics: Arc<Metrics>,
    config: Arc<ControlConfig>,
    wake: Notify,
    trial_echo: OnceLock<TrialEcho>,
}

impl Tuning {
    pub(crate) fn new(
        store: TuningStore,
        training: Arc<TrainingJobs>,
        metrics: Arc<Metrics>,
        config: Arc<ControlConfig>,
    ) -> Self {
        Tuning {
            store,
            training,
            metrics,
            config,
            wake: Notify::new(),
            trial_echo: OnceLock::new(),
        }
    }

    /// The edge's way of writing a trial's request (set once, at start).
    pub fn set_trial_echo(&self, echo: TrialEcho) {
        let _ = self.trial_echo.set(echo);
    }

    fn not_found(&self, name: &str) -> ControlError {
        ControlError::Missing(format!(
            "Amazon SageMaker can't find a tuning job with name {name}"
        ))
    }

    pub fn create(&self, new: NewTuningJob) -> Result<String, ControlError> {
        self.training.check_spec(&new.spec.training)?;
        let now = now_secs();
        let job = TuningJob {
            arn: self.config.arn("hyper-parameter-tuning-job", &new.name),
            name: new.name,
            spec: new.spec,
            echo: new.echo,
            status: TuningStatus::InProgress,
            failure_reason: None,
            creation_time: now,
            last_modified_time: now,
            end_time: None,
        };
        if !self.store.insert(&job, &new.tags)? {
            return Err(ControlError::ResourceInUse(format!(
                "Hyperparameter tuning job names must be unique within an AWS account and region, and a tuning job with this name already exists ({})",
                job.arn
            )));
        }
        self.wake.notify_one();
        Ok(job.arn)
    }

    pub fn get(&self, name: &str) -> Result<TuningJob, ControlError> {
        self.store.get(name)?.ok_or_else(|| self.not_found(name))
    }

    /// Every tuning job, newest first.
    pub fn all(&self) -> Result<Vec<TuningJob>, ControlError> {
        self.store.all()
    }

    /// `StopHyperParameterTuningJob`: its running trials stop, then it is Stopped.
    pub fn stop(&self, name: &str) -> Result<(), ControlError> {
        let mut job = self.get(name)?;
        if job.status != TuningStatus::InProgress {
            return Err(ControlError::Validation(format!(
                "The hyperparameter tuning job {name} is {}; only a job in progress can be stopped",
                job.status.as_str()
            )));
        }
        job.status = TuningStatus::Stopping;
        job.last_modified_time = now_secs();
        self.store.save_state(&job)?;
        self.wake.notify_one();
        Ok(())
    }

    /// The job's trials with their training jobs' states and objective reports.
    pub fn trials(&self, job: &TuningJob) -> Result<Vec<Trial>, ControlError> {
        self.store
            .trials(&job.name)?
            .into_iter()
            .map(|row| {
                let status = self.training.get(&row.name).ok().map(|t| t.state.status);
                let (metric, _) = job.spec.trial_parts(row.definition.as_deref());
                let reports = self
                    .metrics
                    .samples(SampleQuery {
                        job: &row.name,
                        metric,
                        host: None,
                        start: f64::MIN,
                        end: f64::MAX,
                    })?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                Ok(Trial {
                    name: row.name,
                    index: row.index,
                    definition: row.definition,
                    values: row.values,
                    status,
                    reports,
                    early_stopped: row.early_stopped,
                })
            })
            .collect()
    }

    /// Steps tuning jobs for the server's lifetime.
    pub async fn run(self: Arc<Self>) {
        loop {
            let me = self.clone();
            let pass = tokio::task::spawn_blocking(move || me.step_all()).await;
            if let Ok(Err(e)) = pass {
                tracing::error!("tuning: {e}");
            }
            // A trial that ends or reports its objective moves its tuning job at once.
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.training.progressed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    fn step_all(&self) -> Result<(), ControlError> {
        for job in self.store.active()? {
            if let Err(e) = self.step(job) {
                tracing::error!("tuning: {e}");
            }
        }
        Ok(())
    }

    fn step(&self, mut job: TuningJob) -> Result<(), ControlError> {
        let trials = self.trials(&job)?;
        // A trial recorded but not created (the server stopped in between) is created now.
        for t in trials.iter().filter(|t| t.status.is_none()) {
            self.create_trial(&job, t.index, t.definition.as_deref(), &t.name, &t.values)?;
        }
        let prior = self.parent_outcomes(&job)?;
        let plan: Plan = job.step(&trials, &prior, now_secs());
        for name in &plan.stop_early {
            self.store.mark_early_stopped(name)?;
            self.stop_trial(name);
        }
        for name in &plan.stop {
            self.stop_trial(name);
        }
        for launch in &plan.launch {
            let hex = uuid::Uuid::new_v4().simple().to_string();
            let name = trial_name(&job.name, launch.index, &hex[..8]);
            self.store.insert_trial(
                &job.name,
                &TrialRow {
                    name: name.clone(),
                    index: launch.index,
                    definition: launch.definition.clone(),
                    values: launch.values.clone(),
                    early_stopped: false,
                },
            )?;
            self.create_trial(
                &job,
                launch.index,
                launch.definition.as_deref(),
                &name,
                &launch.values,
            )?;
        }
        if let Some((status, reason)) = plan.status {
            let now = now_secs();
            job.status = status;
            job.failure_reason = reason;
            job.last_modified_time = now;
            if status.is_terminal() {
                job.end_time = Some(now);
            }
            self.store.save_state(&job)?;
        }
        Ok(())
    }

    /// The trials of the job's warm-start parents, as the strategy sees them.
    fn parent_outcomes(&self, job: &TuningJob) -> Result<Vec<TrialOutcome>, ControlError> {
        let mut out = Vec::new();
        for parent in &job.spec.parents {
            let Some(p) = self.store.get(parent)? else {
                continue;
            };
            out.extend(self.trials(&p)?.iter().map(|t| TrialOutcome {
                values: t.values.clone(),
                reports: t.reports.clone(),
                objective: t.objective(),
                running: false,
            }));
        }
        Ok(out)
    }

    /// The best trial of the job and its warm-start parents (`OverallBestTrainingJob`), with
    /// the job it belongs to.
    pub fn overall_best(
        &self,
        job: &TuningJob,
    ) -> Result<Option<(TuningJob, Trial)>, ControlError> {
        let mut best: Option<(TuningJob, Trial)> = None;
        let mut jobs = vec![job.clone()];
        for parent in &job.spec.parents {
            jobs.extend(self.store.get(parent)?);
        }
        for j in jobs {
            let trials = self.trials(&j)?;
            if let Some(t) = j.best(&trials).cloned() {
                let better = best.as_ref().is_none_or(|(_, b)| {
                    b.objective().is_none_or(|bv| {
                        t.objective()
                            .is_some_and(|tv| job.spec.objective_type.better(tv, bv))
                    })
                });
                if better {
                    best = Some((j.clone(), t));
                }
            }
        }
        Ok(best)
    }

    fn stop_trial(&self, name: &str) {
        // A trial that already ended has nothing to stop.
        if let Err(e) = self.training.stop(name)
            && !matches!(e, ControlError::Validation(_))
        {
            tracing::warn!("tuning: stopping trial {name}: {e}");
        }
    }

    fn create_trial(
        &self,
        job: &TuningJob,
        index: u32,
        definition: Option<&str>,
        name: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<(), ControlError> {
        let (metric, template) = job.spec.trial_parts(definition);
        let mut spec = template.clone();
        spec.hyperparameters
            .retain(|(k, _)| !values.contains_key(k) && k != OBJECTIVE_HYPERPARAMETER);
        spec.hyperparameters
            .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.hyperparameters
            .push((OBJECTIVE_HYPERPARAMETER.to_string(), metric.to_string()));
        let echo = match self.trial_echo.get() {
            Some(build) => build(&job.echo, definition, name, &job.arn, &spec.hyperparameters),
            None => String::from("{}"),
        };
        match self.training.create(NewTrainingJob {
            name: name.to_string(),
            spec,
            echo,
            tags: Vec::new(),
        }) {
            Ok(_) | Err(ControlError::ResourceInUse(_)) => Ok(()),
            Err(e) => {
                tracing::warn!(
                    "tuning job {}: trial {index} could not start: {e}",
                    job.name
                );
                Err(e)
            }
        }
    }
}
