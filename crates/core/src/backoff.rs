//! Exponential backoff with jitter, as a pure function of the attempt count
//! and a random draw the caller supplies; [`Retries`] carries the attempt
//! count (and a seeded generator) for a loop that retries one thing, such as
//! an MQTT reconnect.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// One retry sequence: a [`Backoff`], the number of attempts so far and a
/// generator for the jitter seeded by the caller (so two processes that
/// failed together, given different seeds, do not retry in step).
/// [`Retries::reset`] after a success starts the sequence over.
#[derive(Clone, Debug)]
pub struct Retries {
    backoff: Backoff,
    attempt: u32,
    rng: StdRng,
}

impl Retries {
    /// A sequence of `backoff`'s delays, jitter drawn from a generator seeded with `seed`.
    pub fn new(backoff: Backoff, seed: u64) -> Self {
        Self {
            backoff,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next retry; counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt, &mut self.rng)
    }

    /// Retries counted since the start or the last [`Retries::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
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

    #[test]
    fn retries_double_cap_and_reset() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            jitter: 0.0,
        };
        let mut r = Retries::new(b, 1);
        let d: Vec<u128> = (0..4).map(|_| r.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350]);
        assert_eq!(r.attempts(), 4);
        r.reset();
        assert_eq!(r.attempts(), 0);
        assert_eq!(r.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn retries_with_different_seeds_do_not_move_in_step() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.5,
        };
        let run = |seed| {
            let mut r = Retries::new(b, seed);
            (0..8).map(|_| r.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3), "same seed, same delays");
        assert_ne!(run(3), run(4));
    }

    proptest::proptest! {
        #[test]
        fn retries_stay_within_base_and_jitter(seed: u64, n in 1usize..64) {
            let b = Backoff::default();
            let mut r = Retries::new(b, seed);
            for attempt in 1..=n as u32 {
                let d = r.next_delay();
                let base = b.base_delay(attempt);
                proptest::prop_assert!(d >= base && d <= base.mul_f64(1.0 + b.jitter));
            }
        }
    }
}
