//! Result collection for `down`: copy each analyzer pod's CSVs and annotated
//! images into `./results/<pod>/` before the pods are deleted.
//!
//! Transport: the pod `exec` subresource (a WebSocket stream through the API
//! server, kube's `ws` feature) running `tar cf - -C <dir> .` in the analyzer
//! container; the tar stream is unpacked locally with the `tar` crate, which
//! refuses absolute paths and `..` (a pod cannot write outside its folder).
//! This needs only API access — no node SSH, no shared volume — and the image
//! ships `tar` for it (see the Dockerfile). `<dir>` is the container's
//! `OUTPUT_DIR` env var (as `deploy/jobs/` sets it), else the `--results-dir`
//! default. Pods that are not running (completed, pending, gone) are reported
//! with the reason, not treated as errors.
//!
//! The exec transport sits behind [`PodArchiver`] so the collection logic is
//! tested with an in-memory archiver; the kube implementation is [`ExecArchiver`].

use std::future::Future;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use tokio::io::AsyncReadExt;

use super::pods::is_analyzer;
use super::{OpsError, managed_selector};

/// Env var naming the analyzer's output folder in the pod spec.
pub const OUTPUT_DIR_ENV: &str = "OUTPUT_DIR";

/// Upper bound on one pod's archive, so a runaway pod cannot fill the
/// operator's memory (results of a long session are a few hundred MB at most).
pub const MAX_ARCHIVE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Fetches a folder of a container as a tar stream.
pub trait PodArchiver {
    /// The tar bytes of `dir` in `container` of pod `namespace/pod`.
    fn archive(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        dir: &str,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
}

/// [`PodArchiver`] over the Kubernetes exec API.
#[derive(Clone)]
pub struct ExecArchiver {
    client: Client,
}

impl ExecArchiver {
    /// Archiver using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl PodArchiver for ExecArchiver {
    async fn archive(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        dir: &str,
    ) -> Result<Vec<u8>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = AttachParams::default()
            .container(container)
            .stdout(true)
            .stderr(true);
        let mut process = api
            .exec(pod, ["tar", "cf", "-", "-C", dir, "."], &params)
            .await
            .map_err(|e| format!("exec failed: {e}"))?;
        let stdout = process.stdout().ok_or("exec gave no stdout")?;
        let stderr = process.stderr().ok_or("exec gave no stderr")?;
        let status = process.take_status().ok_or("exec gave no status")?;
        let mut out = Vec::new();
        let mut err = Vec::new();
        // Read both streams at once: a full stderr pipe must not block stdout.
        let mut stdout = stdout.take(MAX_ARCHIVE_BYTES + 1);
        let mut stderr = stderr.take(64 * 1024);
        let (r_out, r_err) =
            tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        r_out.map_err(|e| format!("reading tar stream: {e}"))?;
        r_err.map_err(|e| format!("reading stderr: {e}"))?;
        let status = status.await;
        process
            .join()
            .await
            .map_err(|e| format!("exec stream: {e}"))?;
        if out.len() as u64 > MAX_ARCHIVE_BYTES {
            return Err(format!("archive larger than {MAX_ARCHIVE_BYTES} bytes"));
        }
        if let Some(s) = status
            && s.status.as_deref() == Some("Failure")
        {
            let stderr = String::from_utf8_lossy(&err);
            return Err(format!(
                "tar failed: {} {}",
                s.message.unwrap_or_default(),
                stderr.trim()
            ));
        }
        Ok(out)
    }
}

/// What collection got from one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected {
    /// `namespace/name`.
    pub pod: String,
    /// Local folder written.
    pub dir: PathBuf,
    /// Files written (relative to `dir`), sorted.
    pub files: Vec<String>,
    /// Why nothing was collected, when nothing was.
    pub skipped: Option<String>,
}

/// Unpacks a tar stream into `dest`, refusing entries that would escape it;
/// returns the regular files written.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<Vec<String>, OpsError> {
    let io = |source| OpsError::Io {
        path: dest.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dest).map_err(io)?;
    let mut archive = tar::Archive::new(bytes);
    let mut files = Vec::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let is_file = entry.header().entry_type().is_file();
        // unpack_in returns false for paths with `..` or absolute ones.
        if entry.unpack_in(dest).map_err(io)? && is_file {
            let rel = path.strip_prefix(".").unwrap_or(&path);
            files.push(rel.display().to_string());
        }
    }
    files.sort();
    Ok(files)
}

fn output_dir(pod: &Pod, default_dir: &str) -> (String, String) {
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let name = container.map(|c| c.name.clone()).unwrap_or_default();
    let dir = container
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == OUTPUT_DIR_ENV))
        .and_then(|e| e.value.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default_dir.to_string());
    (name, dir)
}

