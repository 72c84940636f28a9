//! Issue 18 on the seed's own scenario: node-a at 80 % with two analyzers,
//! node-b at 20 %, node-c at 30 %, threshold 50 %.

use super::*;

const T0: Millis = 1_000_000;

fn seed_averages() -> BTreeMap<String, f64> {
    avgs(&[("node-a", 80.0), ("node-b", 20.0), ("node-c", 30.0)])
}

fn two_on_a() -> Vec<(WorkloadKey, String)> {
    vec![
        (sj("pi1"), "node-a".to_owned()),
        (sj("pi2"), "node-a".to_owned()),
    ]
}

/// One loop as the balancer runs it: estimate, plan, remember the moves.
fn loop_once(
    averages: &BTreeMap<String, f64>,
    placements: &[(WorkloadKey, String)],
    fixed_load: Option<f64>,
    idle: &IdleBaselines,
    history: &mut History,
    now: Millis,
) -> BalancePlan {
    let workloads = estimate_loads(averages, placements, fixed_load, idle);
    let plan = plan_moves(
        averages,
        &workloads,
        history,
        now,
        BalanceParams::default(),
        &mut StdRng::seed_from_u64(3),
    );
    for m in &plan.moves {
        history.moved_at.insert(m.workload.clone(), now);
        history.recent.push(RecentMove::of(m, now));
    }
    plan
}

/// Default settings, nothing known about idle baselines (a fresh farm):
/// the seed's rule moves one analyzer to node-b; the next loop, readings
/// unchanged while the moved analyzer starts, moves nothing. (Before the
/// fix: `no_room`, since 80 / 2 = 40 would put node-b at 60 %.)
#[test]
fn unknown_baseline_moves_exactly_one_to_node_b_then_waits() {
    let mut history = History::default();
    let idle = IdleBaselines::default();
    let first = loop_once(&seed_averages(), &two_on_a(), None, &idle, &mut history, T0);
    assert_eq!(first.outcome, Outcome::Rebalancing);
    assert_eq!(first.moves.len(), 1, "{:?}", first.stuck);
    let m = &first.moves[0];
    assert_eq!((m.from.as_str(), m.to.as_str()), ("node-a", "node-b"));
    assert_eq!(m.estimate, Estimate::Unknown);
    assert_eq!(m.load, 40.0, "the upper bound 80 / 2 is what is projected");

    // 35 s later: same readings, the moved analyzer's pod not ready yet.
    let placements = vec![(sj("pi2"), "node-a".to_owned())];
    let second = loop_once(
        &seed_averages(),
        &placements,
        None,
        &idle,
        &mut history,
        T0 + 35_000,
    );
    assert!(second.moves.is_empty(), "{:?}", second.moves);
    assert_eq!(
        second.outcome,
        Outcome::Stable,
        "node-a projected at 80 - 40"
    );
    assert_eq!(second.projected["node-a"], 40.0);
    assert_eq!(second.projected["node-b"], 60.0);
    assert_eq!(second.pending.len(), 1);
}

