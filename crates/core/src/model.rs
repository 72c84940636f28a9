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
    /// A resource the pod does not request never falls short, even on an
    /// overcommitted node (kube-scheduler's NodeResourcesFit).
    pub fn first_shortfall(&self, request: &Resources) -> Option<String> {
        if request.cpu_millis > 0 && request.cpu_millis > self.cpu_millis {
            return Some("cpu".into());
        }
        if request.memory_bytes > 0 && request.memory_bytes > self.memory_bytes {
            return Some("memory".into());
        }
        if request.pods > 0 && request.pods > self.pods {
            return Some("pods".into());
        }
        request
            .extended
            .iter()
            .find(|(k, v)| **v > 0 && **v > self.extended.get(*k).copied().unwrap_or(0))
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
    /// Effective priority: `spec.priority` (from the PriorityClass), else 0;
    /// the `priority` annotation instead only in namespaces the operator
    /// allows ([`PriorityAnnotationPolicy`]).
    pub priority: i32,
    /// Why the `priority` annotation was not used (malformed, or not allowed
    /// in the pod's namespace), for a Warning Event.
    pub priority_warning: Option<PriorityWarning>,
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

/// One requirement of a label selector, in the API's string syntax
/// (`key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`,
/// `!key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(String, Vec<String>),
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    DoesNotExist(String),
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Self::Equals(k, v) => get(k) == Some(v.as_str()),
            Self::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Self::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector in the API's string syntax, evaluated in-process where
/// the API server cannot filter for us (a watch that must also see pods
/// outside the selection). Requirements are ANDed; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Every requirement must hold.
    pub requirements: Vec<LabelRequirement>,
}

/// A label selector that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct LabelSelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

impl LabelSelector {
    /// Parses `app=posture,tier in (a,b),!legacy`. Commas inside
    /// parentheses belong to the value set.
    pub fn parse(s: &str) -> Result<Self, LabelSelectorError> {
        let err = |reason: String| LabelSelectorError {
            selector: s.to_string(),
            reason,
        };
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            if depth < 0 {
                return Err(err("unbalanced ')'".into()));
            }
        }
        if depth != 0 {
            return Err(err("unbalanced '('".into()));
        }
        parts.push(&s[start..]);
        let mut requirements = Vec::new();
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            requirements.push(Self::requirement(part).map_err(err)?);
        }
        Ok(Self { requirements })
    }

    fn requirement(part: &str) -> Result<LabelRequirement, String> {
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            if k.is_empty() || k.contains(char::is_whitespace) {
                Err(format!("bad key in {part:?}"))
            } else {
                Ok(k.to_string())
            }
        };
        if let Some(rest) = part.strip_prefix('!') {
            return Ok(LabelRequirement::DoesNotExist(key(rest)?));
        }
        if let Some((k, v)) = part.split_once("!=") {
            return Ok(LabelRequirement::NotEquals(key(k)?, v.trim().to_string()));
        }
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(LabelRequirement::Equals(key(k)?, v.trim().to_string()));
        }
        if let Some(open) = part.find('(') {
            let close = part
                .rfind(')')
                .filter(|c| *c > open && part[c + 1..].trim().is_empty());
            let Some(close) = close else {
                return Err(format!("expected a closing ')' in {part:?}"));
            };
            let values: Vec<String> = part[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let mut head = part[..open].split_whitespace();
            let (k, op) = (head.next(), head.next());
            if head.next().is_some() {
                return Err(format!("unexpected words in {part:?}"));
            }
            let k = key(k.unwrap_or_default())?;
            return match op {
                Some("in") => Ok(LabelRequirement::In(k, values)),
                Some("notin") => Ok(LabelRequirement::NotIn(k, values)),
                _ => Err(format!("expected 'in' or 'notin' in {part:?}")),
            };
        }
        Ok(LabelRequirement::Exists(key(part)?))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Which pods are *ours* (to schedule, and the only ones that may be
/// preemption victims): our scheduler name **and** our namespace (unless all
/// namespaces) **and** our label selector. Every other pod bound to a node is
/// capacity only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// `spec.schedulerName` we answer to.
    pub scheduler_name: String,
    /// Our namespace; `None` = every namespace.
    pub namespace: Option<String>,
    /// Our label selector (empty = every pod with our scheduler name).
    pub selector: LabelSelector,
}

impl Ownership {
    /// Whether a pod with this scheduler name, namespace and labels is ours.
    pub fn owns(
        &self,
        scheduler_name: Option<&str>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        scheduler_name == Some(self.scheduler_name.as_str())
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.selector.matches(labels)
    }
}

#[cfg(test)]
mod selector_tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_of_the_api_syntax() {
        let s = LabelSelector::parse(
            "app=posture, tier in (edge, gpu),!legacy,zone,env!=dev,team notin (x)",
        )
        .unwrap();
        assert_eq!(s.requirements.len(), 6);
        let ok = labels(&[("app", "posture"), ("tier", "gpu"), ("zone", "a")]);
        assert!(s.matches(&ok));
        for bad in [
            labels(&[("app", "other"), ("tier", "gpu"), ("zone", "a")]),
            labels(&[("app", "posture"), ("tier", "cpu"), ("zone", "a")]),
            labels(&[
                ("app", "posture"),
                ("tier", "gpu"),
                ("zone", "a"),
                ("legacy", ""),
            ]),
            labels(&[("app", "posture"), ("tier", "gpu")]),
            labels(&[
                ("app", "posture"),
                ("tier", "gpu"),
                ("zone", "a"),
                ("env", "dev"),
            ]),
            labels(&[
                ("app", "posture"),
                ("tier", "gpu"),
                ("zone", "a"),
                ("team", "x"),
            ]),
        ] {
            assert!(!s.matches(&bad), "{bad:?}");
        }
        assert!(
            LabelSelector::parse("app==posture")
                .unwrap()
                .matches(&labels(&[("app", "posture")]))
        );
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn malformed_selectors_are_refused_with_a_reason() {
        for bad in ["tier in (a", "tier (a)", "a b", "tier in a)", "=x"] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(e.selector, bad);
            assert!(e.to_string().starts_with("invalid label selector"), "{e}");
        }
    }

    #[test]
    fn ownership_needs_name_namespace_and_selector() {
        let own = Ownership {
            scheduler_name: "posture-priority".into(),
            namespace: Some("default".into()),
            selector: LabelSelector::parse("app=posture").unwrap(),
        };
        let l = labels(&[("app", "posture")]);
        assert!(own.owns(Some("posture-priority"), "default", &l));
        assert!(!own.owns(Some("posture-priority"), "other", &l));
        assert!(!own.owns(Some("posture-priority"), "default", &labels(&[])));
        assert!(!own.owns(Some("default-scheduler"), "default", &l));
        assert!(!own.owns(None, "default", &l));
        let all = Ownership {
            namespace: None,
            ..own
        };
        assert!(all.owns(Some("posture-priority"), "other", &l));
    }
}

