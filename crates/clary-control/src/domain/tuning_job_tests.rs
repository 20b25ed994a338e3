//! A tuning job's step, without processes or a database.

use super::*;
use crate::domain::metrics::MetricDefinition;
use crate::domain::training::{InputMode, S3Location};

fn job(max_trials: u32, max_parallel: u32) -> TuningJob {
    TuningJob {
        name: "t".into(),
        arn: "arn:t".into(),
        spec: TuningJobSpec {
            strategy: StrategyKind::Random,
            objective_metric: "acc".into(),
            objective_type: ObjectiveType::Maximize,
            ranges: vec![ParameterRange::Continuous {
                name: "lr".into(),
                min: 0.001,
                max: 0.1,
                scaling: crate::domain::tuning::Scaling::Linear,
            }],
            max_trials,
            max_parallel,
            max_runtime_secs: None,
            stop_rule: StopRule::Off,
            seed: 1,
            target_objective: None,
            max_not_improving: None,
            training: TrainingJobSpec {
                image: "img".into(),
                input_mode: InputMode::File,
                instance_type: "ml.c5.xlarge".into(),
                instance_count: 1,
                channels: Vec::new(),
                output: S3Location {
                    bucket: "b".into(),
                    prefix: "o".into(),
                },
                hyperparameters: Vec::new(),
                environment: Vec::new(),
                max_runtime_secs: 60,
                checkpoints: None,
                max_retries: 0,
                metric_definitions: vec![MetricDefinition {
                    name: "acc".into(),
                    regex: "acc=(.*)".into(),
                }],
                profiler: Default::default(),
                debug_rules: Vec::new(),
                container: None,
            },
            parents: Vec::new(),
            definitions: Vec::new(),
        },
        echo: "{}".into(),
        status: TuningStatus::InProgress,
        failure_reason: None,
        creation_time: 0.0,
        last_modified_time: 0.0,
        end_time: None,
    }
}

fn trial(index: u32, status: Option<JobStatus>, reports: &[f64]) -> Trial {
    Trial {
        name: format!("t-{index:03}"),
        index,
        definition: None,
        values: [("lr".to_string(), "0.01".to_string())].into(),
        status,
        reports: reports.to_vec(),
        early_stopped: false,
    }
}

#[test]
fn trials_launch_up_to_the_parallel_limit() {
    let plan = job(5, 2).step(&[], &[], 1.0);
    assert_eq!(plan.launch.len(), 2);
    assert_eq!(plan.launch[0].index, 0);
    assert_eq!(plan.launch[1].index, 1);
    let running = [trial(0, Some(JobStatus::InProgress), &[])];
    let plan = job(5, 2).step(&running, &[], 1.0);
    assert_eq!(plan.launch.len(), 1);
    assert_eq!(plan.launch[0].index, 1);
    assert!(plan.status.is_none());
}

#[test]
fn the_job_completes_with_its_best_trial_once_every_trial_ended() {
    let t = [
        trial(0, Some(JobStatus::Completed), &[0.3, 0.5]),
        trial(1, Some(JobStatus::Completed), &[0.2, 0.9]),
        trial(2, Some(JobStatus::Failed), &[]),
    ];
    let j = job(3, 2);
    let plan = j.step(&t, &[], 5.0);
    assert!(plan.launch.is_empty());
    assert_eq!(plan.status, Some((TuningStatus::Completed, None)));
    assert_eq!(j.best(&t).unwrap().index, 1);
}

#[test]
fn a_job_whose_trials_all_failed_fails_and_says_why() {
    let t = [trial(0, Some(JobStatus::Failed), &[])];
    let (status, reason) = job(1, 1).step(&t, &[], 5.0).status.unwrap();
    assert_eq!(status, TuningStatus::Failed);
    assert!(reason.unwrap().contains("objective metric acc"));
}

