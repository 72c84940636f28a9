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

/// The seeds' layout from the database at `url` into `out`, with the
/// store's export library: every camera's rows (time order) and images.
async fn export_results(url: &str, out: &Path) -> anyhow::Result<String> {
    use posture_analyzer::export::{ExportOptions, export};
    use posture_analyzer::{Database, DbTarget, LegacyDbVars};
    let target = DbTarget::resolve(Some(url), &LegacyDbVars::default(), Path::new(""))?;
    let mut db = Database::open(&target).await?;
    let opts = ExportOptions {
        out: out.to_path_buf(),
        images: true,
        ..ExportOptions::default()
    };
    let summary = export(&mut db, &opts).await;
    db.close().await;
    let summary = summary?;
    Ok(format!(
        "{} row(s) and {} image(s) of {} camera(s) ({})",
        summary.rows,
        summary.images,
        summary.cameras.len(),
        summary.cameras.join(", ")
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use posture_analyzer::store::Entry;
    use posture_analyzer::{Database, DbTarget, PostureRow};

    fn row(camera: &str, n: u32) -> PostureRow {
        PostureRow {
            pi_id: camera.into(),
            filename: format!("{camera}_{n}.jpg"),
            received_time: format!("2026-11-23T10:00:0{n}.000000Z"),
            analyzed_time: format!("2026-11-23T10:00:0{n}.100000Z"),
            neck_angle: Some(12.5),
            body_angle: Some(3.0),
            posture_status: "Good".into(),
            landmarks_detected: true,
            processed_by: format!("node-{n}"),
            frame_id: format!("{camera}-{n}"),
        }
    }

    /// `down` collects from the database in the seeds' layout: one CSV per
    /// camera whichever pod wrote the rows, and every stored image.
    #[tokio::test]
    async fn results_come_from_the_database_in_the_seeds_layout() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("farm.db");
        let mut db = Database::open(&DbTarget::Sqlite(path.clone()))
            .await
            .expect("opens");
        db.ensure_schema().await.expect("schema");
        let rows = [row("pi1", 1), row("pi1", 2), row("pi1-1", 3)];
        let jpeg: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9";
        let entries: Vec<Entry<'_>> = rows
            .iter()
            .map(|r| Entry {
                row: r,
                jpeg: Some(jpeg),
            })
            .collect();
        db.record(&entries).await.expect("recorded");
        db.close().await;

        let out = tmp.path().join("results");
        let url = format!("sqlite:{}", path.display());
        let summary = export_results(&url, &out).await.expect("exports");
        assert!(
            summary.starts_with("3 row(s) and 3 image(s) of 2 camera(s)"),
            "{summary}"
        );
        let csv = std::fs::read_to_string(out.join("pi1_results.csv")).expect("csv");
        assert_eq!(csv.lines().count(), 3, "header and two rows: {csv}");
        assert!(csv.contains("node-1") && csv.contains("node-2"));
        let image = out.join("analyzed_images/analyzed_images_from_pi1-1/pi1-1_3.jpg");
        assert_eq!(std::fs::read(&image).expect("image"), jpeg);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_an_error_not_a_hang() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = export_results("postgres://u:p@127.0.0.1:1/x", tmp.path())
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            !format!("{err:#}").contains(":p@"),
            "no password in {err:#}"
        );
    }
}
