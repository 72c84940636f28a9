//! `posture-farm place`: spread Job / KEDA ScaledJob manifests (one per
//! camera stream) evenly over the GPU nodes with a fresh usage reading, the
//! extra ones on the least-busy nodes, ties drawn from `--seed`.
//!
//! Reads every manifest first and stops on the first bad one, so nothing is
//! half-done. Then: `--dry-run` prints the plan only; `--out-dir` writes the
//! pinned manifests; `--apply` server-side applies them; with neither, the
//! pinned manifests go to stdout as YAML (the plan to stderr).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use posture_core::spread::{SpreadPlan, plan_from_snapshot};
use posture_gpu::display::render_table;
use posture_k8s::place::{self, PinMode, Workload};
use posture_k8s::workload::GPU_NODE_LABEL;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::args::{GpuSourceArgs, seed_or_clock};

/// Flags of `posture-farm place`.
#[derive(Debug, clap::Args)]
pub struct PlaceArgs {
    /// Manifest files, or directories whose *.yaml / *.yml files are read (not recursively).
    #[arg(required = true, value_name = "FILES|DIR")]
    pub paths: Vec<PathBuf>,
    /// Seed for the tie-break among equally loaded nodes; the same seed and
    /// readings give the same plan. Without it a seed is drawn and printed.
    #[arg(long, env = "PLACE_SEED")]
    pub seed: Option<u64>,
    /// Print the plan as a table; write and apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the pinned manifests to this directory (one file per workload).
    #[arg(long, env = "PLACE_OUT_DIR")]
    pub out_dir: Option<PathBuf>,
    /// Server-side apply the pinned manifests (field manager posture-farm).
    #[arg(long)]
    pub apply: bool,
    /// Pin plain Jobs with spec.template.spec.nodeName instead of node
    /// affinity (bypasses the scheduler). ScaledJobs always get affinity.
    #[arg(long)]
    pub node_name_mode: bool,
    /// Node label the affinity matches; its value is the node name (see `label-nodes`).
    #[arg(long, env = "GPU_NODE_LABEL_KEY", default_value = GPU_NODE_LABEL)]
    pub label_key: String,
    /// Only place on these nodes (comma-separated); default: every node with a fresh reading.
    #[arg(long, env = "PLACE_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Namespace for manifests without one when applying (default: the kubeconfig's).
    #[arg(long, env = "POSTURE_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub source: GpuSourceArgs,
}

/// Every manifest file named by `paths`, directories expanded (sorted).
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{} holds no .yaml or .yml file", p.display());
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Parses every file; the first error aborts.
pub fn load_workloads(files: &[PathBuf]) -> anyhow::Result<Vec<Workload>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        out.extend(place::parse_workloads(&text, &f.display().to_string())?);
    }
    if out.is_empty() {
        anyhow::bail!("no Job or ScaledJob manifest found");
    }
    let mut seen = BTreeMap::new();
    for w in &out {
        let key = (w.kind, w.namespace.clone(), w.name.clone());
        if let Some(first) = seen.insert(key, w.origin.clone()) {
            anyhow::bail!(
                "{} {} appears twice ({first} and {})",
                w.kind.kind_name(),
                w.name,
                w.origin
            );
        }
    }
    Ok(out)
}

/// The plan as text: one row per workload, then one per node.
pub fn render_plan(workloads: &[Workload], plan: &SpreadPlan, seed: u64) -> String {
    let mut out = String::new();
    let wl: Vec<String> = workloads
        .iter()
        .map(|w| {
            format!(
                "{} {}{}",
                w.kind.kind_name(),
                w.namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                w.name
            )
        })
        .collect();
    let width = wl.iter().map(String::len).max().unwrap_or(0).max(8);
    out.push_str(&format!("{:<width$}  NODE\n", "WORKLOAD"));
    for (w, node) in wl.iter().zip(&plan.assignments) {
        out.push_str(&format!("{w:<width$}  {node}\n"));
    }
    let nw = plan
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(0)
        .max(4);
    out.push_str(&format!("\n{:<nw$}  USAGE   WORKLOADS\n", "NODE"));
    for n in &plan.nodes {
        out.push_str(&format!(
            "{:<nw$}  {:<6}  {}\n",
            n.node,
            format!("{:.1}%", n.usage_percent),
            n.workloads
        ));
    }
    out.push_str(&format!("seed {seed} (pass --seed {seed} to reproduce)\n"));
    out
}

/// A file name for a workload: `<kind>-<namespace>-<name>.yaml`, lower case.
fn file_name(w: &Workload) -> String {
    let ns = w
        .namespace
        .as_deref()
        .map(|n| format!("{n}-"))
        .unwrap_or_default();
    format!("{}-{ns}{}.yaml", w.kind.kind_name().to_lowercase(), w.name)
}

fn to_yaml(v: &serde_json::Value) -> anyhow::Result<String> {
    serde_saphyr::to_string(v).context("serializing a manifest to YAML")
}

