//! The balancer's loop: sample GPU usage into a window, decide on its
//! averages with [`posture_core::balance::plan_moves`], act through the
//! [`Mover`], report.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use posture_core::balance::{
    BalanceParams, BalancePlan, History, IdleBaselines, Move, Outcome, RecentMove, WorkloadKey,
    estimate_loads, learn_idle, plan_moves,
};
use posture_core::error_chain;
use posture_core::model::Millis;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::BalanceError;
use super::discover::{Discovery, Scope, Unfinished, discover};
use super::metrics::{BalanceMetrics, MoveResult};
use super::mover::Mover;
use super::parked::{Parked, ParkedAction};
use crate::lease::LeaderGate;

/// One balancing decision and what came of it.
#[derive(Debug)]
pub struct LoopReport {
    /// The pure plan (outcome, moves, stuck nodes, moves in progress,
    /// projected usage).
    pub plan: BalancePlan,
    /// Interrupted ScaledJob moves found and (unless dry-run) completed.
    pub finished: Vec<(Unfinished, Result<(), BalanceError>)>,
    /// Parked Job copies found and what was done with them (`Wait` in
    /// dry-run).
    pub parked: Vec<(Parked, Result<ParkedAction, BalanceError>)>,
    /// Nodes whose idle baseline this window taught.
    pub learned: Vec<String>,
    /// Every learned (or restored) idle baseline after this window.
    pub learned_idle: BTreeMap<String, f64>,
    /// Result of each planned move, in plan order (empty in dry-run).
    pub applied: Vec<(Move, Result<(), BalanceError>)>,
}

/// The balancer's per-window step: read the workloads, decide with the pure
/// policy, act. Keeps the moves it made itself (in case a restart-safe
/// annotation has not been read back yet) and the idle baselines it
/// learned; everything else is recomputed from the cluster each time.
pub struct Balancer {
    /// Carries out the moves.
    pub mover: Mover,
    /// Which workloads are considered.
    pub scope: Scope,
    /// Threshold, cool-down, window and settle timeout of the pure policy.
    pub params: BalanceParams,
    /// Fixed per-workload load estimate (percentage points); `None`
    /// estimates each workload above its node's idle baseline.
    pub workload_load: Option<f64>,
    /// Idle baselines: fixed by flags, restored, learned from idle windows.
    pub idle: IdleBaselines,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Whether this replica may act (always, without leader election).
    pub leader: LeaderGate,
    local_moves: BTreeMap<WorkloadKey, RecentMove>,
}

impl Balancer {
    /// A balancer acting through `mover` on `scope`.
    pub fn new(mover: Mover, scope: Scope, params: BalanceParams) -> Self {
        Self {
            mover,
            scope,
            params,
            workload_load: None,
            idle: IdleBaselines::default(),
            dry_run: false,
            leader: LeaderGate::unelected(),
            local_moves: BTreeMap::new(),
        }
    }

    /// One loop on the per-node `averages` of the last window, at `now`
    /// (epoch ms). An error means the workloads could not be read: nothing
    /// was decided; the caller retries next window.
    pub async fn run_once<R: rand::Rng + ?Sized>(
        &mut self,
        averages: &BTreeMap<String, f64>,
        now: Millis,
        rng: &mut R,
    ) -> Result<LoopReport, BalanceError> {
        let discovery = discover(&self.mover.client, &self.scope).await?;
        let (finished, parked) = self.finish_interrupted(&discovery).await;
        let history = self.history(&discovery);
        let pending = history.pending(now, &self.params);
        let learned = learn_idle(
            &mut self.idle.learned,
            averages,
            &discovery.placements,
            &pending,
        );
        let workloads = estimate_loads(
            averages,
            &discovery.placements,
            self.workload_load,
            &self.idle,
        );
        let plan = plan_moves(averages, &workloads, &history, now, self.params, rng);
        let mut applied = Vec::new();
        if !self.dry_run {
            let at = Timestamp::from_millisecond(now).unwrap_or_else(|_| Timestamp::now());
            for m in &plan.moves {
                if !self.leader.acting() {
                    break; // Fenced: the next leader plans again.
                }
                let result = self.mover.apply(m, at).await;
                if result.is_ok() {
                    self.local_moves
                        .insert(m.workload.clone(), RecentMove::of(m, now));
                }
                applied.push((m.clone(), result));
            }
        }
        let keep = self.params.cooldown.max(self.params.settle_timeout);
        self.local_moves
            .retain(|_, m| now.saturating_sub(m.at) < keep);
        Ok(LoopReport {
            plan,
            finished,
            parked,
            learned,
            learned_idle: self.idle.learned.clone(),
            applied,
        })
    }

