//! `posture-farm down`: collect results, then remove what `up` created.
//!
//! 1. Copy each running analyzer's CSVs and annotated images into
//!    `<results>/<pod>/` through the exec API and list what was collected
//!    (pods already finished or gone are reported, not errors).
//! 2. Delete our Jobs (propagation Background), then leftover analyzer pods;
//!    with `--purge` also ScaledJobs, the scheduler and scaler, Services,
//!    NetworkPolicies, the DB Secret and ConfigMap, RBAC and the namespace,
//!    and the `gpu-node` labels `up` added.
//! 3. Remove the control-plane taint `up` added.
//!
//! Only objects labelled `app.kubernetes.io/managed-by=posture-farm` are
//! touched; on an empty cluster it deletes nothing and succeeds.

use std::path::PathBuf;

use anyhow::Context as _;
use posture_k8s::ops::collect::collect_results;
use posture_k8s::ops::nodes;
use posture_k8s::ops::teardown::teardown;

/// Flags of `posture-farm down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Also delete ScaledJobs, scheduler, scaler, RBAC, Secret/ConfigMap, the
    /// namespace, and the gpu-node labels `up` added.
    #[arg(long, env = "POSTURE_PURGE")]
    pub purge: bool,
    /// Local folder for collected results (one subfolder per pod).
    #[arg(long, env = "POSTURE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Folder in the analyzer container to collect when its pod spec sets no OUTPUT_DIR.
    #[arg(long, env = "POSTURE_RESULTS_DIR", default_value = "/data")]
    pub results_dir: String,
    /// Skip result collection.
    #[arg(long)]
    pub no_collect: bool,
}

/// Runs the subcommand.
pub async fn run(args: DownArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;

    if !args.no_collect {
        let collected = collect_results(&client, &args.results, &args.results_dir)
            .await
            .context("collecting results")?;
        if collected.is_empty() {
            println!("no analyzer pods: nothing to collect");
        }
        for c in &collected {
            match &c.skipped {
                Some(reason) => println!("results {}: not collected: {reason}", c.pod),
                None => {
                    println!(
                        "results {}: {} file(s) in {}",
                        c.pod,
                        c.files.len(),
                        c.dir.display()
                    );
                    for f in &c.files {
                        println!("  {f}");
                    }
                }
            }
        }
    }

    let deleted = teardown(&client, args.purge).await.context("deleting")?;
    if deleted.is_empty() {
        println!("nothing deployed by posture-farm: nothing deleted");
    }
    for d in &deleted {
        println!("deleted {d}");
    }
    for c in nodes::untaint_all(&client).await.context("untainting")? {
        println!("node {}: {}", c.node, c.action);
    }
    if args.purge {
        for c in nodes::unlabel_gpu_nodes(&client)
            .await
            .context("removing gpu-node labels")?
        {
            println!("node {}: {}", c.node, c.action);
        }
    }
    Ok(())
}