/// Collects from every running analyzer pod in `pods` into `out/<pod>/`.
pub async fn collect_from<A: PodArchiver>(
    archiver: &A,
    pods: &[Pod],
    out: &Path,
    default_dir: &str,
) -> Result<Vec<Collected>, OpsError> {
    let mut results = Vec::new();
    for pod in pods.iter().filter(|p| is_analyzer(p)) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dir = out.join(&name);
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let mut item = Collected {
            pod: format!("{ns}/{name}"),
            dir: dir.clone(),
            files: Vec::new(),
            skipped: None,
        };
        if phase != "Running" || pod.metadata.deletion_timestamp.is_some() {
            item.skipped = Some(format!(
                "pod is {} (its files went with its container)",
                if phase.is_empty() { "gone" } else { &phase }
            ));
            results.push(item);
            continue;
        }
        let (container, src) = output_dir(pod, default_dir);
        match archiver.archive(&ns, &name, &container, &src).await {
            Ok(bytes) => {
                item.files = unpack(&bytes, &dir)?;
                tracing::info!(pod = %item.pod, files = item.files.len(), dir = %dir.display(), "results collected");
            }
            Err(reason) => {
                tracing::warn!(pod = %item.pod, %reason, "results not collected");
                item.skipped = Some(reason);
            }
        }
        results.push(item);
    }
    Ok(results)
}

/// Lists our pods and collects from the analyzers among them.
pub async fn collect_results(
    client: &Client,
    out: &Path,
    default_dir: &str,
) -> Result<Vec<Collected>, OpsError> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&managed_selector()))
        .await
        .map_err(|e| OpsError::kube("list analyzer pods", e))?
        .items;
    collect_from(&ExecArchiver::new(client.clone()), &pods, out, default_dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("finish")
    }

    fn pod(name: &str, phase: &str, out_dir: Option<&str>) -> Pod {
        let env = out_dir.map_or(json!([]), |d| json!([{"name": "OUTPUT_DIR", "value": d}]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}]},
            "spec": {"containers": [{"name": "analyzer", "env": env}]},
            "status": {"phase": phase},
        }))
        .expect("pod")
    }

    struct Fake {
        archives: HashMap<String, Result<Vec<u8>, String>>,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl PodArchiver for Fake {
        async fn archive(
            &self,
            ns: &str,
            pod: &str,
            container: &str,
            dir: &str,
        ) -> Result<Vec<u8>, String> {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("{ns}/{pod}:{container}:{dir}"));
            self.archives
                .get(pod)
                .cloned()
                .unwrap_or_else(|| Err("no such pod".into()))
        }
    }

    #[tokio::test]
    async fn running_pods_are_collected_others_reported() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fake = Fake {
            archives: HashMap::from([
                (
                    "a".to_string(),
                    Ok(tar_of(&[
                        ("./pi1_results.csv", b"t,label\n1,Good\n"),
                        ("./images/pi1/0001.jpg", b"\xff\xd8"),
                    ])),
                ),
                (
                    "b".to_string(),
                    Err("tar failed: cannot open /data".to_string()),
                ),
            ]),
            calls: Default::default(),
        };
        let pods = [
            pod("a", "Running", Some("/data")),
            pod("b", "Running", None),
            pod("c", "Succeeded", None),
        ];
        let got = collect_from(&fake, &pods, tmp.path(), "/results")
            .await
            .expect("ok");
        assert_eq!(
            *fake.calls.lock().expect("lock"),
            ["default/a:analyzer:/data", "default/b:analyzer:/results"]
        );
        assert_eq!(got[0].files, ["images/pi1/0001.jpg", "pi1_results.csv"]);
        assert_eq!(
            std::fs::read(tmp.path().join("a/pi1_results.csv")).expect("written"),
            b"t,label\n1,Good\n"
        );
        assert_eq!(
            got[1].skipped.as_deref(),
            Some("tar failed: cannot open /data")
        );
        assert!(
            got[2]
                .skipped
                .as_deref()
                .is_some_and(|s| s.contains("Succeeded")),
            "{:?}",
            got[2]
        );
    }

    #[tokio::test]
    async fn collect_results_lists_our_pods_and_reports_finished_ones() {
        let (client, mut mock) = crate::test_support::ApiMock::new();
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().to_path_buf();
        let task = tokio::spawn(async move { collect_results(&client, &out, "/data").await });
        let req = mock.expect_get("/api/v1/pods").await;
        assert!(
            req.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dposture-farm"),
            "{}",
            req.query
        );
        let done =
            serde_json::to_value(pod("posture-pi1-abc", "Succeeded", Some("/data"))).expect("json");
        req.respond(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [done]}),
        );
        let got = task.await.expect("joins").expect("ok");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pod, "default/posture-pi1-abc");
        assert!(got[0].skipped.is_some() && got[0].files.is_empty());
    }

    #[test]
    fn unpack_refuses_paths_escaping_the_folder() {
        let tmp = tempfile::tempdir().expect("tmp");
        // A hostile archive: the tar builder refuses `..`, so write the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..12].copy_from_slice(b"../evil.csv\0");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0; 1024]);
        let dest = tmp.path().join("pod");
        let files = unpack(&bytes, &dest).expect("unpacks the rest");
        assert!(files.is_empty());
        assert!(!tmp.path().join("evil.csv").exists());
    }
}
