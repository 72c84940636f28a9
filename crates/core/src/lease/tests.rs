use super::*;
use proptest::prelude::*;

const T: LeaseTimings = LeaseTimings::KUBE_SCHEDULER;

fn held_by(holder: &str, transitions: i32) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_secs: 15,
        acquire_time: Some(1_000),
        renew_time: Some(1_000),
        transitions,
    }
}

#[test]
fn kube_scheduler_timings_are_valid_and_bad_ones_refused() {
    assert_eq!(T.validate(), Ok(()));
    assert_eq!(T.lease_duration_seconds(), 15);
    let bad = |l, r, p| LeaseTimings {
        lease_duration: l,
        renew_deadline: r,
        retry_period: p,
    };
    assert!(matches!(
        bad(10_000, 10_000, 2_000).validate(),
        Err(TimingError::DeadlineNotBeforeExpiry { .. })
    ));
    assert!(matches!(
        bad(15_000, 2_000, 2_000).validate(),
        Err(TimingError::RetryTooSlow { .. })
    ));
    assert_eq!(
        bad(15_000, 10_000, 0).validate(),
        Err(TimingError::RetryNotPositive)
    );
    assert_eq!(
        bad(900, 500, 100).validate(),
        Err(TimingError::LeaseTooShort(900))
    );
}

#[test]
fn no_lease_means_create_naming_us() {
    let mut e = Elector::new("a", T);
    let Attempt::Create(r) = e.attempt(None, 5_000) else {
        panic!("expected create")
    };
    assert_eq!(r.holder(), Some("a"));
    assert_eq!(r.lease_duration_secs, 15);
    assert_eq!((r.acquire_time, r.renew_time), (Some(5_000), Some(5_000)));
    assert_eq!(r.transitions, 0);
    assert!(matches!(e.role(5_000), Role::Follower { holder: None }));
    e.written(r, 5_000);
    assert_eq!(e.role(5_001), Role::Leader { until: 15_000 });
}

#[test]
fn a_valid_lease_of_another_is_waited_for_then_taken_with_a_transition() {
    let mut e = Elector::new("b", T);
    assert_eq!(
        e.attempt(Some(held_by("a", 3)), 10_000),
        Attempt::Wait {
            holder: "a".into(),
            expires_at: 25_000
        }
    );
    // The same record seen again does not restart the clock.
    assert!(matches!(
        e.attempt(Some(held_by("a", 3)), 24_999),
        Attempt::Wait { .. }
    ));
    assert_eq!(
        e.role(24_999),
        Role::Follower {
            holder: Some("a".into())
        }
    );
    let Attempt::Update(r) = e.attempt(Some(held_by("a", 3)), 25_000) else {
        panic!("expected a take-over")
    };
    assert_eq!(r.holder(), Some("b"));
    assert_eq!(r.transitions, 4);
    assert_eq!(r.acquire_time, Some(25_000));
}

#[test]
fn a_renewal_seen_restarts_the_expiry_whatever_its_timestamps_say() {
    let mut e = Elector::new("b", T);
    e.attempt(Some(held_by("a", 0)), 0);
    // The holder renews; its clock is far behind ours: still valid for 15 s
    // from when we saw the change.
    let mut renewed = held_by("a", 0);
    renewed.renew_time = Some(-999_999);
    assert!(matches!(
        e.attempt(Some(renewed), 14_000),
        Attempt::Wait {
            expires_at: 29_000,
            ..
        }
    ));
}

#[test]
fn a_released_lease_is_taken_at_once() {
    let mut e = Elector::new("b", T);
    let released = LeaseRecord {
        holder: None,
        lease_duration_secs: 1,
        transitions: 7,
        ..Default::default()
    };
    let Attempt::Update(r) = e.attempt(Some(released.clone()), 100) else {
        panic!("a free lease is taken")
    };
    assert_eq!(r.transitions, 8);
    // An empty holder string is no holder either.
    let mut empty = released;
    empty.holder = Some(String::new());
    assert!(matches!(e.attempt(Some(empty), 200), Attempt::Update(_)));
}

#[test]
fn the_leader_renews_optimistically_keeping_acquire_time_and_transitions() {
    let mut e = Elector::new("a", T);
    e.attempt(Some(held_by("z", 2)), 85_000);
    let Attempt::Update(r) = e.attempt(Some(held_by("z", 2)), 100_000) else {
        panic!("z's lease expired")
    };
    e.written(r, 100_000);
    let renew = e.fast_renew(102_000).expect("leader with a valid lease");
    assert_eq!(renew.acquire_time, Some(100_000));
    assert_eq!(renew.renew_time, Some(102_000));
    assert_eq!(renew.transitions, 3);
    e.written(renew, 102_000);
    assert_eq!(e.role(102_000), Role::Leader { until: 112_000 });
    // A follower never renews optimistically.
    let f = Elector::new("b", T);
    assert_eq!(f.fast_renew(0), None);
}