#[test]
fn stopping_stops_running_trials_then_the_job() {
    let mut j = job(5, 2);
    j.status = TuningStatus::Stopping;
    let t = [trial(0, Some(JobStatus::InProgress), &[0.1])];
    let plan = j.step(&t, &[], 1.0);
    assert_eq!(plan.stop, vec!["t-000".to_string()]);
    assert!(plan.launch.is_empty() && plan.status.is_none());
    let done = [trial(0, Some(JobStatus::Stopped), &[0.1])];
    assert_eq!(
        j.step(&done, &[], 2.0).status,
        Some((TuningStatus::Stopped, None))
    );
}

#[test]
fn reaching_the_target_objective_ends_the_search() {
    let mut j = job(10, 2);
    j.spec.target_objective = Some(0.8);
    let t = [
        trial(0, Some(JobStatus::Completed), &[0.85]),
        trial(1, Some(JobStatus::InProgress), &[0.1]),
    ];
    let plan = j.step(&t, &[], 1.0);
    assert!(plan.launch.is_empty());
    assert_eq!(plan.stop, vec!["t-001".to_string()]);
}

#[test]
fn an_early_stopped_trial_keeps_its_last_report_as_objective() {
    let mut t = trial(0, Some(JobStatus::Stopped), &[0.2, 0.4]);
    assert_eq!(t.objective(), None);
    t.early_stopped = true;
    assert_eq!(t.objective(), Some(0.4));
    assert_eq!(trial_name("tune", 0, "abcdef12"), "tune-001-abcdef12");
}

#[test]
fn a_warm_start_learns_from_its_parents_trials_without_counting_them() {
    let mut j = job(4, 1);
    j.spec.strategy = StrategyKind::Bayesian;
    let prior: Vec<TrialOutcome> = [0.002, 0.02, 0.05, 0.08, 0.095]
        .iter()
        .map(|lr| TrialOutcome {
            values: [("lr".to_string(), lr.to_string())].into(),
            reports: vec![1.0 - (lr - 0.05f64).abs()],
            objective: Some(1.0 - (lr - 0.05f64).abs()),
            running: false,
        })
        .collect();
    let cold = j.step(&[], &[], 1.0);
    let warm = j.step(&[], &prior, 1.0);
    assert_eq!(
        warm.launch.len(),
        1,
        "the parents' trials count toward no limit"
    );
    assert_eq!(warm.launch[0].index, 0);
    assert_ne!(
        cold.launch[0].values, warm.launch[0].values,
        "the model saw the parents"
    );
}

#[test]
fn several_definitions_take_turns_each_with_its_own_ranges() {
    let mut j = job(4, 4);
    let def = |name: &str, range: &str| Definition {
        name: name.into(),
        objective_metric: "acc".into(),
        ranges: vec![ParameterRange::Categorical {
            name: range.into(),
            values: vec!["a".into(), "b".into()],
        }],
        training: j.spec.training.clone(),
    };
    j.spec.definitions = vec![def("first", "x"), def("second", "y")];
    let plan = j.step(&[], &[], 1.0);
    let got: Vec<(Option<&str>, Vec<&str>)> = plan
        .launch
        .iter()
        .map(|l| {
            (
                l.definition.as_deref(),
                l.values.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("first"), vec!["x"]),
            (Some("second"), vec!["y"]),
            (Some("first"), vec!["x"]),
            (Some("second"), vec!["y"])
        ]
    );
    assert_eq!(j.spec.trial_parts(Some("second")).0, "acc");
}

#[test]
fn a_search_that_stops_improving_ends() {
    let mut j = job(10, 1);
    j.spec.max_not_improving = Some(2);
    let t = [
        trial(0, Some(JobStatus::Completed), &[0.5]),
        trial(1, Some(JobStatus::Completed), &[0.7]),
        trial(2, Some(JobStatus::Completed), &[0.6]),
    ];
    assert_eq!(j.not_improving(&t), 1);
    assert!(!j.step(&t, &[], 1.0).launch.is_empty());
    let more = [
        t[0].clone(),
        t[1].clone(),
        t[2].clone(),
        trial(3, Some(JobStatus::Failed), &[]),
    ];
    assert_eq!(j.not_improving(&more), 2);
    let plan = j.step(&more, &[], 1.0);
    assert!(plan.launch.is_empty());
    assert_eq!(plan.status, Some((TuningStatus::Completed, None)));
}
