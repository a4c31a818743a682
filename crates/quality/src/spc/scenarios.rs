//! Generated metric series with known answers, for the tests and for the
//! benchmark that reports each rule's detection delay and false alarms.
//!
//! A series is a per-window rate (nulls per row, say): each window draws
//! `rows` Bernoulli trials at the window's true rate, so the noise is the
//! binomial noise real rate metrics have, not an idealised normal.

/// How the true rate moves after warm-up.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// It does not.
    Stationary,
    /// It jumps by `sigmas` (binomial standard deviations) at the onset.
    Step { sigmas: f64 },
    /// It rises linearly by `sigmas` over `windows` windows, then stays.
    Ramp { sigmas: f64, windows: u32 },
}

/// A rate series: `warmup` windows at `rate`, then `after` windows shaped by `shape`.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub rate: f64,
    pub rows: u32,
    pub warmup: u32,
    pub after: u32,
    pub shape: Shape,
}

impl Scenario {
    /// One window's binomial standard deviation of the rate.
    pub fn sigma(&self) -> f64 {
        (self.rate * (1.0 - self.rate) / f64::from(self.rows)).sqrt()
    }

    /// The true rate of window `i` (counted from 0, warm-up included).
    pub fn true_rate(&self, i: u32) -> f64 {
        let Some(t) = i.checked_sub(self.warmup) else { return self.rate };
        let shift = match self.shape {
            Shape::Stationary => 0.0,
            Shape::Step { sigmas } => sigmas,
            Shape::Ramp { sigmas, windows } => sigmas * (f64::from(t + 1) / f64::from(windows)).min(1.0),
        };
        (self.rate + shift * self.sigma()).clamp(0.0, 1.0)
    }

    /// The observed rates, drawn with `seed`.
    pub fn draw(&self, seed: u64) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..self.warmup + self.after)
            .map(|i| {
                let p = self.true_rate(i);
                let hits = (0..self.rows).filter(|_| rng.f64() < p).count();
                hits as f64 / f64::from(self.rows)
            })
            .collect()
    }
}
