use super::*;
use crate::domain::tuning::Scaling;

fn int(name: &str, min: i64, max: i64, scaling: Scaling) -> ParameterRange {
    ParameterRange::Integer {
        name: name.into(),
        min,
        max,
        scaling,
    }
}

fn cont(name: &str, min: f64, max: f64, scaling: Scaling) -> ParameterRange {
    ParameterRange::Continuous {
        name: name.into(),
        min,
        max,
        scaling,
    }
}

fn cat(name: &str, values: &[&str]) -> ParameterRange {
    ParameterRange::Categorical {
        name: name.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

fn done(values: BTreeMap<String, String>, objective: f64) -> TrialOutcome {
    TrialOutcome {
        values,
        reports: vec![objective],
        objective: Some(objective),
        running: false,
    }
}

fn running(values: BTreeMap<String, String>) -> TrialOutcome {
    TrialOutcome {
        values,
        reports: vec![],
        objective: None,
        running: true,
    }
}

fn curve(reports: &[f64]) -> TrialOutcome {
    TrialOutcome {
        values: BTreeMap::new(),
        reports: reports.to_vec(),
        objective: None,
        running: true,
    }
}

fn num(values: &BTreeMap<String, String>, name: &str) -> f64 {
    values[name].parse().unwrap()
}

/// Branin on x1 in [-5, 10], x2 in [0, 15]; its minimum is 0.397887.
fn branin(v: &BTreeMap<String, String>) -> f64 {
    let (x1, x2) = (num(v, "x1"), num(v, "x2"));
    let pi = std::f64::consts::PI;
    let b = 5.1 / (4.0 * pi * pi);
    let c = 5.0 / pi;
    let t = 1.0 / (8.0 * pi);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

fn branin_ranges() -> Vec<ParameterRange> {
    vec![
        cont("x1", -5.0, 10.0, Scaling::Linear),
        cont("x2", 0.0, 15.0, Scaling::Linear),
    ]
}

/// The best Branin value `kind` finds in `budget` trials run one after another.
fn sequential_best(kind: StrategyKind, seed: u64, budget: u32) -> f64 {
    let ranges = branin_ranges();
    let mut history = Vec::new();
    for index in 0..budget {
        let values = propose(
            kind,
            &ranges,
            ObjectiveType::Minimize,
            &history,
            seed,
            index,
        )
        .unwrap();
        let y = branin(&values);
        history.push(done(values, y));
    }
    history
        .iter()
        .filter_map(|t| t.objective)
        .fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn the_same_seed_gives_the_same_trials_and_another_seed_other_ones() {
    let ranges = vec![
        cont("lr", 1e-4, 1.0, Scaling::Logarithmic),
        int("layers", 1, 8, Scaling::Linear),
        cat("opt", &["sgd", "adam"]),
    ];
    for kind in [
        StrategyKind::Random,
        StrategyKind::Hyperband,
        StrategyKind::Bayesian,
    ] {
        let run = |seed| {
            let mut history = Vec::new();
            for index in 0..8 {
                let v = propose(
                    kind,
                    &ranges,
                    ObjectiveType::Maximize,
                    &history,
                    seed,
                    index,
                );
                let v = v.unwrap();
                let y = num(&v, "lr").ln() + num(&v, "layers");
                history.push(done(v, y));
            }
            history.into_iter().map(|t| t.values).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42), "{kind:?}");
        assert_ne!(run(42), run(43), "{kind:?}");
    }
}

#[test]
fn every_proposal_lies_in_its_range_for_every_scaling() {
    let scalings = [
        Scaling::Auto,
        Scaling::Linear,
        Scaling::Logarithmic,
        Scaling::ReverseLogarithmic,
    ];
    let mut ranges = vec![cat("c", &["x", "y", "z"])];
    for (i, s) in scalings.iter().enumerate() {
        ranges.push(int(&format!("i{i}"), 1, 300, *s));
        ranges.push(int(&format!("small{i}"), -2, 2, *s));
        ranges.push(cont(&format!("f{i}"), 0.001, 0.999, *s));
        ranges.push(cont(&format!("wide{i}"), 1e-6, 1e3, *s));
    }
    let mut history = Vec::new();
    let mut ends = (false, false);
    for index in 0..210 {
        let kind = if index < 200 {
            StrategyKind::Random
        } else {
            StrategyKind::Bayesian
        };
        let v = propose(kind, &ranges, ObjectiveType::Minimize, &history, 9, index).unwrap();
        assert_eq!(v.len(), ranges.len());
        for r in &ranges {
            let text = &v[r.name()];
            match r {
                ParameterRange::Integer { min, max, .. } => {
                    let x: i64 = text.parse().expect("a plain integer");
                    assert!((*min..=*max).contains(&x), "{text} in {r:?}");
                    if r.name() == "small1" {
                        ends.0 |= x == -2;
                        ends.1 |= x == 2;
                    }
                }
                ParameterRange::Continuous { min, max, .. } => {
                    let x: f64 = text.parse().unwrap();
                    assert!(*min <= x && x <= *max, "{text} in {r:?}");
                    assert_eq!(format!("{x}"), *text, "round-trips");
                }
                ParameterRange::Categorical { values, .. } => assert!(values.contains(text)),
            }
        }
        let y = num(&v, "f1") + num(&v, "i2");
        history.push(done(v, y));
    }
    assert!(ends.0 && ends.1, "both ends of an integer range are drawn");
}

/// The share of 2000 Random draws of one range for which `pred` holds.
fn share(range: ParameterRange, pred: impl Fn(f64) -> bool) -> f64 {
    let ranges = [range];
    let name = ranges[0].name().to_string();
    let hits = (0..2000)
        .map(|i| {
            propose(
                StrategyKind::Random,
                &ranges,
                ObjectiveType::Minimize,
                &[],
                5,
                i,
            )
        })
        .filter(|v| pred(num(v.as_ref().unwrap(), &name)))
        .count();
    hits as f64 / 2000.0
}

#[test]
fn scalings_shape_where_random_trials_fall() {
    // Log: half below the geometric mean (0.01 of [1e-4, 1]); linear: about 1 %.
    let log = share(cont("a", 1e-4, 1.0, Scaling::Logarithmic), |x| x < 1e-2);
    assert!((0.45..0.55).contains(&log), "{log}");
    let lin = share(cont("a", 1e-4, 1.0, Scaling::Linear), |x| x < 1e-2);
    assert!(lin < 0.03, "{lin}");
    // Auto is logarithmic across orders of magnitude, linear otherwise.
    let auto = share(cont("a", 1e-4, 1.0, Scaling::Auto), |x| x < 1e-2);
    assert!((0.45..0.55).contains(&auto), "{auto}");
    let auto_narrow = share(cont("a", 1.0, 50.0, Scaling::Auto), |x| x < 25.5);
    assert!((0.45..0.55).contains(&auto_narrow), "{auto_narrow}");
    // Integer log: 1..=1000, half of the draws below about sqrt(1000).
    let int_log = share(int("n", 1, 1000, Scaling::Logarithmic), |x| x < 32.0);
    assert!((0.42..0.58).contains(&int_log), "{int_log}");
    // Reverse log over [0, 0.999): -ln(1 - x) is uniform, so two thirds land above 0.9.
    let rev = share(cont("m", 0.0, 0.999, Scaling::ReverseLogarithmic), |x| {
        x > 0.9
    });
    assert!((0.6..0.73).contains(&rev), "{rev}");
}

#[test]
fn random_does_not_repeat_a_trial_while_the_space_has_room() {
    let ranges = [
        cat("c", &["a", "b", "c", "d", "e"]),
        int("n", 0, 1, Scaling::Auto),
    ];
    let mut history: Vec<TrialOutcome> = Vec::new();
    for index in 0..10 {
        let v = propose(
            StrategyKind::Random,
            &ranges,
            ObjectiveType::Minimize,
            &history,
            3,
            index,
        );
        let v = v.unwrap();
        assert!(
            history.iter().all(|t| t.values != v),
            "trial {index} repeats {v:?}"
        );
        history.push(running(v));
    }
    // Once all ten were tried, a repeat is still a proposal, not the end of the search.
    let again = propose(
        StrategyKind::Random,
        &ranges,
        ObjectiveType::Minimize,
        &history,
        3,
        10,
    );
    assert!(again.is_some());
}

#[test]
fn grid_enumerates_the_product_in_order_then_ends() {
    let ranges = [
        cat("opt", &["sgd", "adam", "rms"]),
        int("layers", 2, 3, Scaling::Logarithmic),
    ];
    let all: Vec<_> = (0..7)
        .map(|i| {
            propose(
                StrategyKind::Grid,
                &ranges,
                ObjectiveType::Minimize,
                &[],
                1,
                i,
            )
        })
        .collect();
    let expected: Vec<_> = ["sgd", "adam", "rms"]
        .iter()
        .flat_map(|o| {
            ["2", "3"].iter().map(move |l| {
                BTreeMap::from([
                    ("opt".to_string(), o.to_string()),
                    ("layers".into(), l.to_string()),
                ])
            })
        })
        .map(Some)
        .chain([None])
        .collect();
    assert_eq!(all, expected);
    let huge = [int("n", i64::MIN, i64::MAX, Scaling::Linear)];
    assert_eq!(
        propose(
            StrategyKind::Grid,
            &huge,
            ObjectiveType::Minimize,
            &[],
            1,
            0
        ),
        None
    );
    let continuous = [cont("lr", 0.1, 1.0, Scaling::Linear)];
    assert_eq!(
        propose(
            StrategyKind::Grid,
            &continuous,
            ObjectiveType::Minimize,
            &[],
            1,
            0
        ),
        None
    );
}

#[test]
fn bayesian_finds_better_branin_values_than_random() {
    let seeds = [1, 2, 3, 4, 5];
    let bests = |kind| {
        seeds
            .iter()
            .map(|&s| sequential_best(kind, s, 20))
            .collect::<Vec<_>>()
    };
    let (bayes, random) = (bests(StrategyKind::Bayesian), bests(StrategyKind::Random));
    eprintln!("Branin, 20 trials, best per seed: Bayesian {bayes:.3?}, Random {random:.3?}");
    let (bayes, random) = (median(bayes), median(random));
    assert!(bayes < 1.0, "Bayesian {bayes}");
    assert!(bayes * 2.0 < random, "Bayesian {bayes} vs Random {random}");
}

#[test]
fn parallel_bayesian_proposals_go_to_different_places() {
    let ranges = branin_ranges();
    let mut history = Vec::new();
    for index in 0..10 {
        let v = propose(
            StrategyKind::Bayesian,
            &ranges,
            ObjectiveType::Minimize,
            &history,
            7,
            index,
        );
        let v = v.unwrap();
        let y = branin(&v);
        history.push(done(v, y));
    }
    // Three trials proposed while the earlier ones of them still run.
    let mut points = Vec::new();
    for index in 10..13 {
        let v = propose(
            StrategyKind::Bayesian,
            &ranges,
            ObjectiveType::Minimize,
            &history,
            7,
            index,
        );
        let v = v.unwrap();
        points.push(((num(&v, "x1") + 5.0) / 15.0, num(&v, "x2") / 15.0));
        history.push(running(v));
    }
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
            assert!(d > 0.02, "proposals {a:?} and {b:?} are {d} apart");
        }
    }
}

#[test]
fn bayesian_maximises_as_it_minimises_the_negated_objective_and_skips_failures() {
    let ranges = [cont("x", -1.0, 1.0, Scaling::Linear), cat("c", &["a", "b"])];
    let mut min_history = Vec::new();
    let mut max_history = Vec::new();
    for index in 0..8 {
        let a = propose(
            StrategyKind::Bayesian,
            &ranges,
            ObjectiveType::Minimize,
            &min_history,
            4,
            index,
        );
        let b = propose(
            StrategyKind::Bayesian,
            &ranges,
            ObjectiveType::Maximize,
            &max_history,
            4,
            index,
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a, b, "trial {index}");
        let y = (num(&a, "x") - 0.3).powi(2) + if a["c"] == "a" { 0.0 } else { 0.5 };
        min_history.push(done(a.clone(), y));
        max_history.push(done(b, -y));
        // A failed trial is in the history but not in the model.
        let failed = TrialOutcome {
            values: BTreeMap::from([("x".into(), "0.9".into()), ("c".into(), "b".into())]),
            reports: vec![],
            objective: None,
            running: false,
        };
        min_history.push(failed.clone());
        max_history.push(failed);
    }
}

#[test]
fn off_never_stops() {
    let bad = curve(&[100.0, 100.0]);
    let peers = vec![curve(&[1.0, 1.0]); 5];
    assert!(!should_stop(
        StopRule::Off,
        ObjectiveType::Minimize,
        &bad,
        &peers
    ));
}

#[test]
fn the_median_rule_stops_a_worse_trial_and_keeps_a_better_one() {
    let peers = [
        curve(&[0.5, 0.6, 0.7]),
        curve(&[0.4, 0.5, 0.6, 0.7]),
        curve(&[0.6, 0.7]),
    ];
    // Running averages over two reports: 0.55, 0.45, 0.65 → median 0.55.
    let max = ObjectiveType::Maximize;
    assert!(should_stop(
        StopRule::Median,
        max,
        &curve(&[0.3, 0.4]),
        &peers
    ));
    assert!(!should_stop(
        StopRule::Median,
        max,
        &curve(&[0.3, 0.6]),
        &peers
    ));
    // The same numbers as a loss: now the low one is the good one.
    let min = ObjectiveType::Minimize;
    assert!(!should_stop(
        StopRule::Median,
        min,
        &curve(&[0.3, 0.4]),
        &peers
    ));
    assert!(should_stop(
        StopRule::Median,
        min,
        &curve(&[0.3, 0.6]),
        &peers
    ));
    // Judged by its latest value, not by its own average: (0.3 + 0.58) / 2 is below 0.55.
    assert!(!should_stop(
        StopRule::Median,
        max,
        &curve(&[0.3, 0.58]),
        &peers
    ));
    // At three reports only two peers reached that point: too few to judge.
    assert!(!should_stop(
        StopRule::Median,
        max,
        &curve(&[0.0, 0.0, 0.0]),
        &peers
    ));
    assert!(!should_stop(StopRule::Median, max, &curve(&[]), &peers));
    assert!(!should_stop(
        StopRule::Median,
        max,
        &curve(&[0.0]),
        &peers[..2]
    ));
}

#[test]
fn hyperband_halves_at_each_rung() {
    let max = ObjectiveType::Maximize;
    // Nine trials reached rung 1 with values 0.1 … 0.9: the best three go on.
    let all: Vec<TrialOutcome> = (1..=9).map(|i| curve(&[i as f64 / 10.0])).collect();
    let stopped: Vec<bool> = (0..9)
        .map(|i| {
            let others: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, t)| t.clone())
                .collect();
            should_stop(StopRule::Hyperband, max, &all[i], &others)
        })
        .collect();
    assert_eq!(
        stopped,
        [true, true, true, true, true, true, false, false, false]
    );
    // Minimising, the order turns around.
    assert!(!should_stop(
        StopRule::Hyperband,
        ObjectiveType::Minimize,
        &all[0],
        &all[1..]
    ));
    // Two trials at a rung: nothing to halve yet.
    assert!(!should_stop(StopRule::Hyperband, max, &all[0], &all[8..]));
    // With four reports a trial is judged at rung 3, by its third report.
    let peers = [
        curve(&[0.1, 0.2, 0.9]),
        curve(&[0.1, 0.2, 0.8]),
        curve(&[0.9, 0.9, 0.7]),
    ];
    assert!(should_stop(
        StopRule::Hyperband,
        max,
        &curve(&[0.9, 0.9, 0.5, 0.99]),
        &peers
    ));
    assert!(!should_stop(
        StopRule::Hyperband,
        max,
        &curve(&[0.0, 0.0, 0.95, 0.0]),
        &peers
    ));
}