    /// Completes (or, in dry-run, only lists) the moves a failure or a
    /// restart left half-done: ScaledJobs whose old Jobs still run, parked
    /// Job copies.
    async fn finish_interrupted(
        &self,
        discovery: &Discovery,
    ) -> (
        Vec<(Unfinished, Result<(), BalanceError>)>,
        Vec<(Parked, Result<ParkedAction, BalanceError>)>,
    ) {
        let mut finished = Vec::new();
        for unfinished in &discovery.unfinished {
            if !self.dry_run && !self.leader.acting() {
                break; // Fenced: the next leader finishes it.
            }
            let result = if self.dry_run {
                Ok(())
            } else {
                self.mover.finish(unfinished).await
            };
            finished.push((unfinished.clone(), result));
        }
        let mut parked = Vec::new();
        for p in &discovery.parked {
            if !self.dry_run && !self.leader.acting() {
                break; // Fenced: the next leader finishes it.
            }
            let result = if self.dry_run {
                Ok(ParkedAction::Wait)
            } else {
                self.mover.finish_parked(p).await
            };
            parked.push((p.clone(), result));
        }
        (finished, parked)
    }

    /// The move records read from the cluster, completed with the moves
    /// this process made whose annotations are not read back yet.
    fn history(&self, discovery: &Discovery) -> History {
        let mut moved_at = discovery.moved_at.clone();
        let mut recent: BTreeMap<WorkloadKey, RecentMove> = discovery
            .recent
            .iter()
            .map(|m| (m.workload.clone(), m.clone()))
            .collect();
        for (key, local) in &self.local_moves {
            let at = moved_at.entry(key.clone()).or_insert(local.at);
            *at = (*at).max(local.at);
            if recent.get(key).is_none_or(|r| r.at < local.at) {
                let mut m = local.clone();
                m.arrived_at = discovery.arrival(key, &m.to);
                recent.insert(key.clone(), m);
            }
        }
        History {
            moved_at,
            recent: recent.into_values().collect(),
        }
    }
}

/// What the balancing loop reports to its caller (logs, metrics, the
/// `--dry-run` printout).
#[derive(Debug)]
pub enum LoopEvent<'a> {
    /// A decision was made on these window averages.
    Decided {
        /// Per-node average usage over the window.
        averages: &'a BTreeMap<String, f64>,
        /// The plan and what came of it.
        report: &'a LoopReport,
    },
    /// The workloads could not be read; the decision is skipped until the
    /// next full window.
    ReadFailed(&'a BalanceError),
}

/// Timing of the balancing loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopTiming {
    /// How often the usage is sampled into the window (5 s by default).
    pub sample_interval: Duration,
    /// Length of the window; one decision per window (30 s by default).
    pub window: Duration,
    /// Stop after the first decision.
    pub once: bool,
}

