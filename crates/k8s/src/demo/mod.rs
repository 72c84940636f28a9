//! `posture-farm demo preemption`: the priority scheduler's decisions shown
//! live on any cluster running the priority mode (replaces seed 004's demo
//! script).
//!
//! ```text
//!  list nodes + the scheduler's pods ─► script::plan_nodes (N free nodes) ─► PriorityClasses
//!                                       low 10 / gang 50 / high 100 (below every farm class)
//!  step 1  create N low pods ───────┐
//!  step 2  create 1 high pod ───────┤  events.k8s.io/v1 Events (watch) ─► narrate::DemoState
//!  step 3  create a gang of N ──────┤      Scheduled / Preempted / FailedScheduling ─► lines
//!  step 4  delete the high pod ─────┘      each step ends when its story is told (or times out)
//!  always (also on Ctrl-C): delete the demo's pods and PriorityClasses (label posture-farm.io/demo)
//! ```
//!
//! The decisions are the scheduler's; this module only creates pods,
//! listens and cleans up. [`script`] builds the objects and [`narrate`]
//! turns Events into sentences and step verdicts, both pure.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

pub mod narrate;
pub mod script;

use narrate::{DemoState, Observed, Step, observed_from};
use script::{DEMO_LABEL, DEMO_VALUE, DemoConfig, Tier, names, pod, priority_classes};

use crate::workload::is_not_found;

/// Field manager of the demo's requests.
const MANAGER: &str = "posture-farm-demo";

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An API call failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Not enough free nodes to show a preemption.
    #[error(
        "only {} free node(s) {free:?}: the demo needs at least 2 Ready, untainted, schedulable nodes running no other pod of the scheduler (held: {held:?}; it never preempts the farm's analyzers: stop them with `posture-farm down`, or give --nodes)",
        free.len()
    )]
    TooFewNodes {
        /// The free nodes found.
        free: Vec<String>,
        /// Usable nodes held by other pods of the scheduler.
        held: Vec<(String, String)>,
    },
    /// A step did not show its outcome in time.
    #[error(
        "{step:?} did not complete within {timeout:?}; still waiting for {missing:?} (is the priority scheduler running with --scheduler-name as given, one pod per node?)"
    )]
    Timeout {
        /// The step.
        step: Step,
        /// Its time limit.
        timeout: Duration,
        /// Pods whose expected Event did not come.
        missing: Vec<String>,
    },
    /// The Event stream ended.
    #[error("the event stream ended")]
    EventsEnded,
    /// Ctrl-C (or SIGTERM).
    #[error("interrupted")]
    Interrupted,
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> DemoError {
    let action = action.into();
    move |source| DemoError::Api {
        action,
        source: Box::new(source),
    }
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

/// The nodes the demo may use: usable ones (see [`script::usable_nodes`])
/// not held by another pod of `scheduler` in `namespace` (see
/// [`script::plan_nodes`]).
pub async fn plan_nodes(
    client: &Client,
    namespace: &str,
    scheduler: &str,
) -> Result<script::NodePlan, DemoError> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing nodes"))?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(api_err(format!("listing pods in {namespace}")))?;
    Ok(script::plan_nodes(
        &script::usable_nodes(&nodes.items),
        &pods.items,
        scheduler,
    ))
}

/// Events about pods in `namespace`, as they are written (a watch that
/// re-lists after errors, with backoff).
pub fn pod_events(client: Client, namespace: &str) -> impl Stream<Item = Observed> + Send {
    let api: Api<Event> = Api::namespaced(client, namespace);
    watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|item| async move {
            match item {
                Ok(event) => observed_from(&event),
                Err(err) => {
                    tracing::debug!(%err, "event watch error; retrying");
                    None
                }
            }
        })
}