/// Default settings once node-a's idle baseline is known (20 %, learned
/// from a window in which it ran nothing): (80 − 20) / 2 = 30 per
/// analyzer, node-b projected at exactly 50 %: one move; the next loop
/// with unchanged readings moves nothing; once the readings show the move
/// the balancer behaves as without the memory.
#[test]
fn learned_baseline_moves_exactly_one_to_node_b_then_waits_then_behaves_as_today() {
    let mut idle = IdleBaselines::default();
    // An earlier window before any analyzer ran: every board idle.
    let learned = learn_idle(
        &mut idle.learned,
        &avgs(&[("node-a", 20.0), ("node-b", 20.0), ("node-c", 30.0)]),
        &[],
        &[],
    );
    assert_eq!(learned.len(), 3);

    let mut history = History::default();
    let first = loop_once(&seed_averages(), &two_on_a(), None, &idle, &mut history, T0);
    assert_eq!(first.moves.len(), 1, "{:?}", first.stuck);
    let m = first.moves[0].clone();
    assert_eq!((m.from.as_str(), m.to.as_str()), ("node-a", "node-b"));
    assert_eq!(
        (m.estimate, m.load, m.to_usage_after),
        (Estimate::AboveIdle, 30.0, 50.0)
    );

    // Next window: readings unchanged, the analyzer is starting on node-b.
    let starting = vec![
        (sj("pi2"), "node-a".to_owned()),
        (m.workload.clone(), "node-b".to_owned()),
    ];
    let second = loop_once(
        &seed_averages(),
        &starting,
        None,
        &idle,
        &mut history,
        T0 + 35_000,
    );
    assert!(second.moves.is_empty(), "{:?}", second.moves);
    assert_eq!(second.outcome, Outcome::Stable);

    // The pod became ready at T0 + 40 s; at T0 + 75 s the window (45 s, 75 s]
    // shows it. Readings now: node-a 50, node-b 50.
    history.recent[0].arrived_at = Some(T0 + 40_000);
    let shown = avgs(&[("node-a", 50.0), ("node-b", 50.0), ("node-c", 30.0)]);
    let third = loop_once(&shown, &starting, None, &idle, &mut history, T0 + 75_000);
    assert!(third.pending.is_empty());
    assert_eq!(third.outcome, Outcome::Stable);

    // A hotter node-a later on: exactly today's decision (no memory).
    let hot = avgs(&[("node-a", 60.0), ("node-b", 45.0), ("node-c", 10.0)]);
    let now = T0 + 110_000;
    let with_memory = loop_once(&hot, &starting, None, &idle, &mut history.clone(), now);
    let without = loop_once(
        &hot,
        &starting,
        None,
        &idle,
        &mut History {
            moved_at: history.moved_at.clone(),
            ..Default::default()
        },
        now,
    );
    assert_eq!(with_memory.moves, without.moves);
    assert_eq!(with_memory.stuck, without.stuck);
    let m = &with_memory.moves[..];
    assert_eq!(m.len(), 1, "pi2 (60 - 20 = 40) fits on node-c (10 + 40)");
    assert_eq!(
        (m[0].workload.name.as_str(), m[0].to.as_str()),
        ("pi2", "node-c")
    );
}

/// The issue's own run, `--workload-load 20`: the first loop puts node-b at
/// 40 %; the second, readings unchanged, must not move the other analyzer
/// onto node-b too. (Before the fix it did.)
#[test]
fn fixed_load_second_loop_with_unchanged_readings_moves_nothing() {
    let mut history = History::default();
    let idle = IdleBaselines::default();
    let first = loop_once(
        &seed_averages(),
        &two_on_a(),
        Some(20.0),
        &idle,
        &mut history,
        T0,
    );
    assert_eq!(first.moves.len(), 1);
    assert_eq!(first.moves[0].to_usage_after, 40.0);
    let moved = first.moves[0].workload.clone();
    let left: Vec<_> = two_on_a()
        .into_iter()
        .filter(|(k, _)| *k != moved)
        .collect();
    let second = loop_once(
        &seed_averages(),
        &left,
        Some(20.0),
        &idle,
        &mut history,
        T0 + 35_000,
    );
    assert!(
        second.moves.is_empty(),
        "second loop moved {:?}",
        second.moves
    );
    // node-a is still projected over (80 − 20 = 60) but waits for the
    // readings to show its first move.
    assert_eq!(
        second.stuck,
        vec![("node-a".to_owned(), StuckReason::Settling)]
    );
    assert_eq!(second.projected["node-b"], 40.0);
}

/// A balancer restart loses nothing: the record read back from the
/// annotations (moved-at/-to/-from/-load) gives the same decision.
#[test]
fn a_pending_move_read_back_after_a_restart_counts_the_same() {
    let mut history = History::default();
    let idle = IdleBaselines::default();
    let first = loop_once(
        &seed_averages(),
        &two_on_a(),
        Some(20.0),
        &idle,
        &mut history,
        T0,
    );
    let m = &first.moves[0];
    let restored = History {
        moved_at: BTreeMap::from([(m.workload.clone(), T0)]),
        recent: vec![RecentMove {
            workload: m.workload.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            load: m.load,
            at: T0,
            arrived_at: None,
        }],
    };
    assert_eq!(restored, history);
}