/// The `priority` annotation is a privilege: anyone who can create pods
/// could otherwise claim `2147483647` and preempt everyone. It is honoured
/// only in the namespaces an operator lists; everywhere else `spec.priority`
/// (set by the API server from a PriorityClass, which RBAC and quotas
/// govern) decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorityAnnotationPolicy {
    /// Namespaces where the annotation counts; `*` = every namespace;
    /// empty = nowhere (the default).
    pub namespaces: Vec<String>,
}

impl PriorityAnnotationPolicy {
    /// Whether the annotation counts in `namespace`.
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }
}

/// Why a pod's `priority` annotation was not used: the reason of a Warning
/// Event on the pod and its note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorityWarning {
    /// Event reason: `InvalidPriority` or `PriorityAnnotationIgnored`.
    pub reason: &'static str,
    /// Event note.
    pub message: String,
}

/// A pod's effective priority from its `spec.priority`, its `priority`
/// annotation (if any) and the policy, with a warning when the annotation
/// was set but not used.
pub fn effective_priority(
    spec_priority: Option<i32>,
    annotation: Option<&str>,
    namespace: &str,
    policy: &PriorityAnnotationPolicy,
) -> (i32, Option<PriorityWarning>) {
    let spec = spec_priority.unwrap_or(0);
    let Some(raw) = annotation else {
        return (spec, None);
    };
    if !policy.allows(namespace) {
        return (
            spec,
            Some(PriorityWarning {
                reason: "PriorityAnnotationIgnored",
                message: format!(
                    "annotation priority={raw:?} is not honoured in namespace {namespace:?} (not in --priority-annotation-namespaces); using spec.priority {spec} (set it with a PriorityClass)"
                ),
            }),
        );
    }
    match raw.trim().parse::<i32>() {
        Ok(p) => (p, None),
        Err(err) => (
            spec,
            Some(PriorityWarning {
                reason: "InvalidPriority",
                message: format!(
                    "annotation priority={raw:?} is not a 32-bit integer ({err}); using spec.priority {spec}"
                ),
            }),
        ),
    }
}

#[cfg(test)]
mod priority_policy_tests {
    use super::*;

    #[test]
    fn the_annotation_counts_only_where_allowed() {
        let none = PriorityAnnotationPolicy::default();
        let some = PriorityAnnotationPolicy {
            namespaces: vec!["trusted".into()],
        };
        let all = PriorityAnnotationPolicy {
            namespaces: vec!["*".into()],
        };
        assert_eq!(
            effective_priority(Some(7), None, "default", &none),
            (7, None)
        );
        assert_eq!(effective_priority(None, None, "default", &none), (0, None));
        let (p, w) = effective_priority(Some(7), Some("2147483647"), "default", &none);
        assert_eq!(p, 7, "spec.priority, not the claimed one");
        assert_eq!(w.unwrap().reason, "PriorityAnnotationIgnored");
        assert_eq!(
            effective_priority(Some(7), Some("100"), "trusted", &some),
            (100, None)
        );
        assert_eq!(
            effective_priority(Some(7), Some("100"), "other", &all),
            (100, None)
        );
        assert!(
            effective_priority(None, Some("1"), "other", &some)
                .1
                .is_some()
        );
        let (p, w) = effective_priority(Some(7), Some("high"), "trusted", &some);
        assert_eq!(p, 7);
        let w = w.unwrap();
        assert_eq!(w.reason, "InvalidPriority");
        assert!(w.message.contains("\"high\""), "{}", w.message);
    }
}
