use super::*;
use clary_exec::HostProcess;

const WORDS: JobWords = Kind::TrainingJob.words();

fn host(name: &str) -> Host {
    Host {
        name: name.into(),
        log_stream: format!("j/{name}-1"),
        address: "127.1.2.1".into(),
        handle: Some(ExecHandle::Process(HostProcess {
            pid: 42,
            start_ticks: 7,
        })),
        result: None,
    }
}

fn running(hosts: &[&str]) -> JobState {
    let mut job = JobState::queued(100.0);
    job.start_attempt(WORDS, hosts.iter().map(|h| host(h)).collect(), 101.0);
    job
}

fn result(outcome: Outcome, transient: bool) -> HostResult {
    HostResult {
        outcome,
        failure_reason: (outcome != Outcome::Completed).then(|| "AlgorithmError: boom".into()),
        exit_code: Some(if outcome == Outcome::Completed { 0 } else { 1 }),
        artifacts: Some("s3://b/j/output/model.tar.gz".into()),
        transient,
    }
}

#[test]
fn a_new_job_is_queued_in_progress_and_starting() {
    let job = JobState::queued(5.0);
    assert_eq!(job.status, JobStatus::InProgress);
    assert_eq!(job.secondary, SecondaryStatus::Starting);
    assert!(job.is_queued());
    assert_eq!(job.attempt(), 0);
    assert_eq!(job.transitions.len(), 1);
}

#[test]
fn stopping_a_queued_job_stops_it_at_once_and_a_second_stop_is_refused() {
    let mut job = JobState::queued(5.0);
    assert_eq!(job.request_stop(WORDS, 6.0), Ok(StopEffect::StoppedInQueue));
    assert_eq!(job.status, JobStatus::Stopped);
    assert_eq!(job.failure_reason, None);
    assert_eq!(
        job.request_stop(WORDS, 7.0),
        Err(TransitionError::AlreadyEnded("Stopped"))
    );
}

#[test]
fn stopping_a_running_job_waits_for_its_hosts_and_a_failure_then_reads_as_stopped() {
    let mut job = running(&["algo-1"]);
    assert_eq!(job.request_stop(WORDS, 110.0), Ok(StopEffect::SignalHosts));
    assert_eq!(job.status, JobStatus::Stopping);
    assert_eq!(job.stopping_since(), Some(110.0));
    assert_eq!(
        job.request_stop(WORDS, 111.0),
        Ok(StopEffect::AlreadyStopping)
    );
    // The script killed by the stop exits non-zero: the job is Stopped, not Failed.
    let effect = job
        .apply_result(WORDS, 0, "algo-1", 0, result(Outcome::Failed, false), 112.0)
        .unwrap();
    assert_eq!(effect, ResultEffect::StopOthers { requeued: false });
    assert_eq!(job.status, JobStatus::Stopped);
    assert!(job.status_message.contains("exited with code 1"));
}

#[test]
fn stages_only_move_forward_and_not_while_stopping() {
    let mut job = running(&["algo-1", "algo-2"]);
    assert!(job.apply_status_report(SecondaryStatus::Training, "Training", 102.0));
    assert!(!job.apply_status_report(SecondaryStatus::Downloading, "late host", 103.0));
    assert_eq!(job.secondary, SecondaryStatus::Training);
    job.request_stop(WORDS, 104.0).unwrap();
    assert!(!job.apply_status_report(SecondaryStatus::Uploading, "up", 105.0));
    assert_eq!(job.secondary, SecondaryStatus::Stopping);
}

#[test]
fn the_job_completes_when_every_host_has() {
    let mut job = running(&["algo-1", "algo-2"]);
    let ok = || result(Outcome::Completed, false);
    assert_eq!(
        job.apply_result(WORDS, 0, "algo-2", 0, ok(), 120.0),
        Ok(ResultEffect::Recorded)
    );
    assert_eq!(
        job.apply_result(WORDS, 0, "algo-1", 0, ok(), 121.0),
        Ok(ResultEffect::Finished)
    );
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.exit_code, Some(0));
    assert_eq!(job.end_time, Some(121.0));
    assert_eq!(
        job.artifacts.as_deref(),
        Some("s3://b/j/output/model.tar.gz")
    );
    // A report after the end changes nothing.
    assert_eq!(
        job.apply_result(WORDS, 0, "algo-1", 0, result(Outcome::Failed, false), 122.0),
        Ok(ResultEffect::Ignored)
    );
    assert_eq!(job.status, JobStatus::Completed);
}

