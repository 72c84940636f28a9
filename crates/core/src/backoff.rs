//! Exponential backoff with jitter, as a pure function of the attempt count
//! and a random draw the caller supplies.

use std::time::Duration;

use rand::Rng;

/// Backoff settings. Defaults follow kube-scheduler: 1 s doubling to 10 s;
/// up to 10 % jitter is added so a burst of failures does not retry in step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay (the doubling stops here).
    pub max: Duration,
    /// Fraction of the delay added at random, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (1 = first retry), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Delay with jitter drawn from `rng`: in `[base, base × (1 + jitter)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 + rng.random_range(0.0..=jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn doubles_from_one_second_to_ten() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=6).map(|a| b.base_delay(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.base_delay(1000), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..10 {
            let d = b.delay(attempt, &mut rng);
            let base = b.base_delay(attempt);
            assert!(d >= base && d <= base.mul_f64(1.1), "{d:?} vs {base:?}");
        }
    }
}
