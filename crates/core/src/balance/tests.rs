use super::*;
use crate::gpu::{GpuSample, NodeUsage, UsageState};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn sj(name: &str) -> WorkloadKey {
    WorkloadKey::new(WorkloadKind::ScaledJob, "posture", name)
}

fn wl(name: &str, node: &str, load: f64) -> Workload {
    Workload {
        key: sj(name),
        node: node.into(),
        load,
        estimate: Estimate::Fixed,
    }
}

fn avgs(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(n, u)| ((*n).to_owned(), *u)).collect()
}

fn snap(at: Millis, pairs: &[(&str, f64, UsageState)]) -> GpuSnapshot {
    GpuSnapshot {
        taken_at: at,
        nodes: pairs
            .iter()
            .map(|(n, u, s)| {
                (
                    (*n).to_owned(),
                    NodeUsage {
                        sample: Some(GpuSample {
                            usage_percent: *u,
                            sampled_at: at,
                        }),
                        state: *s,
                        error: None,
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn window_averages_fresh_samples_over_thirty_seconds() {
    let mut w = UsageWindow::new(30_000);
    // 5 s sampling: t = 0, 5, …, 35 s. At 35 s the window (5 s, 35 s]
    // holds the samples from 10 s on.
    for i in 0..8 {
        let t = i * 5_000;
        w.record(&snap(
            t,
            &[
                ("a", (i * 10) as f64, UsageState::Ok),
                ("b", 40.0, UsageState::Stale),
            ],
        ));
    }
    let a = w.averages(35_000);
    // samples 10..35 s → usages 20,30,40,50,60,70 → mean 45.
    assert_eq!(a.get("a"), Some(&45.0));
    assert_eq!(a.get("b"), None, "stale readings never enter the window");
    assert_eq!(w.len(), 6);
    assert!(w.is_full(35_000, 5_000));
    w.clear();
    assert!(w.is_empty());
    assert!(w.averages(35_000).is_empty());
    assert!(!w.is_full(35_000, 5_000));
}

#[test]
fn window_is_not_full_after_one_sample() {
    let mut w = UsageWindow::new(30_000);
    w.record(&snap(1_000, &[("a", 10.0, UsageState::Ok)]));
    assert!(!w.is_full(1_000, 5_000));
    assert!(w.is_full(26_000, 5_000));
}

#[test]
fn estimates_subtract_the_idle_baseline_or_use_the_fixed_load() {
    let a = avgs(&[("n1", 80.0), ("n2", 20.0), ("n3", 10.0)]);
    let placements = vec![
        (sj("a"), "n1".to_owned()),
        (sj("b"), "n1".to_owned()),
        (sj("c"), "n2".to_owned()),
        (sj("d"), "gone".to_owned()),
        (sj("e"), "n3".to_owned()),
    ];
    let idle = IdleBaselines {
        learned: BTreeMap::from([("n1".to_owned(), 20.0), ("n3".to_owned(), 15.0)]),
        ..Default::default()
    };
    let w = estimate_loads(&a, &placements, None, &idle);
    let got: Vec<(f64, Estimate)> = w.iter().map(|w| (w.load, w.estimate)).collect();
    assert_eq!(
        got,
        vec![
            (30.0, Estimate::AboveIdle),
            (30.0, Estimate::AboveIdle),
            (20.0, Estimate::Unknown),
            (0.0, Estimate::Unknown),
            (0.0, Estimate::AboveIdle),
        ],
        "(80 - 20) / 2 = 30; n2 has no baseline: the upper bound 20 / 1; \
         n3 below its baseline: 0"
    );
    let w = estimate_loads(&a, &placements, Some(15.0), &idle);
    assert!(
        w.iter()
            .all(|w| w.load == 15.0 && w.estimate == Estimate::Fixed)
    );

    // A flag wins over the learned value; a per-node flag over the default.
    let idle = IdleBaselines {
        fixed_default: Some(10.0),
        fixed: BTreeMap::from([("n2".to_owned(), 5.0)]),
        learned: BTreeMap::from([("n1".to_owned(), 20.0)]),
    };
    assert_eq!(idle.get("n1"), Some(10.0));
    assert_eq!(idle.get("n2"), Some(5.0));
    assert_eq!(idle.get("other"), Some(10.0));
    assert_eq!(
        idle.resolved(),
        BTreeMap::from([("n1".to_owned(), 10.0), ("n2".to_owned(), 5.0)])
    );
}

#[test]
fn idle_windows_teach_the_baseline() {
    let mut learned = BTreeMap::from([("b".to_owned(), 30.0)]);
    let pending = [RecentMove {
        workload: sj("x"),
        from: "c".into(),
        to: "d".into(),
        load: 10.0,
        at: 0,
        arrived_at: None,
    }];
    let got = learn_idle(
        &mut learned,
        &avgs(&[("a", 80.0), ("b", 18.0), ("c", 12.0), ("d", 40.0)]),
        &[(sj("y"), "a".to_owned())],
        &pending,
    );
    // a runs a workload; c and d have a move in progress: not idle.
    assert_eq!(got, vec!["b".to_owned()]);
    assert_eq!(learned, BTreeMap::from([("b".to_owned(), 18.0)]));

    let mut idle = IdleBaselines::default();
    idle.learned.insert("b".into(), 18.0);
    idle.restore(&BTreeMap::from([
        ("b".to_owned(), 25.0),
        ("c".to_owned(), 140.0),
        ("e".to_owned(), f64::NAN),
    ]));
    assert_eq!(
        idle.learned,
        BTreeMap::from([("b".to_owned(), 18.0), ("c".to_owned(), 100.0)]),
        "restored values never overwrite learned ones; clamped; NaN dropped"
    );
}

/// The acceptance scenario: one node at 80 %, two at 20 % and
/// 30 %: one loop moves exactly one ScaledJob to the 20 % node; once
/// usage settles the next loop moves nothing.
#[test]
fn busy_node_sheds_one_scaledjob_to_the_least_loaded_node_then_settles() {
    let params = BalanceParams {
        threshold: 50.0,
        cooldown: 300_000,
        ..Default::default()
    };
    let mut rng = StdRng::seed_from_u64(7);
    let workloads = vec![
        wl("pi1", "busy", 30.0),
        wl("pi1-1", "busy", 30.0),
        wl("pi1-2", "mid", 30.0),
    ];
    let a = avgs(&[("busy", 80.0), ("idle", 20.0), ("mid", 30.0)]);
    let plan = plan_moves(&a, &workloads, &History::default(), 0, params, &mut rng);
    assert_eq!(plan.outcome, Outcome::Rebalancing);
    assert_eq!(plan.moves.len(), 1);
    let m = &plan.moves[0];
    assert_eq!(m.workload.kind, WorkloadKind::ScaledJob);
    assert_eq!((m.from.as_str(), m.to.as_str()), ("busy", "idle"));
    assert_eq!(m.to_usage_after, 50.0);

    // Usage settles: the moved analyzer now loads `idle`.
    let history = History {
        moved_at: BTreeMap::from([(m.workload.clone(), 0)]),
        ..Default::default()
    };
    let settled = avgs(&[("busy", 50.0), ("idle", 50.0), ("mid", 30.0)]);
    let workloads: Vec<Workload> = workloads
        .into_iter()
        .map(|mut w| {
            if w.key == m.workload {
                w.node = "idle".into();
            }
            w
        })
        .collect();
    let next = plan_moves(&settled, &workloads, &history, 35_000, params, &mut rng);
    assert_eq!(next.outcome, Outcome::Stable);
    assert!(next.moves.is_empty());
}

#[test]
fn all_overloaded_moves_nothing_and_says_so() {
    let plan = plan_moves(
        &avgs(&[("a", 90.0), ("b", 70.0)]),
        &[wl("x", "a", 10.0), wl("y", "b", 10.0)],
        &History::default(),
        0,
        BalanceParams::default(),
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(plan.outcome, Outcome::AllOverloaded);
    assert!(plan.moves.is_empty());
    assert_eq!(plan.overloaded.len(), 2);
}

#[test]
fn no_data_is_reported() {
    let plan = plan_moves(
        &BTreeMap::new(),
        &[wl("x", "a", 10.0)],
        &History::default(),
        0,
        BalanceParams::default(),
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(plan.outcome, Outcome::NoData);
}

#[test]
fn projected_load_stops_two_sources_filling_one_destination() {
    // Two overloaded nodes, one destination at 10 % with room for 40:
    // the first move takes it to 40, the second (30) no longer fits there
    // and goes to the 25 % node instead.
    let plan = plan_moves(
        &avgs(&[("a", 95.0), ("b", 90.0), ("d1", 10.0), ("d2", 20.0)]),
        &[wl("x", "a", 30.0), wl("y", "b", 30.0)],
        &History::default(),
        0,
        BalanceParams::default(),
        &mut StdRng::seed_from_u64(3),
    );
    let dests: Vec<&str> = plan.moves.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(dests, vec!["d1", "d2"]);
    assert_eq!(plan.projected["d1"], 40.0);
    assert_eq!(plan.projected["d2"], 50.0);
}

#[test]
fn cooling_down_workloads_stay_and_the_reason_is_given() {
    let moved_at = History {
        moved_at: BTreeMap::from([(sj("x"), 1_000)]),
        ..Default::default()
    };
    let a = avgs(&[("a", 90.0), ("b", 10.0)]);
    let w = [wl("x", "a", 20.0)];
    let p = BalanceParams {
        threshold: 50.0,
        cooldown: 60_000,
        ..Default::default()
    };
    let plan = plan_moves(&a, &w, &moved_at, 30_000, p, &mut StdRng::seed_from_u64(1));
    assert!(plan.moves.is_empty());
    assert_eq!(plan.stuck, vec![("a".to_owned(), StuckReason::CoolingDown)]);
    let plan = plan_moves(&a, &w, &moved_at, 61_000, p, &mut StdRng::seed_from_u64(1));
    assert_eq!(plan.moves.len(), 1, "cool-down over");
}

#[test]
fn no_room_and_no_workload_are_reported() {
    let plan = plan_moves(
        &avgs(&[("a", 90.0), ("b", 80.0), ("c", 45.0)]),
        &[wl("x", "a", 20.0)],
        &History::default(),
        0,
        BalanceParams::default(),
        &mut StdRng::seed_from_u64(1),
    );
    assert!(plan.moves.is_empty());
    assert_eq!(
        plan.stuck,
        vec![
            ("a".to_owned(), StuckReason::NoRoom),
            ("b".to_owned(), StuckReason::NoWorkload)
        ]
    );
}

#[test]
fn ties_are_broken_by_the_seeded_rng() {
    let a = avgs(&[("busy", 90.0), ("d1", 10.0), ("d2", 10.0), ("d3", 10.0)]);
    let w = [wl("x", "busy", 20.0)];
    let pick = |seed| {
        plan_moves(
            &a,
            &w,
            &History::default(),
            0,
            BalanceParams::default(),
            &mut StdRng::seed_from_u64(seed),
        )
        .moves[0]
            .to
            .clone()
    };
    assert_eq!(pick(11), pick(11), "same seed, same choice");
    let seen: std::collections::BTreeSet<String> = (0..64).map(pick).collect();
    assert_eq!(
        seen.len(),
        3,
        "every tied destination gets picked: {seen:?}"
    );
}

fn arb_case() -> impl Strategy<Value = (BTreeMap<String, f64>, Vec<Workload>, u64)> {
    (1usize..7)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(0.0f64..100.0, n),
                proptest::collection::vec((0..n, 0.0f64..60.0), 0..12),
                any::<u64>(),
            )
        })
        .prop_map(|(usages, wls, seed)| {
            let averages: BTreeMap<String, f64> = usages
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("n{i}"), *u))
                .collect();
            let workloads = wls
                .into_iter()
                .enumerate()
                .map(|(i, (node, load))| wl(&format!("w{i}"), &format!("n{node}"), load))
                .collect();
            (averages, workloads, seed)
        })
}

proptest! {
    #[test]
    fn plan_invariants(
        (averages, workloads, seed) in arb_case(),
        threshold in 10.0f64..90.0,
        cooled in proptest::collection::btree_set(0usize..12, 0..4),
    ) {
        let params = BalanceParams { threshold, cooldown: 60_000, ..Default::default() };
        let moved_at: BTreeMap<WorkloadKey, Millis> =
            cooled.iter().map(|i| (sj(&format!("w{i}")), 50_000)).collect();
        let history = History { moved_at: moved_at.clone(), ..Default::default() };
        let plan = plan_moves(&averages, &workloads, &history, 60_000, params, &mut StdRng::seed_from_u64(seed));
        let over: Vec<&String> = averages.iter().filter(|(_, u)| **u > threshold).map(|(n, _)| n).collect();

        // ≤ 1 move per overloaded node, only from overloaded nodes.
        let mut sources = std::collections::BTreeSet::new();
        for m in &plan.moves {
            prop_assert!(over.contains(&&m.from), "move from a node that is not overloaded");
            prop_assert!(sources.insert(m.from.clone()), "two moves from {}", m.from);
            prop_assert!(averages[&m.to] <= threshold, "destination was overloaded");
            prop_assert!(m.to_usage_after <= threshold + 1e-9, "destination pushed over the threshold");
            prop_assert!(!moved_at.contains_key(&m.workload), "moved within the cool-down");
            let w = workloads.iter().find(|w| w.key == m.workload).unwrap();
            prop_assert_eq!(&w.node, &m.from);
        }
        // Destinations stay at or under the threshold once every move is counted.
        for m in &plan.moves {
            prop_assert!(plan.projected[&m.to] <= threshold + 1e-9);
        }
        if over.is_empty() {
            prop_assert_eq!(plan.outcome, Outcome::Stable);
            prop_assert!(plan.moves.is_empty());
        }
        if !over.is_empty() && over.len() == averages.len() {
            prop_assert_eq!(plan.outcome, Outcome::AllOverloaded);
            prop_assert!(plan.moves.is_empty());
        }
        // Every overloaded node either moves one workload or says why not.
        if plan.outcome == Outcome::Rebalancing {
            prop_assert_eq!(plan.moves.len() + plan.stuck.len(), over.len());
        }
    }

    /// The window's average is the plain mean of the fresh samples taken
    /// within the last `window` ms; older samples have no influence.
    #[test]
    fn window_average_is_the_mean_of_samples_inside_the_window(
        usages in proptest::collection::vec(0.0f64..100.0, 1..30),
        interval in 1_000i64..10_000,
        window in 5_000i64..60_000,
    ) {
        let mut w = UsageWindow::new(window);
        for (i, u) in usages.iter().enumerate() {
            w.record(&snap(i as Millis * interval, &[("n", *u, UsageState::Ok)]));
        }
        let now = (usages.len() as Millis - 1) * interval;
        let inside: Vec<f64> = usages
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as Millis * interval > now - window)
            .map(|(_, u)| *u)
            .collect();
        let mean = inside.iter().sum::<f64>() / inside.len() as f64;
        let got = w.averages(now)["n"];
        prop_assert!((got - mean).abs() < 1e-9, "{} vs {}", got, mean);
        prop_assert_eq!(w.len(), inside.len());
    }

    /// Same inputs and seed, same plan: decisions are replayable.
    #[test]
    fn plans_are_deterministic_for_a_seed((averages, workloads, seed) in arb_case()) {
        let p = BalanceParams::default();
        let a = plan_moves(&averages, &workloads, &History::default(), 0, p, &mut StdRng::seed_from_u64(seed));
        let b = plan_moves(&averages, &workloads, &History::default(), 0, p, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(a, b);
    }

    /// A simple load model: each node's usage is the sum of the loads of
    /// the analyzers on it; every analyzer costs the same. When the cluster
    /// has room (workloads ≤ nodes × ⌊threshold / load⌋) repeated loops
    /// reach a state with every node at or under the threshold, and no
    /// workload is moved twice within the cool-down.
    #[test]
    fn converges_in_a_simple_load_model(
        nodes in 2usize..6,
        load in prop_oneof![Just(5.0f64), Just(10.0), Just(12.5), Just(20.0), Just(25.0)],
        seed in any::<u64>(),
        placement_seed in any::<u64>(),
        fill in 0.3f64..1.0,
    ) {
        let threshold = 50.0;
        let per_node = (threshold / load).floor() as usize;
        let count = ((nodes * per_node) as f64 * fill).floor() as usize;
        let mut prng = StdRng::seed_from_u64(placement_seed);
        // Skewed start: most analyzers on node 0.
        let mut workloads: Vec<Workload> = (0..count)
            .map(|i| {
                let node = if prng.random_bool(0.7) { 0 } else { prng.random_range(0..nodes) };
                wl(&format!("w{i}"), &format!("n{node}"), load)
            })
            .collect();
        let loop_ms: Millis = 30_000;
        let params = BalanceParams { threshold, cooldown: 2 * loop_ms, window: loop_ms, ..Default::default() };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut history = History::default();
        let usage = |ws: &[Workload]| -> BTreeMap<String, f64> {
            let mut m: BTreeMap<String, f64> = (0..nodes).map(|i| (format!("n{i}"), 0.0)).collect();
            for w in ws { *m.get_mut(&w.node).unwrap() += w.load; }
            m
        };
        let max_loops = count * 3 + 2;
        let mut stable = false;
        for i in 0..max_loops {
            let now = i as Millis * loop_ms;
            let plan = plan_moves(&usage(&workloads), &workloads, &history, now, params, &mut rng);
            if plan.outcome == Outcome::Stable { stable = true; break; }
            for m in &plan.moves {
                if let Some(prev) = history.last_move(&m.workload) {
                    prop_assert!(now - prev >= params.cooldown, "{} moved twice within the cool-down", m.workload);
                }
                // In this model the readings show a move at once.
                let mut record = RecentMove::of(m, now);
                record.arrived_at = Some(now);
                history.recent.push(record);
                let w = workloads.iter_mut().find(|w| w.key == m.workload).unwrap();
                w.node = m.to.clone();
            }
        }
        prop_assert!(stable, "did not converge in {} loops: {:?}", max_loops, usage(&workloads));
    }
}

mod seed;