#[test]
fn one_failed_host_fails_the_job_naming_the_host() {
    let mut job = running(&["algo-1", "algo-2"]);
    let effect = job
        .apply_result(WORDS, 0, "algo-2", 0, result(Outcome::Failed, false), 130.0)
        .unwrap();
    assert_eq!(effect, ResultEffect::StopOthers { requeued: false });
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("AlgorithmError: boom (host algo-2)")
    );
    assert_eq!(
        job.apply_result(
            WORDS,
            0,
            "algo-9",
            0,
            result(Outcome::Completed, false),
            131.0
        ),
        Ok(ResultEffect::Ignored),
        "an ended job ignores even unknown hosts"
    );
}

#[test]
fn an_unknown_host_of_a_running_job_is_an_error() {
    let mut job = running(&["algo-1"]);
    assert_eq!(
        job.apply_result(
            WORDS,
            0,
            "algo-3",
            0,
            result(Outcome::Completed, false),
            1.0
        ),
        Err(TransitionError::UnknownHost("algo-3".into()))
    );
}

#[test]
fn a_transient_failure_restarts_while_retries_last_and_late_reports_are_ignored() {
    let mut job = running(&["algo-1"]);
    let effect = job
        .apply_result(WORDS, 1, "algo-1", 0, result(Outcome::Failed, true), 140.0)
        .unwrap();
    assert_eq!(effect, ResultEffect::StopOthers { requeued: true });
    assert!(job.is_queued());
    assert_eq!(job.attempt(), 1);
    assert_eq!(job.secondary, SecondaryStatus::Restarting);
    assert!(job.status_message.contains("attempt 2 of 2"));
    // The old attempt's late result is dropped.
    assert_eq!(
        job.apply_result(
            WORDS,
            1,
            "algo-1",
            0,
            result(Outcome::Completed, false),
            141.0
        ),
        Ok(ResultEffect::Ignored)
    );
    job.start_attempt(WORDS, vec![host("algo-1")], 142.0);
    // No retries left: the next transient failure fails the job.
    let effect = job
        .apply_result(WORDS, 1, "algo-1", 1, result(Outcome::Failed, true), 150.0)
        .unwrap();
    assert_eq!(effect, ResultEffect::StopOthers { requeued: false });
    assert_eq!(job.status, JobStatus::Failed);
}

#[test]
fn lost_hosts_fail_the_job_or_restart_it() {
    let mut job = running(&["algo-1"]);
    assert!(job.hosts_lost(WORDS, 1, "algo-1", "agent gone".into(), true, 160.0));
    assert!(job.is_queued());
    job.start_attempt(WORDS, vec![host("algo-1")], 161.0);
    assert!(!job.hosts_lost(WORDS, 1, "algo-1", "agent gone".into(), true, 170.0));
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("agent gone"));
}

#[test]
fn max_runtime_stops_the_job_with_its_own_secondary_status() {
    let mut job = running(&["algo-1"]);
    let r = HostResult {
        outcome: Outcome::MaxRuntimeExceeded,
        failure_reason: None,
        exit_code: None,
        artifacts: None,
        transient: false,
    };
    job.apply_result(WORDS, 0, "algo-1", 0, r, 200.0).unwrap();
    assert_eq!(job.status, JobStatus::Stopped);
    assert_eq!(job.secondary, SecondaryStatus::MaxRuntimeExceeded);
    assert_eq!(
        job.failure_reason.as_deref(),
        Some("MaxRuntimeExceeded: Training job exceeded MaxRuntimeInSeconds")
    );
}

#[test]
fn the_same_stage_and_message_is_not_repeated() {
    let mut job = JobState::queued(1.0);
    assert!(job.note_waiting("waiting for capacity", 2.0));
    assert!(!job.note_waiting("waiting for capacity", 3.0));
    assert_eq!(job.transitions.len(), 2);
    assert_eq!(job.transitions[0].end_time, Some(2.0));
}

#[test]
fn statuses_round_trip_through_their_names() {
    for s in JobStatus::ALL {
        assert_eq!(JobStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(JobStatus::parse("Deleting"), None);
    assert_eq!(
        SecondaryStatus::parse("MaxRuntimeExceeded"),
        Some(SecondaryStatus::MaxRuntimeExceeded)
    );
}

#[test]
fn a_jobs_own_credentials_end_a_grace_period_after_the_job() {
    let mut state = JobState::queued(0.0);
    assert!(state.accepts_reports(1.0), "a queued job's launch signs");
    state.status = JobStatus::Completed;
    state.end_time = Some(100.0);
    assert!(state.accepts_reports(100.0 + REPORT_GRACE_SECS - 1.0));
    assert!(!state.accepts_reports(100.0 + REPORT_GRACE_SECS + 1.0));
}
