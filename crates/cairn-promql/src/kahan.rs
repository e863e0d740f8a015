//! Compensated summation, as Prometheus computes sums and means, so that
//! results match it to the last bit.

/// Adds `inc` to `sum` with Neumaier's compensation `c`.
#[inline]
pub(crate) fn sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// A running compensated sum.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    #[inline]
    pub(crate) fn add(&mut self, v: f64) {
        (self.sum, self.c) = sum_inc(v, self.sum, self.c);
    }

    pub(crate) fn value(&self) -> f64 {
        if self.sum.is_infinite() { self.sum } else { self.sum + self.c }
    }
}

/// A running mean that switches to incremental averaging when the plain
/// sum overflows, as Prometheus's `avg` and `avg_over_time` do.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mean {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        if !self.incremental {
            let (ns, nc) = sum_inc(v, self.sum, self.c);
            if self.count == 1.0 || !ns.is_infinite() {
                self.sum = ns;
                self.c = nc;
                return;
            }
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            if v.is_infinite() && (self.mean > 0.0) == (v > 0.0) {
                return;
            }
            if !v.is_infinite() && !v.is_nan() {
                return;
            }
        }
        let corrected = self.mean + self.c;
        (self.mean, self.c) = sum_inc(v / self.count - corrected / self.count, self.mean, self.c);
    }

    pub(crate) fn value(&self) -> f64 {
        if self.incremental { self.mean + self.c } else { self.sum / self.count + self.c / self.count }
    }
}

/// Running variance (Welford with compensated sums).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Variance {
    count: f64,
    mean: f64,
    c_mean: f64,
    aux: f64,
    c_aux: f64,
}

impl Variance {
    pub(crate) fn add(&mut self, v: f64) {
        self.count += 1.0;
        let delta = v - (self.mean + self.c_mean);
        (self.mean, self.c_mean) = sum_inc(delta / self.count, self.mean, self.c_mean);
        (self.aux, self.c_aux) = sum_inc(delta * (v - (self.mean + self.c_mean)), self.aux, self.c_aux);
    }

    pub(crate) fn stdvar(&self) -> f64 {
        (self.aux + self.c_aux) / self.count
    }

    pub(crate) fn stddev(&self) -> f64 {
        self.stdvar().sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensation_recovers_lost_bits() {
        let mut k = KahanSum::default();
        for v in [1e100, 1.0, -1e100] {
            k.add(v);
        }
        assert_eq!(k.value(), 1.0);
        let mut m = Mean::default();
        for v in [f64::MAX, f64::MAX, 0.0] {
            m.add(v);
        }
        assert!((m.value() - f64::MAX / 3.0 * 2.0).abs() / f64::MAX < 1e-12, "{}", m.value());
        let mut var = Variance::default();
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            var.add(v);
        }
        assert_eq!(var.stddev(), 2.0);
    }
}
