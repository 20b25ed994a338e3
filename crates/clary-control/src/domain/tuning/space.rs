//! The search space in encoded form: every range maps to one coordinate in [0, 1] (a unit
//! point), decoded to the strings a trial is sent. Categorical ranges are one-hot encoded
//! only when the Gaussian process needs features ([`Space::features`]).
//!
//! Scaling:
//! - `Linear`: the value itself.
//! - `Logarithmic`: `ln x` (needs min > 0).
//! - `ReverseLogarithmic`: `-ln(1 - x)`, for continuous ranges within [0, 1), which puts more
//!   trials close to 1 (as SageMaker describes it).
//! - `Auto`: `Logarithmic` when min > 0 and max / min >= 100 (the range spans two orders of
//!   magnitude or more, such as a learning rate), else `Linear`.
//!
//! A scaling whose precondition fails (the API refuses those, but warm-started or old jobs
//! may carry one) falls back to `Linear` rather than producing values outside the range.
//! Integer ranges are widened by half a step each side before the transform, so rounding the
//! decoded value gives every integer its fair share, the two ends included.

use super::rng::Rng;
use crate::domain::tuning::{ParameterRange, Scaling};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    Linear,
    Log,
    ReverseLog,
}

impl Transform {
    fn forward(self, x: f64) -> f64 {
        match self {
            Transform::Linear => x,
            Transform::Log => x.ln(),
            Transform::ReverseLog => -(1.0 - x).ln(),
        }
    }

    fn inverse(self, t: f64) -> f64 {
        match self {
            Transform::Linear => t,
            Transform::Log => t.exp(),
            Transform::ReverseLog => 1.0 - (-t).exp(),
        }
    }
}

