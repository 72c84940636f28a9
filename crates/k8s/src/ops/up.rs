//! The `up` sequence as steps the CLI calls around KEDA placement:
//! [`prepare_nodes`] (taint the control plane, label GPU nodes),
//! [`read_secret`] (credentials an earlier `up` generated, kept), and
//! [`deploy`]: prune what the new plan no longer holds (the previous mode's
//! scheduler, ScaledJobs after a switch to Jobs), apply the platform
//! (namespace, RBAC, config, broker, database), wait until the broker and the
//! database are ready, apply the controllers and the analyzers, then wait for
//! the Deployments and the analyzer pods. Kept here, not in the CLI, so the
//! whole exchange with the API server — and its idempotence — is tested as
//! one scenario.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::OpsError;
use super::apply::{ApplyOutcome, apply_one};
use super::manifests::generate::secret_strings;
use super::nodes::{self, NodeChange};
use super::plan::{ApplyPlan, PlannedObject, Stage};
use super::teardown::{Deleted, prune};
use super::wait::{
    WaitConfig, WaitProgress, wait_deployments, wait_pods_scheduled, wait_statefulsets,
};
use crate::workload::{GPU_NODE_LABEL, LabelError, label_gpu_nodes};
use kube::Client;

/// How `up` prepares nodes.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `--master`: the node to taint instead of the role-labelled ones.
    pub master: Option<String>,
    /// `--no-taint`.
    pub skip_taint: bool,
    /// `--gpu-nodes`: nodes to label instead of every non-master node.
    pub gpu_nodes: Vec<String>,
}

/// What node preparation did, and the GPU nodes it settled on.
#[derive(Clone, Debug, Default)]
pub struct PreparedNodes {
    /// Taint and label changes (or confirmations).
    pub changes: Vec<NodeChange>,
    /// The control-plane nodes (tainted unless skipped).
    pub masters: Vec<String>,
    /// The GPU nodes (labelled `gpu-node=<name>`).
    pub gpu_nodes: Vec<String>,
}

/// Taints the control-plane node(s) and labels the GPU nodes.
pub async fn prepare_nodes(client: &Client, opts: &NodeOptions) -> Result<PreparedNodes, OpsError> {
    let all = nodes::list_nodes(client).await?;
    let masters = nodes::masters(&all, opts.master.as_deref());
    let mut changes = Vec::new();
    if !opts.skip_taint {
        changes.extend(nodes::taint(client, &all, &masters).await?);
    }
    let gpu_nodes = nodes::gpu_nodes(&all, &masters, &opts.gpu_nodes);
    let labelled = label_gpu_nodes(client, &all, &gpu_nodes, GPU_NODE_LABEL)
        .await
        .map_err(|e| match e {
            LabelError::NoSuchNode { node } => OpsError::manifest(
                format!("node {node}"),
                "no such node in the cluster (check --gpu-nodes)",
            ),
            LabelError::Read { node, source } | LabelError::Patch { node, source, .. } => {
                OpsError::kube(format!("label node {node}"), source)
            }
        })?;
    changes.extend(labelled.into_iter().map(|l| NodeChange {
        action: format!("labelled {GPU_NODE_LABEL}={}", l.node),
        node: l.node,
        changed: l.changed,
    }));
    Ok(PreparedNodes {
        changes,
        masters,
        gpu_nodes,
    })
}

/// The string data of Secret `namespace/name`, or `None` when it does not
/// exist (or the namespace does not, yet).
pub async fn read_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, OpsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| OpsError::kube(format!("read Secret {namespace}/{name}"), e))?;
    Ok(secret.as_ref().map(secret_strings))
}

/// A step of [`deploy`], for progress display.
#[derive(Clone, Debug)]
pub enum DeployEvent<'a> {
    /// An object of ours the plan no longer holds was deleted.
    Pruned(&'a Deleted),
    /// One object applied (`n` of `total`).
    Applied {
        /// The outcome.
        outcome: &'a ApplyOutcome,
        /// How many are done.
        n: usize,
        /// How many there are.
        total: usize,
    },
    /// A readiness poll.
    Waiting(&'a WaitProgress),
}

/// What [`deploy`] did.
#[derive(Clone, Debug, Default)]
pub struct DeployReport {
    /// Objects of an earlier `up` the plan no longer holds, deleted.
    pub pruned: Vec<Deleted>,
    /// Each planned object, applied.
    pub applied: Vec<ApplyOutcome>,
}

/// Applies `objects` in order, appending each outcome to `applied` (of
/// `total` in the whole plan) and reporting it.
async fn apply_all(
    client: &Client,
    objects: &[&PlannedObject],
    total: usize,
    applied: &mut Vec<ApplyOutcome>,
    events: &mut impl FnMut(DeployEvent<'_>),
) -> Result<(), OpsError> {
    for object in objects {
        let outcome = apply_one(client, object).await?;
        events(DeployEvent::Applied {
            outcome: &outcome,
            n: applied.len() + 1,
            total,
        });
        applied.push(outcome);
    }
    Ok(())
}

/// Prunes, then applies the plan in two halves around the platform wait;
/// unless `wait` is `None`, waits for the broker and database StatefulSets
/// before the controllers and analyzers are applied, and for the
/// Deployments and one scheduled pod per Job in `namespace` at the end.
pub async fn deploy(
    client: &Client,
    plan: &ApplyPlan,
    namespace: &str,
    wait: Option<WaitConfig>,
    mut events: impl FnMut(DeployEvent<'_>),
) -> Result<DeployReport, OpsError> {
    let pruned = prune(client, plan).await?;
    pruned.iter().for_each(|d| events(DeployEvent::Pruned(d)));
    let total = plan.objects.len();
    let mut applied = Vec::with_capacity(total);
    let (platform, rest): (Vec<_>, Vec<_>) = plan
        .objects
        .iter()
        .partition(|o| o.stage <= Stage::Platform);
    apply_all(client, &platform, total, &mut applied, &mut events).await?;
    if let Some(cfg) = wait {
        let statefulsets = plan.named("StatefulSet", Stage::Platform);
        wait_statefulsets(client, &statefulsets, cfg, |p| {
            events(DeployEvent::Waiting(p))
        })
        .await?;
    }
    apply_all(client, &rest, total, &mut applied, &mut events).await?;
    if let Some(cfg) = wait {
        wait_deployments(client, &plan.deployments(), cfg, |p| {
            events(DeployEvent::Waiting(p))
        })
        .await?;
        let jobs = plan.workload_names("Job").len();
        if jobs > 0 {
            wait_pods_scheduled(client, namespace, jobs, cfg, |p| {
                events(DeployEvent::Waiting(p))
            })
            .await?;
        }
    }
    Ok(DeployReport { pruned, applied })
}

#[cfg(test)]
mod tests;
