//! The search strategies and early-stopping rules (pure: seeded, no I/O).
//!
//! - Random: each trial is drawn uniformly in the encoded space (see `space` for the scalings)
//!   from a generator seeded by (seed, trial index) alone, redrawn when it repeats an earlier
//!   trial and the space has room for another.
//! - Grid: the Cartesian product of the categorical and integer ranges, the first range
//!   varying slowest; trial `index` is the index-th combination, `None` once exhausted or when
//!   a continuous range (which cannot be gridded) is present.
//! - Bayesian: random for the first max(3, ranges + 1) trials, then a Gaussian process with
//!   expected improvement (see `bayes`).
//! - Hyperband: configurations as Random draws them; its gain is in [`should_stop`].

#[path = "bayes.rs"]
mod bayes;
#[path = "gp.rs"]
mod gp;
#[path = "rng.rs"]
mod rng;
#[path = "space.rs"]
mod space;

use super::{ObjectiveType, ParameterRange, StopRule, StrategyKind, TrialOutcome};
use bayes::same_point;
use rng::{Rng, Stream};
use space::Space;
use std::collections::BTreeMap;

/// Other trials that must have reached a report before the median rule judges it: the
/// median of one or two curves says little.
pub const MEDIAN_MIN_PEERS: usize = 3;
/// Hyperband's reduction factor: rungs at 1, 3, 9, 27… reports, and the best 1/3 of the
/// trials at a rung go on.
pub const HYPERBAND_ETA: usize = 3;
/// Redraws before Random concludes that the space is nearly exhausted.
const REDRAWS: usize = 64;
/// The largest discrete space Random enumerates to find what is left.
const ENUMERABLE: u64 = 1 << 16;

/// The tuned hyperparameters of trial number `index` (0-based), given what earlier trials
/// found; the same `seed`, ranges and history give the same answer. `None` when the strategy
/// has nothing left to try (a grid that is exhausted).
pub fn propose(
    kind: StrategyKind,
    ranges: &[ParameterRange],
    objective: ObjectiveType,
    history: &[TrialOutcome],
    seed: u64,
    index: u32,
) -> Option<BTreeMap<String, String>> {
    let space = Space::new(ranges)?;
    if kind == StrategyKind::Grid {
        return space.nth_discrete(u64::from(index));
    }
    // Every earlier trial, failed ones included: repeating one teaches nothing.
    let seen: Vec<Vec<f64>> = history
        .iter()
        .filter_map(|t| space.encode(&t.values))
        .collect();
    let model = match kind {
        StrategyKind::Bayesian => bayes::propose(&space, objective, history, seed, index, &seen),
        _ => None,
    };
    let u = model.unwrap_or_else(|| random(&space, &seen, seed, index));
    Some(space.decode(&u))
}

fn random(space: &Space, seen: &[Vec<f64>], seed: u64, index: u32) -> Vec<f64> {
    let mut rng = Rng::new(seed, index, Stream::Uniform);
    let first = space.sample(&mut rng);
    let fresh = |u: &Vec<f64>| !seen.iter().any(|s| same_point(s, u));
    if fresh(&first) {
        return first;
    }
    for _ in 1..REDRAWS {
        let u = space.sample(&mut rng);
        if fresh(&u) {
            return u;
        }
    }
    // So many repeats mean a small discrete space nearly used up: pick among what is left.
    if let Some(size) = space.discrete_size().filter(|&s| s <= ENUMERABLE) {
        let free: Vec<Vec<f64>> = (0..size)
            .filter_map(|i| space.encode(&space.nth_discrete(i)?))
            .filter(fresh)
            .collect();
        if !free.is_empty() {
            return free[rng.below(free.len() as u64) as usize].clone();
        }
    }
    // Everything was tried: a repeat is the only answer left.
    first
}

/// Whether the running `trial` should stop now, by `rule`, against every other trial.
pub fn should_stop(
    rule: StopRule,
    objective: ObjectiveType,
    trial: &TrialOutcome,
    others: &[TrialOutcome],
) -> bool {
    match rule {
        StopRule::Off => false,
        StopRule::Median => median_stop(objective, trial, others),
        StopRule::Hyperband => hyperband_stop(objective, trial, others),
    }
}

/// SageMaker's rule for `TrainingJobEarlyStoppingType: Auto`, read literally: stop when the
/// trial's value at its latest report n (not its own average) is worse than the median of
/// the other trials' running averages over their first n reports. Only trials that reached n
/// reports count, and at least [`MEDIAN_MIN_PEERS`] of them must have.
fn median_stop(objective: ObjectiveType, trial: &TrialOutcome, others: &[TrialOutcome]) -> bool {
    let n = trial.reports.len();
    let Some(&current) = trial.reports.last() else {
        return false;
    };
    let mut averages: Vec<f64> = others
        .iter()
        .filter(|o| o.reports.len() >= n)
        .map(|o| o.reports[..n].iter().sum::<f64>() / n as f64)
        .filter(|a| a.is_finite())
        .collect();
    if averages.len() < MEDIAN_MIN_PEERS {
        return false;
    }
    averages.sort_by(f64::total_cmp);
    let mid = averages.len() / 2;
    let median = if averages.len().is_multiple_of(2) {
        (averages[mid - 1] + averages[mid]) / 2.0
    } else {
        averages[mid]
    };
    objective.better(median, current)
}

/// Successive halving, asynchronously: the trial is judged at the highest rung (1, η, η², …
/// reports) it has reached, by its value at that report against every trial that reached it,
/// and goes on only if it is among the best 1/η of them. With fewer than η trials at the rung
/// there is nothing to halve yet.
fn hyperband_stop(objective: ObjectiveType, trial: &TrialOutcome, others: &[TrialOutcome]) -> bool {
    let n = trial.reports.len();
    if n == 0 {
        return false;
    }
    let mut rung = 1;
    while rung * HYPERBAND_ETA <= n {
        rung *= HYPERBAND_ETA;
    }
    let value = trial.reports[rung - 1];
    let peers: Vec<f64> = others
        .iter()
        .filter(|o| o.reports.len() >= rung)
        .map(|o| o.reports[rung - 1])
        .collect();
    let reached = peers.len() + 1;
    if reached < HYPERBAND_ETA {
        return false;
    }
    let keep = reached / HYPERBAND_ETA;
    let ahead = peers
        .iter()
        .filter(|&&p| objective.better(p, value))
        .count();
    ahead >= keep
}

#[cfg(test)]
#[path = "strategy_tests.rs"]
mod tests;