/// Plays the demo: prints each step's headline and the scheduler's
/// decisions from `events` through `out`, then cleans up (always, also
/// when `shutdown` resolves first or a step fails). Returns the summary.
pub async fn run_preemption<S, F>(
    client: Client,
    cfg: DemoConfig,
    events: S,
    out: F,
    shutdown: impl Future<Output = ()>,
) -> Result<String, DemoError>
where
    S: Stream<Item = Observed> + Unpin,
    F: FnMut(&str),
{
    if cfg.nodes < 2 {
        return Err(DemoError::TooFewNodes {
            free: Vec::new(),
            held: Vec::new(),
        });
    }
    let mut demo = Demo {
        client,
        cfg,
        state: DemoState::default(),
        out,
        events,
    };
    demo.cleanup(false).await?;
    let played = tokio::select! {
        r = demo.play() => r,
        () = shutdown => Err(DemoError::Interrupted),
    };
    let cleaned = demo.cleanup(true).await;
    let summary = demo.state.summary();
    (demo.out)(&format!("Where the demo's pods ended up:\n{summary}"));
    played.and(cleaned).map(|()| summary)
}

struct Demo<S, F> {
    client: Client,
    cfg: DemoConfig,
    state: DemoState,
    out: F,
    events: S,
}

impl<S, F> Demo<S, F>
where
    S: Stream<Item = Observed> + Unpin,
    F: FnMut(&str),
{
    async fn play(&mut self) -> Result<(), DemoError> {
        let classes: Api<PriorityClass> = Api::all(self.client.clone());
        for class in priority_classes() {
            match classes.create(&post(), &class).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(api_err(format!(
                        "creating PriorityClass {}",
                        class.name_any()
                    ))(e));
                }
            }
        }
        let n = self.cfg.nodes;
        for step in Step::ALL {
            (self.out)(&step.headline(n));
            match step {
                Step::FillLow => self.create(Tier::Low, n, None).await?,
                Step::High => self.create(Tier::High, 1, None).await?,
                Step::GangWaits => self.create(Tier::Gang, n, Some(n)).await?,
                Step::GangPlaced => {
                    let high = names(Tier::High, 1).concat();
                    self.delete_pod(&high).await?;
                    self.state.forget(&high);
                    (self.out)(&format!("  deleted    {high}"));
                }
            }
            self.wait(step).await?;
        }
        Ok(())
    }

    async fn create(
        &mut self,
        tier: Tier,
        count: usize,
        gang: Option<usize>,
    ) -> Result<(), DemoError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        for name in names(tier, count) {
            let created = pods
                .create(&post(), &pod(&self.cfg, &name, tier, gang))
                .await
                .map_err(api_err(format!(
                    "creating pod {}/{name}",
                    self.cfg.namespace
                )))?;
            self.state
                .track(&created.uid().unwrap_or_default(), &name, tier);
        }
        Ok(())
    }

    async fn delete_pod(&self, name: &str) -> Result<(), DemoError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        match pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!(
                "deleting pod {}/{name}",
                self.cfg.namespace
            ))(e)),
        }
    }

    /// Narrates Events until `step` has shown its outcome.
    async fn wait(&mut self, step: Step) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + self.cfg.step_timeout;
        while !self.state.done(step) {
            tokio::select! {
                next = self.events.next() => match next {
                    Some(o) => {
                        if let Some(line) = self.state.observe(&o) {
                            (self.out)(&line);
                        }
                    }
                    None => return Err(DemoError::EventsEnded),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(DemoError::Timeout {
                        step,
                        timeout: self.cfg.step_timeout,
                        missing: self.state.missing(step),
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes every pod and PriorityClass labelled as the demo's (from
    /// this run or an interrupted one); `say` prints what was removed.
    async fn cleanup(&mut self, say: bool) -> Result<(), DemoError> {
        let selector = ListParams::default().labels(&format!("{DEMO_LABEL}={DEMO_VALUE}"));
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let listed = pods
            .list(&selector)
            .await
            .map_err(api_err("listing the demo's pods"))?;
        for p in &listed.items {
            self.delete_pod(&p.name_any()).await?;
        }
        let classes: Api<PriorityClass> = Api::all(self.client.clone());
        let listed_classes = classes
            .list(&selector)
            .await
            .map_err(api_err("listing the demo's PriorityClasses"))?;
        for c in &listed_classes.items {
            let name = c.name_any();
            match classes.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("deleting PriorityClass {name}"))(e)),
            }
        }
        if say || !listed.items.is_empty() || !listed_classes.items.is_empty() {
            (self.out)(&format!(
                "Cleaned up: {} pod(s), {} PriorityClass(es).",
                listed.items.len(),
                listed_classes.items.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
