//! The domain model: the parts of Kubernetes nodes and pods that scheduling
//! decisions look at, as plain data. The Kubernetes crate converts API objects
//! into these; tests build them with the fixtures in `fixtures.rs`.

use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the Unix epoch. Policies receive time as a value; they
/// never read a clock.
pub type Millis = i64;

/// Namespace and name: the identity of a pod for the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl PodKey {
    /// Builds a key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a taint does to pods that do not tolerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled here.
    NoSchedule,
    /// The scheduler avoids the node for pods that do not tolerate it, if it can.
    PreferNoSchedule,
    /// Pods that do not tolerate it are not scheduled here and are evicted.
    NoExecute,
}

impl TaintEffect {
    /// Parses the API spelling (`NoSchedule`, `PreferNoSchedule`, `NoExecute`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "NoSchedule" => Some(Self::NoSchedule),
            "PreferNoSchedule" => Some(Self::PreferNoSchedule),
            "NoExecute" => Some(Self::NoExecute),
            _ => None,
        }
    }

    /// Whether the effect keeps new pods off the node (PreferNoSchedule does not).
    pub fn blocks_scheduling(self) -> bool {
        matches!(self, Self::NoSchedule | Self::NoExecute)
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// What the taint does.
    pub effect: TaintEffect,
}

/// How a toleration compares its value with a taint's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TolerationOperator {
    /// Key and value must match.
    Equal,
    /// The key must match (any value).
    Exists,
}

/// A pod toleration, with the API's matching rules in [`Toleration::tolerates`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// Empty with `Exists` tolerates every taint.
    pub key: String,
    /// How the value is compared.
    pub operator: TolerationOperator,
    /// Value compared with `Equal`.
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Kubernetes semantics: effect must match unless empty; key must match
    /// unless empty with `Exists`; `Equal` compares values, `Exists` ignores them.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = self.effect
            && effect != taint.effect
        {
            return false;
        }
        if self.key.is_empty() {
            return self.operator == TolerationOperator::Exists;
        }
        if self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }
}

/// Operator of a node selector requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label value is one of `values`.
    In,
    /// The label value is none of `values`.
    NotIn,
    /// The label exists.
    Exists,
    /// The label does not exist.
    DoesNotExist,
    /// The label value, as an integer, is greater than `values[0]`.
    Gt,
    /// The label value, as an integer, is less than `values[0]`.
    Lt,
}

impl SelectorOperator {
    /// Parses the API spelling; unknown operators are `None` (the term then matches nothing).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "In" => Some(Self::In),
            "NotIn" => Some(Self::NotIn),
            "Exists" => Some(Self::Exists),
            "DoesNotExist" => Some(Self::DoesNotExist),
            "Gt" => Some(Self::Gt),
            "Lt" => Some(Self::Lt),
            _ => None,
        }
    }
}

/// One requirement of a node selector term (`matchExpressions` or `matchFields`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorRequirement {
    /// Label key (or field name for `matchFields`).
    pub key: String,
    /// How the value is tested.
    pub operator: SelectorOperator,
    /// Values the operator compares with.
    pub values: Vec<String>,
}

impl SelectorRequirement {
    /// Evaluates the requirement against a value looked up by key (`None` = absent).
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
            SelectorOperator::Gt | SelectorOperator::Lt => {
                let (Some(v), [bound]) = (value, self.values.as_slice()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == SelectorOperator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A node selector term: all of its requirements must hold. Terms are ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    pub match_expressions: Vec<SelectorRequirement>,
    /// Only `metadata.name` is a valid field, as in the API.
    pub match_fields: Vec<SelectorRequirement>,
}

impl NodeSelectorTerm {
    /// An empty term matches no node (API semantics); otherwise every requirement must hold.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key).map(String::as_str)))
            && self.match_fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then_some(node.name.as_str());
                r.matches(value)
            })
    }
}

/// Resource amounts in the units the scheduler compares: CPU in millicores,
/// memory in bytes, a pod count, and extended resources (e.g. `nvidia.com/gpu`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Pod count.
    pub pods: i64,
    /// Extended resources by name (e.g. `nvidia.com/gpu`).
    pub extended: BTreeMap<String, i64>,
}

impl Resources {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.pods += other.pods;
        for (k, v) in &other.extended {
            *self.extended.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.cpu_millis -= other.cpu_millis;
        self.memory_bytes -= other.memory_bytes;
        self.pods -= other.pods;
        for (k, v) in &other.extended {
            *self.extended.entry(k.clone()).or_default() -= v;
        }
    }

    /// The first resource of `request` that does not fit in `self` (the free
    /// amount), named as kube-scheduler names it ("cpu", "memory", "pods", …).
    pub fn first_shortfall(&self, request: &Resources) -> Option<String> {
        if request.cpu_millis > self.cpu_millis {
            return Some("cpu".into());
        }
        if request.memory_bytes > self.memory_bytes {
            return Some("memory".into());
        }
        if request.pods > self.pods {
            return Some("pods".into());
        }
        request
            .extended
            .iter()
            .find(|(k, v)| **v > self.extended.get(*k).copied().unwrap_or(0))
            .map(|(k, _)| k.clone())
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `status.allocatable`.
    pub allocatable: Resources,
}

/// Membership of a gang (pod group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGroupRef {
    /// Gang name (the `pod-group` annotation or label).
    pub name: String,
    /// `pod-group-min-member` annotation (or the PodGroup's `minMember`).
    pub min_member: Option<u32>,
}

/// A pod as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace and name.
    pub key: PodKey,
    /// `metadata.uid` (Events refer to it).
    pub uid: String,
    /// `metadata.creationTimestamp`.
    pub created_at: Millis,
    /// Effective priority: the `priority` annotation, else `spec.priority`, else 0.
    pub priority: i32,
    /// Why the `priority` annotation was ignored, if it was malformed.
    pub priority_error: Option<String>,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); `None` means no constraint.
    pub required_affinity: Option<Vec<NodeSelectorTerm>>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// Sum of container requests (max with init containers), plus one pod.
    pub requests: Resources,
    /// The gang it belongs to, if any.
    pub group: Option<PodGroupRef>,
    /// `spec.nodeName`: set once bound.
    pub node_name: Option<String>,
    /// `status.nominatedNodeName`.
    pub nominated_node: Option<String>,
    /// `spec.schedulerName` is ours.
    pub ours: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
}

impl Default for PodKey {
    fn default() -> Self {
        Self::new("default", "")
    }
}

impl PodInfo {
    /// Whether the pod still waits for a node.
    pub fn is_pending(&self) -> bool {
        self.node_name.is_none() && !self.terminating
    }
}
