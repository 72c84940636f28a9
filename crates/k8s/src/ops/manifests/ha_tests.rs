//! The controllers' RBAC for high availability (issue 15), held to the
//! code: the requests the Lease store and the position store really send
//! (recorded against the mock API server) are turned into the RBAC
//! permissions they need, and every controller Deployment `up` renders must
//! be granted exactly those on `leases` and `configmaps` — no verb missing,
//! none extra, and every verb that can be limited by name limited to the
//! object the Deployment names.

use std::collections::BTreeSet;

use posture_core::lease::LeaseRecord;
use serde_json::{Value, json};

use super::{Mode, RenderOptions, Rendered, embedded, render};
use crate::lease::{KubeLease, LeaseStore};
use crate::scheduler::gpu_state::{DEFAULT_CONFIGMAP as GPU_STATE, GpuStateStore};
use crate::scheduler::handover::DEFAULT_RR_CONFIGMAP;
use crate::test_support::{ApiMock, Recorded, status_json};

/// One permission a request needs: `verb` on `group`/`resource`, limited
/// to `name` when the request names its object (`None`: a create, whose
/// object has no name yet when the API server authorises it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
}

/// The RBAC permissions of one recorded request, as the API server maps
/// them: GET on an object is `get`, POST on the collection `create`, PUT
/// `update`, PATCH `patch` — and a server-side apply (PATCH with
/// `application/apply-patch+yaml`) also needs `create`, since it creates
/// the object when it does not exist.
fn needs_of(r: &Recorded) -> Vec<Need> {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        other => panic!("not an API path: {other:?}"),
    };
    let (resource, name) = match rest {
        ["namespaces", _, resource] => (*resource, None),
        ["namespaces", _, resource, name] => (*resource, Some(name.to_string())),
        other => panic!("not a namespaced object path: {other:?}"),
    };
    let need = |verb: &str, name: Option<String>| Need {
        group: group.into(),
        resource: resource.into(),
        verb: verb.into(),
        name,
    };
    match (r.method.as_str(), name) {
        ("GET", Some(n)) => vec![need("get", Some(n))],
        ("POST", None) => vec![need("create", None)],
        ("PUT", Some(n)) => vec![need("update", Some(n))],
        ("PATCH", Some(n)) if r.content_type.starts_with("application/apply-patch") => {
            vec![need("patch", Some(n)), need("create", None)]
        }
        ("PATCH", Some(n)) => vec![need("patch", Some(n))],
        (m, n) => panic!("unexpected request {m} {} ({n:?})", r.path),
    }
}

/// Answers every request as an API server without the object would:
/// reads 404, writes echo the object with a new resourceVersion.
async fn serve(mut mock: ApiMock, count: usize) -> BTreeSet<Need> {
    let mut needs = BTreeSet::new();
    for i in 0..count {
        let r = mock.next().await;
        needs.extend(needs_of(&r));
        if r.method == "GET" {
            r.respond(404, status_json(404, "NotFound", "not found"));
        } else {
            let mut body = r.body.clone();
            body["metadata"]["resourceVersion"] = json!(format!("{}", i + 1));
            r.respond(200, body);
        }
    }
    needs
}

/// What the Lease store calls in a lease's life: read it (absent), create
/// it, then write it (renewal, take-over and release are all this PUT).
async fn lease_needs(name: &str) -> BTreeSet<Need> {
    let (client, mock) = ApiMock::new();
    let store = KubeLease::new(client, "posture", name);
    let server = tokio::spawn(serve(mock, 3));
    assert!(store.get().await.expect("reads").is_none());
    let record = LeaseRecord {
        holder: Some("rr-scheduler-7d4f-a".into()),
        lease_duration_secs: 15,
        acquire_time: Some(1_000),
        renew_time: Some(1_000),
        transitions: 0,
    };
    let created = store.create(&record).await.expect("creates");
    let renewed = LeaseRecord {
        renew_time: Some(3_000),
        ..record
    };
    store.update(&created, &renewed).await.expect("updates");
    server.await.expect("serves")
}

/// What the position store calls: read the ConfigMap (absent), then save a
/// node.
async fn position_needs(name: &str) -> BTreeSet<Need> {
    let (client, mock) = ApiMock::new();
    let mut store = GpuStateStore::new(client, "posture", name);
    let server = tokio::spawn(serve(mock, 2));
    assert_eq!(store.load().await.expect("reads"), None);
    assert!(
        store
            .save_if_changed(Some("jetson-1"))
            .await
            .expect("saves")
    );
    server.await.expect("serves")
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    env_of(container, name)?["value"].as_str()
}

