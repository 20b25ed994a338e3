//! A Gaussian process regressor (Matérn 5/2 kernel, isotropic length-scale, a noise term)
//! and expected improvement, for the Bayesian strategy. Inputs are features in [0, 1]
//! (see `Space::features`); targets are normalised by the caller (mean 0, variance 1, lower is
//! better), so the signal variance is fixed at 1 and only the length-scale and noise are
//! chosen, from a small grid, by marginal likelihood.

const LENGTH_SCALES: [f64; 8] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0];
const NOISES: [f64; 4] = [1e-6, 1e-4, 1e-2, 1e-1];

pub(super) struct Gp {
    x: Vec<Vec<f64>>,
    /// Lower Cholesky factor of K + noise·I, row-major n×n.
    chol: Vec<f64>,
    /// (K + noise·I)⁻¹ y.
    alpha: Vec<f64>,
    length_scale: f64,
}

fn matern52(a: &[f64], b: &[f64], length_scale: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
    let r = (5.0 * d2).sqrt() / length_scale;
    (1.0 + r + r * r / 3.0) * (-r).exp()
}

/// In-place Cholesky of a symmetric positive definite n×n matrix; `false` if it is not.
fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    true
}

/// Solves L v = b (L lower triangular).
fn forward(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves Lᵀ v = b.
fn backward(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

impl Gp {
    /// The process conditioned on (x, y) with the given hyperparameters, and its log marginal
    /// likelihood; `None` if the kernel matrix is not positive definite.
    pub(super) fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        length_scale: f64,
        noise: f64,
    ) -> Option<(Gp, f64)> {
        let n = x.len();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = matern52(&x[i], &x[j], length_scale);
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
            k[i * n + i] += noise + 1e-9;
        }
        if !cholesky(&mut k, n) {
            return None;
        }
        let mut alpha = y.to_vec();
        forward(&k, n, &mut alpha);
        let fit: f64 = alpha.iter().map(|a| a * a).sum();
        backward(&k, n, &mut alpha);
        let log_det: f64 = (0..n).map(|i| k[i * n + i].ln()).sum();
        let log_lik = -0.5 * fit - log_det - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        let gp = Gp {
            x: x.to_vec(),
            chol: k,
            alpha,
            length_scale,
        };
        Some((gp, log_lik))
    }

    /// The (length-scale, noise) of the grid that explains (x, y) best.
    pub(super) fn choose_hyperparameters(x: &[Vec<f64>], y: &[f64]) -> (f64, f64) {
        let mut best = (0.3, 1e-2, f64::NEG_INFINITY);
        for &ls in &LENGTH_SCALES {
            for &noise in &NOISES {
                if let Some((_, ll)) = Gp::fit(x, y, ls, noise)
                    && ll > best.2
                {
                    best = (ls, noise, ll);
                }
            }
        }
        (best.0, best.1)
    }

    /// Posterior mean and standard deviation at `p`.
    pub(super) fn predict(&self, p: &[f64]) -> (f64, f64) {
        let n = self.x.len();
        let mut k: Vec<f64> = self
            .x
            .iter()
            .map(|xi| matern52(xi, p, self.length_scale))
            .collect();
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        forward(&self.chol, n, &mut k);
        let var = 1.0 - k.iter().map(|v| v * v).sum::<f64>();
        (mean, var.max(1e-12).sqrt())
    }
}

/// The standard normal's CDF, through erfc (Chebyshev fit, relative error under 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Expected improvement below `best` (lower is better) of a prediction (mean, sd), with a
/// small margin `xi` so that near-ties with the best point do not win by rounding.
pub(super) fn expected_improvement(mean: f64, sd: f64, best: f64, xi: f64) -> f64 {
    let gain = best - mean - xi;
    let z = gain / sd;
    (gain * normal_cdf(z) + sd * normal_pdf(z)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        // [[4, 2], [2, 3]] x = [2, 1] has x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        assert!(cholesky(&mut a, 2));
        let mut b = vec![2.0, 1.0];
        forward(&a, 2, &mut b);
        backward(&a, 2, &mut b);
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        assert!(!cholesky(&mut [1.0, 2.0, 2.0, 1.0], 2));
    }

    #[test]
    fn the_process_interpolates_and_is_unsure_far_away() {
        let x: Vec<Vec<f64>> = (0..6).map(|i| vec![i as f64 / 5.0]).collect();
        let y: Vec<f64> = x.iter().map(|p| (6.0 * p[0]).sin()).collect();
        let (ls, noise) = Gp::choose_hyperparameters(&x, &y);
        let (gp, _) = Gp::fit(&x, &y, ls, noise).unwrap();
        let (m, sd) = gp.predict(&[0.4]);
        assert!((m - (2.4f64).sin()).abs() < 0.05 && sd < 0.1, "{m} {sd}");
        let (_, far) = gp.predict(&[3.0]);
        assert!(far > 0.9, "{far}");
    }

    #[test]
    fn normal_cdf_and_expected_improvement_behave() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.96) - 0.025).abs() < 1e-4);
        let sure_better = expected_improvement(-1.0, 1e-6, 0.0, 0.0);
        assert!((sure_better - 1.0).abs() < 1e-6);
        assert!(
            expected_improvement(0.0, 1.0, 0.0, 0.0) > expected_improvement(0.0, 0.1, 0.0, 0.0)
        );
        assert!(expected_improvement(5.0, 0.1, 0.0, 0.0) < 1e-12);
    }
}
