//! The scheduling queue: an active queue ordered by priority (highest first)
//! then age (oldest first), and a backoff queue of pods whose last attempt
//! failed, each with the time it may be retried. Like kube-scheduler, pods
//! in backoff move back to active at once when the cluster changes in a way
//! that may let them fit (a node added or turned Ready, a pod deleted).
//!
//! Pure: time is passed in as [`Millis`], randomness as an `Rng`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use rand::Rng;

use crate::backoff::Backoff;
use crate::model::{Millis, PodKey};

/// Ordering key of the active queue.
type ActiveKey = (Reverse<i32>, Millis, PodKey);

#[derive(Clone, Debug)]
struct Entry {
    priority: i32,
    created_at: Millis,
    /// Failed attempts so far.
    attempts: u32,
    /// `Some(t)` while in backoff until `t`.
    retry_at: Option<Millis>,
}

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct SchedulingQueue {
    backoff: Backoff,
    entries: HashMap<PodKey, Entry>,
    active: BTreeSet<ActiveKey>,
    waiting: BTreeSet<(Millis, PodKey)>,
}

impl SchedulingQueue {
    /// An empty queue with the given backoff settings.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            ..Default::default()
        }
    }

    /// Adds a pending pod to the active queue, or updates its priority.
    /// A pod already in backoff stays there.
    pub fn add(&mut self, key: PodKey, priority: i32, created_at: Millis) {
        if let Some(e) = self.entries.get_mut(&key) {
            // Re-order only a pod that is waiting in the active queue; a popped
            // pod (being decided or bound) must not be handed out twice.
            let was_active = e.retry_at.is_none()
                && self
                    .active
                    .remove(&(Reverse(e.priority), e.created_at, key.clone()));
            e.priority = priority;
            if was_active {
                self.active.insert((Reverse(priority), e.created_at, key));
            }
            return;
        }
        self.active
            .insert((Reverse(priority), created_at, key.clone()));
        self.entries.insert(
            key,
            Entry {
                priority,
                created_at,
                attempts: 0,
                retry_at: None,
            },
        );
    }

    /// Takes the highest-priority, oldest active pod. It stays known to the
    /// queue (for attempt counting) until [`SchedulingQueue::done`] or
    /// [`SchedulingQueue::remove`].
    pub fn pop(&mut self) -> Option<PodKey> {
        let first = self.active.pop_first()?;
        Some(first.2)
    }

    /// Takes a specific pod out of the active queue or out of backoff (e.g.
    /// the other members of a gang that is scheduled as one unit), as if it
    /// had been popped: a backoff timer firing later must not hand it out
    /// again while its unit is being decided or bound. Returns whether it
    /// was waiting (active or in backoff).
    pub fn take(&mut self, key: &PodKey) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        match e.retry_at.take() {
            Some(at) => self.waiting.remove(&(at, key.clone())),
            None => self
                .active
                .remove(&(Reverse(e.priority), e.created_at, key.clone())),
        }
    }

    /// Puts a pod whose attempt failed into backoff; returns the retry time.
    pub fn backoff(&mut self, key: &PodKey, now: Millis, rng: &mut impl Rng) -> Millis {
        let delay = {
            let Some(e) = self.entries.get_mut(key) else {
                return now;
            };
            e.attempts += 1;
            self.backoff.delay(e.attempts, rng)
        };
        self.defer(key, now + delay.as_millis() as Millis)
    }

    /// Puts a pod in backoff until `retry_at` without counting an attempt
    /// (a gang waiting for its members, a preemptor waiting for its victims).
    pub fn defer(&mut self, key: &PodKey, retry_at: Millis) -> Millis {
        let Some(e) = self.entries.get_mut(key) else {
            return retry_at;
        };
        self.active
            .remove(&(Reverse(e.priority), e.created_at, key.clone()));
        if let Some(old) = e.retry_at.replace(retry_at) {
            self.waiting.remove(&(old, key.clone()));
        }
        self.waiting.insert((retry_at, key.clone()));
        retry_at
    }

    /// Failed attempts recorded for a pod.
    pub fn attempts(&self, key: &PodKey) -> u32 {
        self.entries.get(key).map_or(0, |e| e.attempts)
    }

    /// Moves every pod whose backoff has expired to the active queue.
    pub fn promote_due(&mut self, now: Millis) -> usize {
        let mut moved = 0;
        while let Some((at, _)) = self.waiting.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.waiting.pop_first() {
                self.activate(key);
                moved += 1;
            }
        }
        moved
    }

    /// Moves every waiting pod to the active queue at once: the cluster
    /// changed so that they may fit now.
    pub fn move_all_to_active(&mut self) -> usize {
        let waiting = std::mem::take(&mut self.waiting);
        let n = waiting.len();
        for (_, key) in waiting {
            self.activate(key);
        }
        n
    }

    fn activate(&mut self, key: PodKey) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.retry_at = None;
            self.active.insert((Reverse(e.priority), e.created_at, key));
        }
    }

    /// Forgets a pod after it was bound; same as [`SchedulingQueue::remove`].
    pub fn done(&mut self, key: &PodKey) {
        self.remove(key);
    }

    /// Forgets a pod (bound elsewhere, deleted).
    pub fn remove(&mut self, key: &PodKey) {
        if let Some(e) = self.entries.remove(key) {
            self.active
                .remove(&(Reverse(e.priority), e.created_at, key.clone()));
            if let Some(at) = e.retry_at {
                self.waiting.remove(&(at, key.clone()));
            }
        }
    }

    /// Whether the queue knows the pod (active, in flight or in backoff).
    pub fn contains(&self, key: &PodKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Pods in the active queue.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Pods in backoff.
    pub fn backoff_len(&self) -> usize {
        self.waiting.len()
    }

    /// Pods known to the queue, including those popped and not yet done.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Earliest retry time in backoff, for the loop's timer.
    pub fn next_retry_at(&self) -> Option<Millis> {
        self.waiting.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn k(n: &str) -> PodKey {
        PodKey::new("ns", n)
    }

    #[test]
    fn highest_priority_first_then_oldest() {
        let mut q = SchedulingQueue::new(Backoff::default());
        q.add(k("old-low"), 0, 1);
        q.add(k("new-high"), 10, 5);
        q.add(k("old-high"), 10, 2);
        q.add(k("new-low"), 0, 9);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|k| k.name).collect();
        assert_eq!(order, ["old-high", "new-high", "old-low", "new-low"]);
    }

    #[test]
    fn failed_pods_back_off_and_return() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut q = SchedulingQueue::new(Backoff {
            jitter: 0.0,
            ..Backoff::default()
        });
        q.add(k("a"), 0, 0);
        assert_eq!(q.pop(), Some(k("a")));
        assert_eq!(q.backoff(&k("a"), 0, &mut rng), 1000);
        assert_eq!(q.pop(), None);
        assert_eq!(q.promote_due(999), 0);
        assert_eq!(q.promote_due(1000), 1);
        assert_eq!(q.pop(), Some(k("a")));
        assert_eq!(q.backoff(&k("a"), 1000, &mut rng), 3000);
        assert_eq!(q.backoff_len(), 1);
        assert_eq!(q.move_all_to_active(), 1);
        assert_eq!(q.pop(), Some(k("a")));
        q.done(&k("a"));
        assert!(q.is_empty());
    }

    #[test]
    fn a_popped_pod_is_not_handed_out_twice() {
        let mut q = SchedulingQueue::new(Backoff::default());
        q.add(k("a"), 0, 0);
        assert_eq!(q.pop(), Some(k("a")));
        q.add(k("a"), 5, 0);
        assert_eq!(q.pop(), None, "in flight: not active again");
        q.add(k("b"), 0, 0);
        q.add(k("b"), 9, 0);
        assert_eq!(q.pop(), Some(k("b")), "an active pod is re-ordered");
    }

    #[test]
    fn take_removes_a_pod_from_backoff_too() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut q = SchedulingQueue::new(Backoff::default());
        q.add(k("a"), 0, 0);
        q.pop();
        q.backoff(&k("a"), 0, &mut rng);
        assert!(q.take(&k("a")));
        assert_eq!(q.promote_due(60_000), 0, "no timer left to fire");
        assert_eq!(q.pop(), None);
        assert!(q.contains(&k("a")), "still known: its result decides");
        assert!(!q.take(&k("a")), "taken once");
    }

    #[test]
    fn removal_from_any_state() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut q = SchedulingQueue::new(Backoff::default());
        q.add(k("a"), 0, 0);
        q.add(k("b"), 0, 0);
        q.pop();
        q.backoff(&k("a"), 0, &mut rng);
        q.remove(&k("a"));
        q.remove(&k("b"));
        assert!(q.is_empty());
        assert_eq!(q.next_retry_at(), None);
        assert_eq!(q.pop(), None);
    }
}