/// A Deployment of the plan that runs a controller taking part in leader
/// election: `scheduler`, `balance`, or `scaler --with-balancer`.
struct Controller<'a> {
    deployment: &'a Value,
    container: &'a Value,
}

impl Controller<'_> {
    fn name(&self) -> &str {
        self.deployment["metadata"]["name"].as_str().unwrap_or("?")
    }

    fn namespace(&self) -> &str {
        self.deployment["metadata"]["namespace"]
            .as_str()
            .expect("namespaced")
    }

    fn service_account(&self) -> &str {
        self.deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("runs as its own ServiceAccount")
    }

    fn is_scheduler(&self) -> bool {
        self.container["args"][0] == "scheduler"
    }

    /// The Lease it elects on: `LEASE_NAME`, else the command's default.
    fn lease(&self) -> String {
        env_value(self.container, "LEASE_NAME")
            .map(str::to_string)
            .or_else(|| {
                self.is_scheduler()
                    .then(|| env_value(self.container, "SCHEDULER_NAME"))
                    .flatten()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "posture-farm-balancer".into())
    }

    /// The Lease lives in the pod's own namespace.
    fn lease_in_own_namespace(&self) -> bool {
        let Some(env) = env_of(self.container, "LEASE_NAMESPACE") else {
            return false;
        };
        env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
            || env["value"] == self.namespace()
    }

    /// The ConfigMap its profile keeps its position in, if any.
    fn position_configmap(&self) -> Option<String> {
        match env_value(self.container, "SCHEDULER_PROFILE")? {
            "round-robin" => Some(
                env_value(self.container, "RR_STATE_CONFIGMAP")
                    .unwrap_or(DEFAULT_RR_CONFIGMAP)
                    .to_string(),
            ),
            "gpu-least-loaded" => Some(
                env_value(self.container, "GPU_STATE_CONFIGMAP")
                    .unwrap_or(GPU_STATE)
                    .to_string(),
            ),
            _ => None,
        }
    }
}

fn controllers(r: &Rendered) -> Vec<Controller<'_>> {
    r.plan
        .objects
        .iter()
        .filter(|o| o.kind_name() == "Deployment")
        .filter_map(|o| {
            let container = &o.object["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<&str> = container["args"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let elected = match args.first() {
                Some(&"scheduler") | Some(&"balance") => true,
                Some(&"scaler") => args.contains(&"--with-balancer"),
                _ => false,
            };
            elected.then_some(Controller {
                deployment: &o.object,
                container,
            })
        })
        .collect()
}

/// The rules of every Role and ClusterRole bound to the ServiceAccount.
fn rules_of<'a>(r: &'a Rendered, namespace: &str, account: &str) -> Vec<&'a Value> {
    let find = |kind: &str, name: &str, ns: Option<&str>| {
        r.plan.objects.iter().find(|o| {
            o.kind_name() == kind
                && o.name() == name
                && ns.is_none_or(|ns| o.object["metadata"]["namespace"] == ns)
        })
    };
    let mut rules = Vec::new();
    for b in &r.plan.objects {
        let binding = &b.object;
        let bound_here = match b.kind_name() {
            "RoleBinding" => binding["metadata"]["namespace"] == namespace,
            "ClusterRoleBinding" => true,
            _ => continue,
        };
        let ours = binding["subjects"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
            })
        });
        if !(bound_here && ours) {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = match role_kind {
            "Role" => find("Role", role_name, Some(namespace)),
            _ => find("ClusterRole", role_name, None),
        }
        .unwrap_or_else(|| panic!("{} binds missing {role_kind} {role_name}", b.name()));
        rules.extend(role.object["rules"].as_array().into_iter().flatten());
    }
    rules
}

