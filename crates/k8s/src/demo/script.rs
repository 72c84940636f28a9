//! The preemption demo's scenario, as objects: its PriorityClasses, the pods
//! of each step, and which nodes can take them. Pure: builds objects, sends
//! nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Node, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Label on every object the demo creates (value [`DEMO_VALUE`]); cleanup
/// deletes by it, so a run interrupted earlier is cleaned up too.
pub const DEMO_LABEL: &str = "posture-farm.io/demo";
/// Value of [`DEMO_LABEL`].
pub const DEMO_VALUE: &str = "preemption";
/// Gang annotation the priority scheduler reads.
pub const POD_GROUP_ANNOTATION: &str = "pod-group";
/// Gang size annotation the priority scheduler reads.
pub const MIN_MEMBER_ANNOTATION: &str = "pod-group-min-member";
/// Prefix of the demo's pod names.
pub const POD_PREFIX: &str = "posture-demo";

/// A priority level of the demo, carried by a PriorityClass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Priority 10: the analyzers that fill the cluster.
    Low,
    /// Priority 50: the gang.
    Gang,
    /// Priority 100: the one that preempts.
    High,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Low, Tier::Gang, Tier::High];

    /// The PriorityClass name.
    pub fn class(self) -> &'static str {
        match self {
            Self::Low => "posture-farm-demo-low",
            Self::Gang => "posture-farm-demo-gang",
            Self::High => "posture-farm-demo-high",
        }
    }

    /// The priority value.
    pub fn value(self) -> i32 {
        match self {
            Self::Low => 10,
            Self::Gang => 50,
            Self::High => 100,
        }
    }

    /// Short name for narration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Gang => "gang",
            Self::High => "high",
        }
    }
}

/// Where and how the demo runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoConfig {
    /// Namespace of the demo pods (one the priority scheduler watches).
    pub namespace: String,
    /// `spec.schedulerName` of the priority scheduler.
    pub scheduler_name: String,
    /// Container image of the demo pods (it only has to start).
    pub image: String,
    /// Nodes the demo pods can use (one pod per node); at least 2.
    pub nodes: usize,
    /// How long one step may take before the demo gives up.
    pub step_timeout: std::time::Duration,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (DEMO_LABEL.to_owned(), DEMO_VALUE.to_owned()),
        ("app".to_owned(), "posture".to_owned()),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "posture-farm".to_owned(),
        ),
    ])
}

/// The demo's PriorityClasses (cluster-scoped, labelled for cleanup).
pub fn priority_classes() -> Vec<PriorityClass> {
    Tier::ALL
        .iter()
        .map(|t| PriorityClass {
            metadata: ObjectMeta {
                name: Some(t.class().to_owned()),
                labels: Some(labels()),
                ..Default::default()
            },
            value: t.value(),
            global_default: Some(false),
            description: Some(format!(
                "posture-farm demo preemption: {} priority ({})",
                t.as_str(),
                t.value()
            )),
            preemption_policy: Some("PreemptLowerPriority".to_owned()),
        })
        .collect()
}

/// A demo pod: `name`, of `tier`, in a gang of `gang` when given.
pub fn pod(cfg: &DemoConfig, name: &str, tier: Tier, gang: Option<usize>) -> Pod {
    let annotations = gang.map(|n| {
        BTreeMap::from([
            (
                POD_GROUP_ANNOTATION.to_owned(),
                format!("{POD_PREFIX}-gang"),
            ),
            (MIN_MEMBER_ANNOTATION.to_owned(), n.to_string()),
        ])
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(labels()),
            annotations,
            ..Default::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some(cfg.scheduler_name.clone()),
            priority_class_name: Some(tier.class().to_owned()),
            // Victims go at once: the demo is about decisions, not shutdown.
            termination_grace_period_seconds: Some(0),
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            // Fits the `restricted` Pod Security level of the farm's namespace.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65535),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "demo".to_owned(),
                image: Some(cfg.image.clone()),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_owned()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_owned(), Quantity("10m".to_owned())),
                        ("memory".to_owned(), Quantity("16Mi".to_owned())),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// The pods' names of a tier: `posture-demo-low-1`…, `posture-demo-high`.
pub fn names(tier: Tier, count: usize) -> Vec<String> {
    match tier {
        Tier::High => vec![format!("{POD_PREFIX}-high")],
        _ => (1..=count)
            .map(|i| format!("{POD_PREFIX}-{}-{i}", tier.as_str()))
            .collect(),
    }
}

/// Nodes a demo pod can run on: Ready, not cordoned, without a NoSchedule
/// or NoExecute taint (demo pods tolerate none), sorted by name.
pub fn usable_nodes(nodes: &[Node]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| {
            let spec = n.spec.as_ref();
            let cordoned = spec.and_then(|s| s.unschedulable).unwrap_or(false);
            let tainted = spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| {
                t.iter()
                    .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            });
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready && !cordoned && !tainted
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// The usable nodes split by whether the demo may have them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// Usable nodes running no pod of the scheduler: the demo's.
    pub free: Vec<String>,
    /// Usable nodes held by another pod of the scheduler, with that pod.
    /// Its priority is at least the farm's lowest class (1000), above every
    /// demo pod, so the demo never preempts it.
    pub held: Vec<(String, String)>,
    /// Other pods of the scheduler still pending: they would take (or
    /// preempt) what the demo frees.
    pub competing: Vec<String>,
}

/// Splits `usable` nodes by the live pods of `scheduler` in the namespace
/// (`pods`), leaving out the demo's own (a run interrupted earlier).
pub fn plan_nodes(usable: &[String], pods: &[Pod], scheduler: &str) -> NodePlan {
    let mut plan = NodePlan::default();
    let ours = |p: &&Pod| {
        let spec = p.spec.as_ref();
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        spec.and_then(|s| s.scheduler_name.as_deref()) == Some(scheduler)
            && !matches!(phase, Some("Succeeded" | "Failed"))
            && p.metadata.deletion_timestamp.is_none()
            && !p
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(DEMO_LABEL))
    };
    let mut held: BTreeMap<&str, String> = BTreeMap::new();
    for p in pods.iter().filter(ours) {
        let name = p.metadata.name.clone().unwrap_or_default();
        match p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => {
                held.entry(node).or_insert(name);
            }
            None => plan.competing.push(name),
        }
    }
    for node in usable {
        match held.get(node.as_str()) {
            Some(pod) => plan.held.push((node.clone(), pod.clone())),
            None => plan.free.push(node.clone()),
        }
    }
    plan.competing.sort();
    plan
}