#[test]
fn a_leader_that_cannot_renew_stops_at_the_renew_deadline_before_expiry() {
    let mut e = Elector::new("a", T);
    let Attempt::Create(r) = e.attempt(None, 0) else {
        panic!()
    };
    e.written(r, 0);
    // Renewals fail (no write succeeds): the role lapses at 10 s, while
    // any candidate must wait 15 s from when it saw our last write.
    assert!(matches!(e.role(9_999), Role::Leader { until: 10_000 }));
    assert!(matches!(e.role(10_000), Role::Follower { .. }));
    let mut other = Elector::new("b", T);
    other.attempt(Some(e.observed().cloned().unwrap_or_default()), 0);
    assert!(matches!(
        other.attempt(e.observed().cloned(), 14_999),
        Attempt::Wait { .. }
    ));
}

#[test]
fn losing_the_race_makes_us_follow_the_winner() {
    let mut e = Elector::new("a", T);
    let Attempt::Create(r) = e.attempt(None, 0) else {
        panic!()
    };
    e.written(r, 0);
    // Someone took it (e.g. our renewals were lost and it expired).
    e.attempt(Some(held_by("b", 1)), 3_000);
    assert_eq!(
        e.role(3_000),
        Role::Follower {
            holder: Some("b".into())
        }
    );
    assert_eq!(e.fast_renew(3_000), None);
    assert_eq!(e.release(3_000), None, "nothing of ours to release");
}

#[test]
fn release_clears_the_holder_and_keeps_transitions() {
    let mut e = Elector::new("a", T);
    e.attempt(Some(held_by("z", 4)), 0);
    let Attempt::Update(r) = e.attempt(Some(held_by("z", 4)), 15_000) else {
        panic!("z's lease expired")
    };
    e.written(r, 15_000);
    let released = e.release(16_000).expect("we hold it");
    assert_eq!(released.holder(), None);
    assert_eq!(released.lease_duration_secs, 1);
    assert_eq!(released.transitions, 5);
    e.written(released, 16_000);
    assert!(matches!(e.role(16_000), Role::Follower { holder: None }));
}

#[test]
fn the_next_attempt_comes_at_the_retry_period_or_at_expiry() {
    let mut e = Elector::new("b", T);
    e.attempt(Some(held_by("a", 0)), 0);
    assert_eq!(e.next_attempt_at(0), 2_000);
    assert_eq!(e.next_attempt_at(14_000), 15_000, "wake at expiry");
    assert_eq!(e.next_attempt_at(15_000), 17_000);
}

/// One step of two candidates sharing a linearizable store.
#[derive(Clone, Debug)]
enum Step {
    /// Time passes.
    Advance(Millis),
    /// Candidate reads and decides (the write goes out later).
    Read(usize),
    /// Candidate's pending write lands (or is refused on a version change).
    Land(usize),
    /// Candidate's pending write is lost (network).
    Lose(usize),
    /// The leader renews optimistically with the version it last saw.
    FastRenew(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1i64..6_000).prop_map(Step::Advance),
        (0usize..2).prop_map(Step::Read),
        (0usize..2).prop_map(Step::Land),
        (0usize..2).prop_map(Step::Lose),
        (0usize..2).prop_map(Step::FastRenew),
    ]
}

/// A pending write: (version it is conditional on, record, started at).
type Pending = Option<(Option<u64>, LeaseRecord, Millis)>;

proptest! {
    /// Whatever the interleaving, delays and losses: at no time do two
    /// candidates both hold the Leader role.
    #[test]
    fn never_two_leaders(steps in proptest::collection::vec(step(), 1..200)) {
        let mut now: Millis = 0;
        let mut store: Option<(u64, LeaseRecord)> = None;
        let mut electors = [Elector::new("a", T), Elector::new("b", T)];
        let mut seen_version: [Option<u64>; 2] = [None, None];
        let mut pending: [Pending; 2] = [None, None];
        for s in steps {
            match s {
                Step::Advance(d) => now += d,
                Step::Read(i) => {
                    let found = store.as_ref().map(|(_, r)| r.clone());
                    seen_version[i] = store.as_ref().map(|(v, _)| *v);
                    pending[i] = match electors[i].attempt(found, now) {
                        Attempt::Create(r) | Attempt::Update(r) => Some((seen_version[i], r, now)),
                        Attempt::Wait { .. } => None,
                    };
                }
                Step::FastRenew(i) => {
                    if let Some(r) = electors[i].fast_renew(now) {
                        pending[i] = Some((seen_version[i], r, now));
                    }
                }
                Step::Land(i) => {
                    if let Some((version, record, started)) = pending[i].take() {
                        let current = store.as_ref().map(|(v, _)| *v);
                        if current == version {
                            let next = current.map_or(1, |v| v + 1);
                            store = Some((next, record.clone()));
                            seen_version[i] = Some(next);
                            electors[i].written(record, started);
                        }
                    }
                }
                Step::Lose(i) => pending[i] = None,
            }
            let leaders = electors
                .iter()
                .filter(|e| matches!(e.role(now), Role::Leader { .. }))
                .count();
            prop_assert!(leaders <= 1, "two leaders at {now}");
        }
    }
}