#[derive(Debug, Clone)]
enum Dim {
    Numeric {
        min: f64,
        max: f64,
        /// The transformed ends of the (for integers, widened) interval.
        t_lo: f64,
        t_hi: f64,
        transform: Transform,
        integer: bool,
    },
    Categorical {
        values: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Space {
    names: Vec<String>,
    dims: Vec<Dim>,
}

fn transform_for(scaling: Scaling, min: f64, max: f64, integer: bool) -> Transform {
    let log_ok = min > 0.0;
    match scaling {
        Scaling::Linear => Transform::Linear,
        Scaling::Logarithmic if log_ok => Transform::Log,
        Scaling::ReverseLogarithmic if !integer && min >= 0.0 && max < 1.0 => Transform::ReverseLog,
        Scaling::Auto if log_ok && max / min >= 100.0 => Transform::Log,
        _ => Transform::Linear,
    }
}

fn numeric(min: f64, max: f64, scaling: Scaling, integer: bool) -> Option<Dim> {
    if !(min.is_finite() && max.is_finite() && min <= max) {
        return None;
    }
    let transform = transform_for(scaling, min, max, integer);
    // An integer log range has min >= 1, so its widened start stays positive.
    let (lo, hi) = if integer {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    Some(Dim::Numeric {
        min,
        max,
        t_lo: transform.forward(lo),
        t_hi: transform.forward(hi),
        transform,
        integer,
    })
}

impl Space {
    /// `None` when a range cannot be searched (min > max, no values, not finite).
    pub(super) fn new(ranges: &[ParameterRange]) -> Option<Space> {
        let mut names = Vec::with_capacity(ranges.len());
        let mut dims = Vec::with_capacity(ranges.len());
        for range in ranges {
            names.push(range.name().to_string());
            dims.push(match range {
                ParameterRange::Integer {
                    min, max, scaling, ..
                } => numeric(*min as f64, *max as f64, *scaling, true)?,
                ParameterRange::Continuous {
                    min, max, scaling, ..
                } => numeric(*min, *max, *scaling, false)?,
                ParameterRange::Categorical { values, .. } if !values.is_empty() => {
                    Dim::Categorical {
                        values: values.clone(),
                    }
                }
                ParameterRange::Categorical { .. } => return None,
            });
        }
        Some(Space { names, dims })
    }

    pub(super) fn len(&self) -> usize {
        self.dims.len()
    }

    pub(super) fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let mut u: Vec<f64> = self.dims.iter().map(|_| rng.unit()).collect();
        self.snap(&mut u);
        u
    }

    /// Moves a unit point onto the nearest point a trial can actually get (an integer, a
    /// category), so the model scores what will run.
    pub(super) fn snap(&self, u: &mut [f64]) {
        for (d, x) in self.dims.iter().zip(u.iter_mut()) {
            *x = x.clamp(0.0, 1.0);
            match d {
                Dim::Numeric { integer: true, .. } => *x = encode_num(d, decode_num(d, *x)),
                Dim::Numeric { .. } => {}
                Dim::Categorical { values } => {
                    let k = values.len();
                    *x = (category(*x, k) as f64 + 0.5) / k as f64;
                }
            }
        }
    }

    pub(super) fn decode(&self, u: &[f64]) -> BTreeMap<String, String> {
        self.names
            .iter()
            .zip(&self.dims)
            .zip(u)
            .map(|((name, d), &x)| {
                let text = match d {
                    Dim::Numeric { integer: true, .. } => format!("{}", decode_num(d, x) as i64),
                    Dim::Numeric { .. } => format!("{}", decode_num(d, x)),
                    Dim::Categorical { values } => values[category(x, values.len())].clone(),
                };
                (name.clone(), text)
            })
            .collect()
    }

    /// The unit point of values a trial ran with; `None` when one is missing or foreign (a
    /// category this job does not have, a number that does not parse).
    pub(super) fn encode(&self, values: &BTreeMap<String, String>) -> Option<Vec<f64>> {
        self.names
            .iter()
            .zip(&self.dims)
            .map(|(name, d)| {
                let text = values.get(name)?;
                match d {
                    Dim::Numeric { .. } => {
                        let v: f64 = text.trim().parse().ok()?;
                        v.is_finite().then(|| encode_num(d, v))
                    }
                    Dim::Categorical { values } => {
                        let i = values.iter().position(|v| v == text)?;
                        Some((i as f64 + 0.5) / values.len() as f64)
                    }
                }
            })
            .collect()
    }

    /// The Gaussian process's input: numeric coordinates as they are, each category one-hot
    /// scaled so that changing a category counts as far as crossing a numeric range.
    pub(super) fn features(&self, u: &[f64]) -> Vec<f64> {
        let mut f = Vec::with_capacity(self.dims.len());
        for (d, &x) in self.dims.iter().zip(u) {
            match d {
                Dim::Numeric { .. } => f.push(x),
                Dim::Categorical { values } => {
                    let hot = category(x, values.len());
                    f.extend((0..values.len()).map(|i| {
                        if i == hot {
                            std::f64::consts::FRAC_1_SQRT_2
                        } else {
                            0.0
                        }
                    }));
                }
            }
        }
        f
    }

    /// Whether coordinate `i` is categorical (perturbed by resampling, not by a nudge).
    pub(super) fn is_categorical(&self, i: usize) -> bool {
        matches!(self.dims[i], Dim::Categorical { .. })
    }

    /// How many distinct points there are, when every range is discrete (and the count fits).
    pub(super) fn discrete_size(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |acc, d| {
            let n = match d {
                Dim::Numeric {
                    min,
                    max,
                    integer: true,
                    ..
                } => (*max as i64).checked_sub(*min as i64)?.checked_add(1)? as u64,
                Dim::Numeric { .. } => return None,
                Dim::Categorical { values } => values.len() as u64,
            };
            acc.checked_mul(n)
        })
    }

    /// The `i`-th point of the discrete space in a fixed order: the first range varies
    /// slowest, as nested loops written in the ranges' order would enumerate them.
    pub(super) fn nth_discrete(&self, mut i: u64) -> Option<BTreeMap<String, String>> {
        let mut out = Vec::with_capacity(self.dims.len());
        for d in self.dims.iter().rev() {
            let (n, text) = match d {
                Dim::Numeric {
                    min,
                    max,
                    integer: true,
                    ..
                } => {
                    // A span too wide for u64 cannot be a grid anyone runs to the end.
                    let n = (*max as i64).checked_sub(*min as i64)?.checked_add(1)? as u64;
                    (n, format!("{}", (*min as i64).checked_add((i % n) as i64)?))
                }
                Dim::Numeric { .. } => return None,
                Dim::Categorical { values } => {
                    let n = values.len() as u64;
                    (n, values[(i % n) as usize].clone())
                }
            };
            out.push(text);
            i /= n;
        }
        if i != 0 {
            return None; // past the last combination
        }
        out.reverse();
        Some(self.names.iter().cloned().zip(out).collect())
    }
}

fn category(x: f64, k: usize) -> usize {
    ((x * k as f64) as usize).min(k - 1)
}

fn decode_num(d: &Dim, x: f64) -> f64 {
    let Dim::Numeric {
        min,
        max,
        t_lo,
        t_hi,
        transform,
        integer,
    } = *d
    else {
        unreachable!("numeric dimensions only")
    };
    let v = transform.inverse(t_lo + x * (t_hi - t_lo));
    let v = if integer { v.round() } else { v };
    // Rounding in the transform may step a hair outside; the range is the contract.
    v.clamp(min, max)
}

fn encode_num(d: &Dim, v: f64) -> f64 {
    let Dim::Numeric {
        min,
        max,
        t_lo,
        t_hi,
        transform,
        ..
    } = *d
    else {
        unreachable!("numeric dimensions only")
    };
    if t_hi <= t_lo {
        return 0.5;
    }
    ((transform.forward(v.clamp(min, max)) - t_lo) / (t_hi - t_lo)).clamp(0.0, 1.0)
}
