//! The endpoint reconciler's transitions, without processes or a database.

use super::*;
use clary_exec::HostProcess;

fn plan(variant: &str, count: u32) -> VariantPlan {
    VariantPlan {
        name: variant.into(),
        weight: 1.0,
        count,
        instance_type: "ml.m5.large".into(),
        accelerator_type: None,
        model_name: "m".into(),
        image: "img".into(),
        model_data_url: None,
        environment: Default::default(),
    }
}

fn deployment(config: &str, ids: &[&str]) -> Deployment {
    Deployment {
        config_name: config.into(),
        plan: vec![plan("v", ids.len() as u32)],
        instances: ids
            .iter()
            .map(|id| Instance::new(id.to_string(), "v", PathBuf::from("/w").join(id)))
            .collect(),
    }
}

fn endpoint(ids: &[&str]) -> Endpoint {
    Endpoint::new("ep", "arn:ep".into(), deployment("c1", ids), 0.0)
}

fn handle(pid: i32) -> ExecHandle {
    ExecHandle::Process(HostProcess {
        pid,
        start_ticks: 1,
    })
}

fn seen(pairs: &[(&str, Seen)]) -> HashMap<String, Seen> {
    pairs
        .iter()
        .map(|(id, s)| (id.to_string(), s.clone()))
        .collect()
}

/// Launches every instance the reconciler asks for, as the hosting loop would.
fn launch_all(ep: &mut Endpoint, actions: &[Action], now: f64) {
    for (n, a) in actions.iter().enumerate() {
        if let Action::Launch(id) = a {
            let launched = Launched {
                handle: handle(100 + n as i32),
                port: 9000 + n as u16,
                token: format!("t{n}"),
            };
            ep.record_launch(id, launched, now);
        }
    }
}

/// An endpoint brought to InService with instances `ids`.
fn in_service(ids: &[&str]) -> Endpoint {
    let mut ep = endpoint(ids);
    let actions = ep.reconcile(&HashMap::new(), 1.0);
    launch_all(&mut ep, &actions, 1.0);
    let healthy: Vec<(&str, Seen)> = ids.iter().map(|id| (*id, Seen::Healthy)).collect();
    ep.reconcile(&seen(&healthy), 2.0);
    assert_eq!(ep.status, EndpointStatus::InService);
    ep
}

#[test]
fn creating_launches_every_instance_then_serves_once_all_are_healthy() {
    let mut ep = endpoint(&["i-1", "i-2"]);
    let actions = ep.reconcile(&HashMap::new(), 1.0);
    assert_eq!(
        actions,
        vec![Action::Launch("i-1".into()), Action::Launch("i-2".into())]
    );
    launch_all(&mut ep, &actions, 1.0);
    let actions = ep.reconcile(&seen(&[("i-1", Seen::Healthy)]), 2.0);
    assert_eq!(ep.status, EndpointStatus::Creating);
    assert!(actions.is_empty(), "{actions:?}");
    let actions = ep.reconcile(
        &seen(&[("i-1", Seen::Healthy), ("i-2", Seen::Healthy)]),
        3.0,
    );
    assert_eq!(ep.status, EndpointStatus::InService);
    assert_eq!(ep.last_modified_time, 3.0);
    assert_eq!(actions, vec![Action::Publish]);
    let routable = ep.routable();
    assert_eq!(routable[0].1.len(), 2);
}

#[test]
fn an_instance_that_exits_while_creating_fails_the_endpoint_with_its_output() {
    let mut ep = endpoint(&["i-1"]);
    let actions = ep.reconcile(&HashMap::new(), 1.0);
    launch_all(&mut ep, &actions, 1.0);
    ep.reconcile(
        &seen(&[(
            "i-1",
            Seen::Exited {
                last_output: "ImportError: no module named x".into(),
            },
        )]),
        2.0,
    );
    assert_eq!(ep.status, EndpointStatus::Failed);
    let reason = ep.failure_reason.clone().unwrap();
    assert!(reason.contains("exited before it was healthy"), "{reason}");
    assert!(reason.contains("ImportError"), "{reason}");
    assert_eq!(ep.retiring.len(), 1);
    assert!(ep.live.instances.is_empty());
}

#[test]
fn a_failed_health_check_kills_the_instance_and_names_the_log_stream() {
    let mut ep = endpoint(&["i-1"]);
    let actions = ep.reconcile(&HashMap::new(), 1.0);
    launch_all(&mut ep, &actions, 1.0);
    let actions = ep.reconcile(
        &seen(&[(
            "i-1",
            Seen::FailedPing {
                reason: "model_fn raised".into(),
            },
        )]),
        2.0,
    );
    assert!(actions.contains(&Action::Kill("i-1".into())));
    assert_eq!(ep.status, EndpointStatus::Failed);
    let reason = ep.failure_reason.unwrap();
    assert!(reason.contains("model_fn raised"), "{reason}");
    assert!(reason.contains("/aws/sagemaker/Endpoints/ep"), "{reason}");
    assert!(reason.contains("v/i-1"), "{reason}");
}

#[test]
fn a_launch_that_fails_while_creating_fails_the_endpoint() {
    let mut ep = endpoint(&["i-1"]);
    ep.reconcile(&HashMap::new(), 1.0);
    ep.launch_failed("i-1", "no free port", 1.0);
    assert_eq!(ep.status, EndpointStatus::Failed);
    assert!(ep.failure_reason.unwrap().contains("no free port"));
}