/// The balancer's loop: sample `usage` every `sample_interval`; when the
/// window is full, decide on its averages and act; then start a fresh
/// window, so the next decision only sees usage measured after the moves.
/// `clock` gives epoch milliseconds (wall clock in production, tokio's
/// clock in tests). Returns when `shutdown` resolves (or after one decision
/// with `once`). Read failures are reported and retried next window, so the
/// loop survives API server restarts. While `balancer.leader` says another
/// replica leads, nothing is decided; a new leader decides on its first full
/// window.
pub async fn run_loop<R, F, C>(
    balancer: &mut Balancer,
    mut usage: tokio::sync::watch::Receiver<posture_core::gpu::GpuSnapshot>,
    timing: LoopTiming,
    rng: &mut R,
    mut clock: C,
    shutdown: impl std::future::Future<Output = ()>,
    mut on_event: F,
) where
    R: rand::Rng + ?Sized,
    F: FnMut(LoopEvent<'_>),
    C: FnMut() -> Millis,
{
    let window_ms = Millis::try_from(timing.window.as_millis()).unwrap_or(Millis::MAX);
    let interval_ms = Millis::try_from(timing.sample_interval.as_millis()).unwrap_or(Millis::MAX);
    let mut window = posture_core::balance::UsageWindow::new(window_ms);
    let mut tick = tokio::time::interval(timing.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        let now = clock();
        let mut snapshot = usage.borrow_and_update().clone();
        // Stamp with our clock: the window is about when we observed.
        snapshot.taken_at = now;
        window.record(&snapshot);
        if !balancer.leader.acting() {
            // A follower decides nothing. When it wins it starts a fresh
            // window: one observed while following may predate the last
            // leader's moves (the same rule as after our own moves).
            window.clear();
            continue;
        }
        if !window.is_full(now, interval_ms) {
            continue;
        }
        let averages = window.averages(now);
        window.clear();
        match balancer.run_once(&averages, now, rng).await {
            Ok(report) => on_event(LoopEvent::Decided {
                averages: &averages,
                report: &report,
            }),
            Err(err) => on_event(LoopEvent::ReadFailed(&err)),
        }
        if timing.once {
            return;
        }
    }
}

/// Everything [`run_balancer`] needs to know, resolved by the caller from
/// its flags (`posture-farm balance`, `scaler --with-balancer`).
#[derive(Clone, Debug)]
pub struct BalancerConfig {
    /// Threshold and cool-down of the pure policy.
    pub params: BalanceParams,
    /// Seed of the destination tie-break (the caller draws one when none
    /// was given, and it is logged so a run can be replayed).
    pub seed: u64,
    /// Which workloads are considered.
    pub scope: Scope,
    /// Node label the written affinity matches (`gpu-node`).
    pub affinity_label: String,
    /// Fixed per-workload load estimate; `None` estimates each workload
    /// above its node's idle baseline.
    pub workload_load: Option<f64>,
    /// Idle baselines fixed by flags, and those restored from Prometheus.
    pub idle: IdleBaselines,
    /// Decide, log and print; change nothing.
    pub dry_run: bool,
    /// Sampling, window and one-shot settings.
    pub timing: LoopTiming,
    /// Reporting instance for Events (the pod name).
    pub instance: Option<String>,
    /// Leader election: decide and move only while this replica leads.
    pub leader: LeaderGate,
}

/// The balancing loop as a component: sample every `sample_interval`; once
/// a full window is observed, read the workloads, decide, act (or print
/// with `dry_run`), then start a fresh window. Survives API server and
/// Prometheus outages (a failed read skips that decision). `ready` is
/// called once the loop starts; returns when `shutdown` resolves or after
/// one decision with `timing.once`. `clock` gives epoch milliseconds (the
/// wall clock in production).
pub async fn run_balancer(
    client: kube::Client,
    cfg: BalancerConfig,
    usage: tokio::sync::watch::Receiver<posture_core::gpu::GpuSnapshot>,
    metrics: BalanceMetrics,
    clock: impl FnMut() -> Millis,
    ready: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mover = Mover::new(client, cfg.affinity_label.clone(), cfg.instance.clone());
    let mut balancer = Balancer::new(mover, cfg.scope.clone(), cfg.params);
    balancer.dry_run = cfg.dry_run;
    balancer.workload_load = cfg.workload_load;
    balancer.leader = cfg.leader.clone();
    balancer.idle = cfg.idle.clone();
    tracing::info!(
        seed = cfg.seed,
        threshold = cfg.params.threshold,
        window = ?cfg.timing.window,
        sample_interval = ?cfg.timing.sample_interval,
        cooldown = ?Duration::from_millis(u64::try_from(cfg.params.cooldown).unwrap_or(0)),
        settle_timeout = ?Duration::from_millis(u64::try_from(cfg.params.settle_timeout).unwrap_or(0)),
        workload_load = ?cfg.workload_load,
        idle_baselines = ?cfg.idle.resolved(),
        idle_default = ?cfg.idle.fixed_default,
        dry_run = cfg.dry_run,
        namespace = %cfg.scope.namespace,
        selector = %cfg.scope.selector,
        "balancer started"
    );
    ready();
    let (dry_run, threshold) = (cfg.dry_run, cfg.params.threshold);
    run_loop(
        &mut balancer,
        usage,
        cfg.timing,
        &mut rng,
        clock,
        shutdown,
        |event| report(dry_run, threshold, &metrics, event),
    )
    .await;
}

/// Logs, counts and (with `dry_run`) prints what one loop did.
fn report(dry_run: bool, threshold: f64, metrics: &BalanceMetrics, event: LoopEvent<'_>) {
    let (averages, report) = match event {
        LoopEvent::Decided { averages, report } => (averages, report),
        LoopEvent::ReadFailed(err) => {
            metrics.discovery_failed();
            tracing::warn!(
                error = error_chain(err),
                "could not read posture workloads; retrying next window"
            );
            return;
        }
    };
    report_interrupted(dry_run, report);
    for node in &report.learned {
        tracing::debug!(%node, baseline = report.learned_idle.get(node), "idle window: baseline learned");
    }
    let plan = &report.plan;
    metrics.observe(plan, averages);
    metrics.idle_baselines(&report.learned_idle);
    log_plan(plan, averages, threshold);
    if dry_run {
        print!("{}", render_plan(plan, averages, threshold));
        for m in &plan.moves {
            metrics.moved(m.workload.kind, MoveResult::DryRun);
        }
    }
    for (m, result) in &report.applied {
        match result {
            Ok(()) => metrics.moved(m.workload.kind, MoveResult::Applied),
            Err(err) => {
                metrics.moved(m.workload.kind, MoveResult::Failed);
                tracing::warn!(workload = %m.workload, from = %m.from, to = %m.to, error = error_chain(err), "move failed; it is re-planned next window");
            }
        }
    }
}

/// Logs (or, in dry-run, prints) what was found of interrupted moves.
fn report_interrupted(dry_run: bool, report: &LoopReport) {
    for (unfinished, result) in &report.finished {
        if dry_run {
            println!(
                "would finish the move of {} to {}: delete jobs {:?}",
                unfinished.workload, unfinished.to, unfinished.jobs
            );
        } else if let Err(err) = result {
            tracing::warn!(workload = %unfinished.workload, error = error_chain(err), "could not finish an interrupted move");
        }
    }
    for (parked, result) in &report.parked {
        if dry_run {
            println!(
                "would finish or roll back the move of job {} (parked copy {})",
                parked.for_name, parked.name
            );
        } else if let Err(err) = result {
            tracing::warn!(job = %parked.for_name, parked = %parked.name, error = error_chain(err),
                "could not finish an interrupted job move; its parked copy keeps it, retried next window");
        }
    }
}

fn log_plan(plan: &BalancePlan, averages: &BTreeMap<String, f64>, threshold: f64) {
    match plan.outcome {
        Outcome::NoData => {
            tracing::warn!("no fresh GPU usage for any node in the window; nothing to decide")
        }
        Outcome::Stable => {
            tracing::info!(
                ?averages,
                threshold,
                "stable: every node at or under the threshold"
            )
        }
        Outcome::AllOverloaded => tracing::warn!(
            ?averages,
            threshold,
            "every node is overloaded: nowhere to move to, nothing moves"
        ),
        Outcome::Rebalancing => {
            for m in &plan.moves {
                tracing::info!(workload = %m.workload, from = %m.from, to = %m.to, load = m.load, estimate = m.estimate.as_str(),
                    from_usage = m.from_usage, to_before = m.to_usage_before, to_after = m.to_usage_after, "planned move");
            }
            for (node, reason) in &plan.stuck {
                tracing::info!(%node, reason = reason.as_str(), "overloaded node left as is");
            }
        }
    }
}

/// The `--dry-run` printout: one line per node, then one per move.
pub fn render_plan(plan: &BalancePlan, averages: &BTreeMap<String, f64>, threshold: f64) -> String {
    let mut out = format!(
        "outcome: {} (threshold {threshold}%)\n",
        plan.outcome.as_str()
    );
    for (node, avg) in averages {
        let state = if *avg > threshold { "overloaded" } else { "ok" };
        out.push_str(&format!("  node {node:<24} avg {avg:6.1}%  {state}\n"));
    }
    for p in &plan.pending {
        out.push_str(&format!(
            "in progress: {} from {} to {} ({:.1} points, not in the readings yet)\n",
            p.workload, p.from, p.to, p.load
        ));
    }
    for m in &plan.moves {
        out.push_str(&format!(
            "would move {} from {} ({:.1}%) to {} ({:.1}% -> {:.1}%, load {:.1} {})\n",
            m.workload,
            m.from,
            m.from_usage,
            m.to,
            m.to_usage_before,
            m.to_usage_after,
            m.load,
            m.estimate
        ));
    }
    for (node, reason) in &plan.stuck {
        out.push_str(&format!("no move off {node}: {}\n", reason.as_str()));
    }
    out
}