/// A move whose workload never becomes ready on its destination stops
/// counting after the settle timeout.
#[test]
fn pending_moves_expire() {
    let p = BalanceParams::default();
    let r = RecentMove {
        workload: sj("x"),
        from: "a".into(),
        to: "b".into(),
        load: 10.0,
        at: T0,
        arrived_at: None,
    };
    assert!(r.is_pending(T0 + p.settle_timeout - 1, &p));
    assert!(!r.is_pending(T0 + p.settle_timeout, &p));
    let arrived = RecentMove {
        arrived_at: Some(T0 + 10_000),
        ..r
    };
    assert!(arrived.is_pending(T0 + 10_000 + p.window - 1, &p));
    assert!(!arrived.is_pending(T0 + 10_000 + p.window, &p));
}

fn arb_pending(n: usize) -> impl Strategy<Value = Vec<RecentMove>> {
    proptest::collection::vec((0..n, 0..n, 0.0f64..40.0, 0usize..12), 0..4).prop_map(|v| {
        v.into_iter()
            .filter(|(f, t, _, _)| f != t)
            .map(|(f, t, load, w)| RecentMove {
                workload: sj(&format!("w{w}")),
                from: format!("n{f}"),
                to: format!("n{t}"),
                load,
                at: 50_000,
                arrived_at: None,
            })
            .collect()
    })
}

proptest! {
    /// With moves in progress and any mix of estimates: known loads never
    /// push a destination over the threshold; at most one move per
    /// overloaded node; a node with a pending move off it sheds nothing;
    /// sources are over the threshold both measured and projected.
    #[test]
    fn plan_invariants_with_moves_in_progress(
        (averages, workloads, seed) in arb_case(),
        unknown in proptest::collection::btree_set(0usize..7, 0..3),
        pending in arb_pending(6),
        threshold in 10.0f64..90.0,
    ) {
        let workloads: Vec<Workload> = workloads
            .into_iter()
            .map(|mut w| {
                let node: usize = w.node[1..].parse().unwrap();
                if unknown.contains(&node) { w.estimate = Estimate::Unknown; }
                w
            })
            .collect();
        let params = BalanceParams { threshold, ..Default::default() };
        let history = History { moved_at: BTreeMap::new(), recent: pending.clone() };
        let plan = plan_moves(&averages, &workloads, &history, 60_000, params, &mut StdRng::seed_from_u64(seed));
        let start = project_pending(&averages, &pending);
        let mut sources = std::collections::BTreeSet::new();
        for m in &plan.moves {
            prop_assert!(sources.insert(m.from.clone()), "two moves off {}", m.from);
            prop_assert!(averages[&m.from] > threshold && start[&m.from] > threshold);
            prop_assert!(!pending.iter().any(|p| p.from == m.from), "shed from a settling node");
            prop_assert!(averages[&m.to] <= threshold && start[&m.to] <= threshold);
            prop_assert!(m.to_usage_before <= threshold + 1e-9);
            if m.estimate.is_known() {
                prop_assert!(m.to_usage_after <= threshold + 1e-9, "destination pushed over");
            }
        }
        if plan.moves.iter().all(|m| m.estimate.is_known()) {
            for (node, u) in &plan.projected {
                if plan.moves.iter().any(|m| &m.to == node) {
                    prop_assert!(*u <= threshold + 1e-9, "{} projected at {}", node, u);
                }
            }
        }
        if plan.outcome == Outcome::Rebalancing {
            prop_assert_eq!(plan.moves.len() + plan.stuck.len(), plan.overloaded.len());
        }
    }

    /// Two loops on unchanged readings: the second moves nothing off a
    /// node the first moved something off, and never onto a destination
    /// the first filled past its room.
    #[test]
    fn unchanged_readings_never_move_twice_off_one_node(
        (averages, workloads, seed) in arb_case(),
        threshold in 10.0f64..90.0,
    ) {
        let params = BalanceParams { threshold, ..Default::default() };
        let mut history = History::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let first = plan_moves(&averages, &workloads, &history, 0, params, &mut rng);
        for m in &first.moves {
            history.moved_at.insert(m.workload.clone(), 0);
            history.recent.push(RecentMove::of(m, 0));
        }
        let left: Vec<Workload> = workloads
            .iter()
            .filter(|w| !first.moves.iter().any(|m| m.workload == w.key))
            .cloned()
            .collect();
        let second = plan_moves(&averages, &left, &history, params.window + 5_000, params, &mut rng);
        for m in &second.moves {
            prop_assert!(!first.moves.iter().any(|f| f.from == m.from), "second move off {}", m.from);
            prop_assert!(m.to_usage_after <= threshold + 1e-9);
        }
    }
}