fn strings(v: &Value) -> BTreeSet<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether `rules` grant on `group`/`resource` exactly `needs`: every
/// needed verb, no other verb, and each verb that names its object limited
/// to that object by `resourceNames`.
fn grants_exactly(
    rules: &[&Value],
    group: &str,
    resource: &str,
    needs: &BTreeSet<Need>,
) -> Result<(), String> {
    let covering: Vec<&&Value> = rules
        .iter()
        .filter(|r| {
            let groups = strings(&r["apiGroups"]);
            let resources = strings(&r["resources"]);
            (groups.contains(group) || groups.contains("*"))
                && (resources.contains(resource) || resources.contains("*"))
        })
        .collect();
    let wanted: BTreeSet<&str> = needs.iter().map(|n| n.verb.as_str()).collect();
    let granted: BTreeSet<&str> = covering.iter().flat_map(|r| strings(&r["verbs"])).collect();
    if granted != wanted {
        return Err(format!(
            "verbs on {group}/{resource}: granted {granted:?}, the code calls {wanted:?}"
        ));
    }
    for rule in &covering {
        let names = strings(&rule["resourceNames"]);
        for verb in strings(&rule["verbs"]) {
            let named: BTreeSet<&str> = needs
                .iter()
                .filter(|n| n.verb == verb)
                .filter_map(|n| n.name.as_deref())
                .collect();
            let unnamed = needs.iter().any(|n| n.verb == verb && n.name.is_none());
            if unnamed && !names.is_empty() {
                return Err(format!(
                    "{verb} {resource} cannot be limited by resourceNames (the API server authorises it before the object has a name)"
                ));
            }
            if !unnamed && names != named {
                return Err(format!(
                    "{verb} {resource} on {names:?}: only {named:?}, the object the code names"
                ));
            }
        }
    }
    Ok(())
}

fn renders() -> Vec<(String, Rendered)> {
    Mode::ALL
        .into_iter()
        .flat_map(|mode| {
            let plain = RenderOptions {
                mode,
                ..RenderOptions::default()
            };
            let moved = RenderOptions {
                mode,
                namespace: Some("farm".into()),
                all_namespaces: true,
                ..RenderOptions::default()
            };
            [
                (mode.as_str().to_string(), plain),
                (
                    format!("{} --namespace farm --all-namespaces", mode.as_str()),
                    moved,
                ),
            ]
        })
        .map(|(what, opts)| (what, render(&embedded(), &opts).expect("renders")))
        .collect()
}

#[tokio::test]
async fn every_controller_is_granted_exactly_the_lease_and_position_calls_of_the_code() {
    for (what, rendered) in renders() {
        let found = controllers(&rendered);
        assert!(!found.is_empty(), "{what}: no controller Deployment");
        for c in found {
            let what = format!("{what}: {}", c.name());
            assert_eq!(
                env_value(c.container, "LEADER_ELECT"),
                Some("true"),
                "{what}"
            );
            assert!(c.lease_in_own_namespace(), "{what}: LEASE_NAMESPACE");
            let rules = rules_of(&rendered, c.namespace(), c.service_account());
            let leases = lease_needs(&c.lease()).await;
            assert_eq!(
                leases
                    .iter()
                    .map(|n| n.verb.as_str())
                    .collect::<BTreeSet<_>>(),
                BTreeSet::from(["create", "get", "update"]),
                "the Lease store's calls"
            );
            if let Err(e) = grants_exactly(&rules, "coordination.k8s.io", "leases", &leases) {
                panic!("{what}: {e}");
            }
            let positions = match c.position_configmap() {
                Some(name) => position_needs(&name).await,
                None => BTreeSet::new(),
            };
            if let Err(e) = grants_exactly(&rules, "", "configmaps", &positions) {
                panic!("{what}: {e}");
            }
        }
    }
}

#[tokio::test]
async fn the_recorded_needs_catch_a_missing_or_unlimited_grant() {
    let leases = lease_needs("rr-scheduler").await;
    let rule = |verbs: Value, names: Option<Value>| {
        let mut r =
            json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": verbs});
        if let Some(n) = names {
            r["resourceNames"] = n;
        }
        r
    };
    let good = [
        rule(json!(["create"]), None),
        rule(json!(["get", "update"]), Some(json!(["rr-scheduler"]))),
    ];
    let refs: Vec<&Value> = good.iter().collect();
    assert_eq!(
        grants_exactly(&refs, "coordination.k8s.io", "leases", &leases),
        Ok(())
    );
    let bad: [Vec<Value>; 3] = [
        // update missing
        vec![
            rule(json!(["create"]), None),
            rule(json!(["get"]), Some(json!(["rr-scheduler"]))),
        ],
        // get and update on every Lease of the namespace
        vec![rule(json!(["create", "get", "update"]), None)],
        // create limited by name: the API server would refuse it
        vec![rule(
            json!(["create", "get", "update"]),
            Some(json!(["rr-scheduler"])),
        )],
    ];
    for rules in bad {
        let refs: Vec<&Value> = rules.iter().collect();
        let verdict = grants_exactly(&refs, "coordination.k8s.io", "leases", &leases);
        assert!(verdict.is_err(), "{rules:?} passed");
    }
}