#[test]
fn a_lost_instance_of_a_serving_endpoint_is_replaced_not_failed() {
    let mut ep = in_service(&["i-1"]);
    let actions = ep.reconcile(
        &seen(&[(
            "i-1",
            Seen::Exited {
                last_output: String::new(),
            },
        )]),
        3.0,
    );
    assert_eq!(ep.status, EndpointStatus::InService);
    assert!(actions.contains(&Action::ForgetRoute("i-1".into())));
    assert!(actions.contains(&Action::Launch("i-1".into())));
    assert!(!ep.live.instances[0].launched());
    assert!(ep.routable()[0].1.is_empty());
    // A failed relaunch is tried again on the next pass.
    ep.launch_failed("i-1", "busy", 3.0);
    assert_eq!(ep.status, EndpointStatus::InService);
}

#[test]
fn an_update_switches_traffic_once_the_new_instances_are_healthy() {
    let mut ep = in_service(&["i-1"]);
    ep.begin_update(deployment("c2", &["i-2"]), 3.0).unwrap();
    assert_eq!(ep.status, EndpointStatus::Updating);
    let actions = ep.reconcile(&seen(&[("i-1", Seen::Healthy)]), 4.0);
    assert!(actions.contains(&Action::Launch("i-2".into())));
    assert!(
        actions.contains(&Action::Publish),
        "old instances serve meanwhile"
    );
    launch_all(&mut ep, &actions, 4.0);
    ep.reconcile(
        &seen(&[("i-1", Seen::Healthy), ("i-2", Seen::Healthy)]),
        5.0,
    );
    assert_eq!(ep.status, EndpointStatus::InService);
    assert_eq!(ep.live.config_name, "c2");
    assert_eq!(ep.live.instances[0].id, "i-2");
    assert_eq!(ep.retiring[0].id, "i-1");
    // The old instance drains: SIGTERM, then SIGKILL after the grace period, then forgotten.
    let actions = ep.reconcile(&seen(&[("i-2", Seen::Healthy)]), 6.0);
    assert!(actions.contains(&Action::Terminate("i-1".into())));
    let actions = ep.reconcile(&seen(&[("i-2", Seen::Healthy)]), 7.0);
    assert!(!actions.iter().any(|a| matches!(a, Action::Kill(_))));
    let actions = ep.reconcile(
        &seen(&[("i-2", Seen::Healthy)]),
        6.0 + STOP_GRACE_SECS + 1.0,
    );
    assert!(actions.contains(&Action::Kill("i-1".into())));
    ep.reconcile(
        &seen(&[
            ("i-2", Seen::Healthy),
            (
                "i-1",
                Seen::Exited {
                    last_output: String::new(),
                },
            ),
        ]),
        40.0,
    );
    assert!(ep.retiring.is_empty());
}

#[test]
fn a_bad_update_rolls_back_and_keeps_the_old_instances() {
    let mut ep = in_service(&["i-1"]);
    ep.begin_update(deployment("c2", &["i-2"]), 3.0).unwrap();
    let actions = ep.reconcile(&seen(&[("i-1", Seen::Healthy)]), 4.0);
    launch_all(&mut ep, &actions, 4.0);
    ep.reconcile(
        &seen(&[
            ("i-1", Seen::Healthy),
            (
                "i-2",
                Seen::Exited {
                    last_output: "boom".into(),
                },
            ),
        ]),
        5.0,
    );
    assert_eq!(ep.status, EndpointStatus::RollingBack);
    assert!(ep.failure_reason.clone().unwrap().contains("c2 failed"));
    assert_eq!(ep.live.config_name, "c1");
    assert!(ep.pending.is_none());
    ep.reconcile(&seen(&[("i-1", Seen::Healthy)]), 6.0);
    assert_eq!(ep.status, EndpointStatus::InService);
    assert_eq!(ep.live.instances[0].id, "i-1");
}

#[test]
fn only_a_serving_endpoint_can_be_updated() {
    let mut ep = endpoint(&["i-1"]);
    let err = ep
        .begin_update(deployment("c2", &["i-2"]), 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("it is Creating"), "{err}");
}

#[test]
fn deleting_retires_every_instance_and_then_removes_the_endpoint() {
    let mut ep = in_service(&["i-1", "i-2"]);
    assert!(ep.begin_delete(3.0));
    assert!(!ep.begin_delete(3.5), "a second delete changes nothing");
    assert_eq!(ep.status, EndpointStatus::Deleting);
    let actions = ep.reconcile(&HashMap::new(), 4.0);
    assert!(actions.contains(&Action::Terminate("i-1".into())));
    assert!(actions.contains(&Action::Terminate("i-2".into())));
    assert!(!actions.contains(&Action::Publish));
    assert!(!actions.contains(&Action::Remove));
    let gone = Seen::Exited {
        last_output: String::new(),
    };
    let actions = ep.reconcile(&seen(&[("i-1", gone.clone()), ("i-2", gone)]), 5.0);
    assert!(actions.contains(&Action::Remove));
}

#[test]
fn a_cluster_instance_takes_the_address_it_reports() {
    let mut ep = endpoint(&["i-1"]);
    ep.reconcile(&HashMap::new(), 1.0);
    let launched = Launched {
        handle: ExecHandle::SlurmJob(7),
        port: 0,
        token: "t".into(),
    };
    ep.record_launch("i-1", launched, 1.0);
    ep.record_address("i-1", "10.0.0.2", 8123);
    let i = &ep.live.instances[0];
    assert_eq!((i.address.as_str(), i.port), ("10.0.0.2", 8123));
}
