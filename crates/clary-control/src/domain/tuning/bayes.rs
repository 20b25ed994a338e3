//! The Bayesian strategy: a Gaussian process over the encoded space, fitted to the completed
//! trials, and the candidate with the highest expected improvement. Trials still running are
//! in the model as if they had returned the mean objective (a constant liar), so proposals
//! made while others run go somewhere else instead of all landing on the same optimum.

use super::gp::{Gp, expected_improvement};
use super::rng::{Rng, Stream};
use super::space::Space;
use crate::domain::tuning::{ObjectiveType, TrialOutcome};

/// The most completed trials the model is fitted to: the best ones, beyond which fitting
/// (cubic in the count) would cost more than the proposal is worth.
const MAX_MODEL_POINTS: usize = 256;
const RANDOM_CANDIDATES: usize = 2000;
/// Best trials whose neighbourhoods are searched, and candidates drawn around each.
const LOCAL_CENTRES: usize = 5;
const LOCAL_CANDIDATES: usize = 150;
/// The hill-climb around the best candidate: a step size per round.
const REFINE_STEPS: [f64; 4] = [0.05, 0.02, 0.01, 0.004];
const REFINE_CANDIDATES: usize = 64;
/// Improvement margin in normalised objective units.
const XI: f64 = 0.01;

/// How many trials are drawn at random before the model takes over.
pub(super) fn initial_trials(space: &Space) -> usize {
    3.max(space.len() + 1)
}

/// The unit point of the next trial, or `None` when the model cannot be used yet (too few
/// completed trials, or every candidate was tried already): the caller then draws at random.
pub(super) fn propose(
    space: &Space,
    objective: ObjectiveType,
    history: &[TrialOutcome],
    seed: u64,
    index: u32,
    seen: &[Vec<f64>],
) -> Option<Vec<f64>> {
    // The first trials explore at random; a warm start's parents' trials count toward them
    // (in a cold start the history holds exactly the `index` earlier trials).
    if history.len() < initial_trials(space) {
        return None;
    }
    // Lower is better inside: maximised objectives are negated.
    let sign = match objective {
        ObjectiveType::Minimize => 1.0,
        ObjectiveType::Maximize => -1.0,
    };
    let mut done: Vec<(Vec<f64>, f64)> = history
        .iter()
        .filter_map(|t| {
            let y = t.objective.filter(|y| y.is_finite())?;
            Some((space.encode(&t.values)?, sign * y))
        })
        .collect();
    if done.len() < 2 {
        return None;
    }
    done.sort_by(|a, b| a.1.total_cmp(&b.1));
    done.truncate(MAX_MODEL_POINTS);
    let running: Vec<Vec<f64>> = history
        .iter()
        .filter(|t| t.running && t.objective.is_none())
        .filter_map(|t| space.encode(&t.values))
        .collect();

    let n = done.len() as f64;
    let mean = done.iter().map(|d| d.1).sum::<f64>() / n;
    let sd = (done.iter().map(|d| (d.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let sd = if sd > 1e-12 { sd } else { 1.0 };
    let mut x: Vec<Vec<f64>> = done.iter().map(|d| space.features(&d.0)).collect();
    let mut y: Vec<f64> = done.iter().map(|d| (d.1 - mean) / sd).collect();
    // Hyperparameters come from real results only; the lies would flatten the fit.
    let (length_scale, noise) = Gp::choose_hyperparameters(&x, &y);
    x.extend(running.iter().map(|u| space.features(u)));
    y.resize(x.len(), 0.0);
    let gp = match Gp::fit(&x, &y, length_scale, noise.max(1e-4)) {
        Some((gp, _)) => gp,
        None => Gp::fit(&x, &y, length_scale, 0.1)?.0,
    };
    let best = y[..done.len()]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);

    let mut rng = Rng::new(seed, index, Stream::Candidates);
    let score = |u: &[f64]| -> f64 {
        if seen.iter().any(|s| same_point(s, u)) {
            return f64::NEG_INFINITY;
        }
        let (m, s) = gp.predict(&space.features(u));
        expected_improvement(m, s, best, XI)
    };
    let mut top: Option<(Vec<f64>, f64)> = None;
    let consider = |u: Vec<f64>, top: &mut Option<(Vec<f64>, f64)>| {
        let s = score(&u);
        if s.is_finite() && top.as_ref().is_none_or(|t| s > t.1) {
            *top = Some((u, s));
        }
    };
    for _ in 0..RANDOM_CANDIDATES {
        consider(space.sample(&mut rng), &mut top);
    }
    for (centre, _) in done.iter().take(LOCAL_CENTRES) {
        for i in 0..LOCAL_CANDIDATES {
            let step = [0.02, 0.05, 0.15][i % 3];
            consider(perturb(space, centre, step, &mut rng), &mut top);
        }
    }
    for step in REFINE_STEPS {
        let Some((centre, _)) = top.clone() else {
            break;
        };
        for _ in 0..REFINE_CANDIDATES {
            consider(perturb(space, &centre, step, &mut rng), &mut top);
        }
    }
    top.map(|t| t.0)
}

/// A neighbour of `centre`: numeric coordinates nudged by a normal step, each category
/// redrawn with a small chance (a nudge would rarely cross to another one).
fn perturb(space: &Space, centre: &[f64], step: f64, rng: &mut Rng) -> Vec<f64> {
    let mut u: Vec<f64> = centre
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if space.is_categorical(i) {
                if rng.unit() < 0.2 { rng.unit() } else { c }
            } else {
                c + step * rng.normal()
            }
        })
        .collect();
    space.snap(&mut u);
    u
}

pub(super) fn same_point(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-12)
}