/// Runs the subcommand.
pub async fn run(args: PlaceArgs) -> anyhow::Result<()> {
    let files = collect_files(&args.paths)?;
    let workloads = load_workloads(&files)?;

    let mut source = args.source.build()?;
    let snapshot = source.poll(posture_gpu::now_millis()).await.clone();
    let allowed: Vec<String> = args
        .nodes
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let only = |n: &str| allowed.iter().any(|a| a == n);
    let filter: Option<&dyn Fn(&str) -> bool> = if allowed.is_empty() {
        None
    } else {
        Some(&only)
    };
    let seed = seed_or_clock(args.seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = plan_from_snapshot(workloads.len(), &snapshot, filter, &mut rng).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{}",
            render_table(&snapshot, args.source.prometheus_url.as_str())
        )
    })?;
    let table = render_plan(&workloads, &plan, seed);
    let mode = if args.node_name_mode {
        PinMode::NodeName {
            label_key: args.label_key.clone(),
        }
    } else {
        PinMode::Affinity {
            label_key: args.label_key.clone(),
        }
    };
    if args.dry_run {
        print!("{table}");
        return Ok(());
    }
    let pinned: Vec<serde_json::Value> = workloads
        .iter()
        .zip(&plan.assignments)
        .map(|(w, node)| place::pin(w, node, &mode))
        .collect();
    if args.out_dir.is_none() && !args.apply {
        eprint!("{table}");
        let docs: anyhow::Result<Vec<String>> = pinned.iter().map(to_yaml).collect();
        print!("{}", docs?.join("---\n"));
        return Ok(());
    }
    print!("{table}");
    if let Some(dir) = &args.out_dir {
        write_out(dir, &workloads, &pinned)?;
    }
    if args.apply {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster)")?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let mut failed = 0;
        for (w, object) in workloads.iter().zip(pinned) {
            match place::apply(&client, w, object, &namespace).await {
                Ok(_) => println!("applied {} {}", w.kind.kind_name(), w.name),
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {:#}", anyhow::Error::new(e));
                }
            }
        }
        if failed > 0 {
            anyhow::bail!(
                "{failed} of {} workload(s) could not be applied",
                workloads.len()
            );
        }
    }
    Ok(())
}

fn write_out(
    dir: &Path,
    workloads: &[Workload],
    pinned: &[serde_json::Value],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (w, object) in workloads.iter().zip(pinned) {
        let path = dir.join(file_name(w));
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, to_yaml(object)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::gpu::GpuSnapshot;

    fn scaled_job(name: &str) -> String {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata:\n  name: {name}\nspec:\n  jobTargetRef:\n    template:\n      spec:\n        containers: [{{name: a, image: i}}]\n        restartPolicy: Never\n  triggers: []\n"
        )
    }

    #[test]
    fn ten_scaled_jobs_spread_four_three_three_and_round_trip_as_yaml() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(
                dir.path().join(format!("cam{i:02}.yaml")),
                scaled_job(&format!("posture-cam{i:02}")),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
        let files = collect_files(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files.len(), 10);
        let workloads = load_workloads(&files).unwrap();
        let snap = GpuSnapshot::from_fresh(0, &[("agx", 20.0), ("xavier", 70.0), ("orin", 35.0)]);
        let plan = plan_from_snapshot(10, &snap, None, &mut StdRng::seed_from_u64(3)).unwrap();
        assert_eq!(
            plan.counts(),
            [("agx", 4), ("orin", 3), ("xavier", 3)].into()
        );
        let text = render_plan(&workloads, &plan, 3);
        assert!(
            text.starts_with("WORKLOAD                 NODE\nScaledJob posture-cam00  agx\n"),
            "{text}"
        );
        assert!(text.contains("agx     20.0%   4\n"), "{text}");
        assert!(text.ends_with("seed 3 (pass --seed 3 to reproduce)\n"));

        let out = dir.path().join("out");
        let pinned: Vec<_> = workloads
            .iter()
            .zip(&plan.assignments)
            .map(|(w, n)| place::pin(w, n, &PinMode::default()))
            .collect();
        write_out(&out, &workloads, &pinned).unwrap();
        let back = load_workloads(&collect_files(&[out]).unwrap()).unwrap();
        assert_eq!(back.len(), 10);
        let node_of = |w: &Workload| {
            w.object
                .pointer("/spec/jobTargetRef/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/0/values/0")
                .and_then(|v| v.as_str())
                .unwrap()
                .to_string()
        };
        assert_eq!(node_of(&back[0]), plan.assignments[0]);
    }

    #[test]
    fn bad_input_is_refused_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, scaled_job("same")).unwrap();
        let b = dir.path().join("b.yaml");
        std::fs::write(&b, scaled_job("same")).unwrap();
        let err = load_workloads(&[a.clone(), b]).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let c = dir.path().join("c.yaml");
        std::fs::write(&c, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap();
        let err = load_workloads(&[a, c]).unwrap_err();
        assert!(err.to_string().contains("found v1 Service"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(collect_files(&[empty]).is_err());
    }
}
