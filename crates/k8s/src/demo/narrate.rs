//! The demo's narration: turns the scheduler's Events about the demo's pods
//! into sentences, and tells when a step has shown what it is meant to.
//! Pure: Events come in, lines and verdicts go out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::events::v1::Event;

use super::script::Tier;

/// What one Event says, reduced to what the narration needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// UID of the pod it is about (`regarding.uid`).
    pub uid: String,
    /// `Scheduled`, `Preempted`, `FailedScheduling`, …
    pub reason: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// The Event's note.
    pub note: String,
}

/// The part of an `events.k8s.io/v1` Event the narration reads, when it
/// regards a pod.
pub fn observed_from(event: &Event) -> Option<Observed> {
    let regarding = event.regarding.as_ref()?;
    if regarding.kind.as_deref() != Some("Pod") {
        return None;
    }
    Some(Observed {
        uid: regarding.uid.clone()?,
        reason: event.reason.clone()?,
        type_: event.type_.clone().unwrap_or_default(),
        note: event.note.clone().unwrap_or_default(),
    })
}

/// A step of the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Low-priority analyzers fill every usable node.
    FillLow,
    /// A high-priority analyzer arrives: one low one is preempted.
    High,
    /// A gang that cannot be placed whole: none of it is bound.
    GangWaits,
    /// The high one leaves: the gang is placed whole, preempting lows.
    GangPlaced,
}

impl Step {
    /// The steps in order.
    pub const ALL: [Step; 4] = [Step::FillLow, Step::High, Step::GangWaits, Step::GangPlaced];

    /// The headline printed before the step, for `nodes` usable nodes.
    pub fn headline(self, nodes: usize) -> String {
        match self {
            Self::FillLow => format!(
                "Step 1/4: {nodes} low-priority analyzers (priority {}) fill the {nodes} usable nodes",
                Tier::Low.value()
            ),
            Self::High => format!(
                "Step 2/4: one high-priority analyzer (priority {}) arrives; no node is free",
                Tier::High.value()
            ),
            Self::GangWaits => format!(
                "Step 3/4: a gang of {nodes} (priority {}) needs every node, but one runs a higher-priority pod",
                Tier::Gang.value()
            ),
            Self::GangPlaced => {
                "Step 4/4: the high-priority analyzer leaves; the gang can be placed whole"
                    .to_owned()
            }
        }
    }
}

/// A demo pod the narration knows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Role {
    name: String,
    tier: Tier,
}

/// What the demo has seen so far.
#[derive(Clone, Debug, Default)]
pub struct DemoState {
    roles: BTreeMap<String, Role>,
    gone: BTreeSet<String>,
    scheduled: BTreeMap<String, String>,
    preempted: BTreeSet<String>,
    failed: BTreeSet<String>,
    said: BTreeSet<(String, String, String)>,
}

impl DemoState {
    /// Remembers a pod the demo created (`uid` from the create answer).
    pub fn track(&mut self, uid: &str, name: &str, tier: Tier) {
        self.roles.insert(
            uid.to_owned(),
            Role {
                name: name.to_owned(),
                tier,
            },
        );
    }

    /// Marks a pod the demo deleted itself (it no longer counts).
    pub fn forget(&mut self, name: &str) {
        self.gone.insert(name.to_owned());
        self.scheduled.remove(name);
    }

    /// Takes in one Event; returns the sentence to print, or `None` for
    /// an Event about another pod or one already told.
    pub fn observe(&mut self, o: &Observed) -> Option<String> {
        let role = self.roles.get(&o.uid)?.clone();
        if !self
            .said
            .insert((role.name.clone(), o.reason.clone(), o.note.clone()))
        {
            return None;
        }
        let who = format!(
            "{} ({} priority {})",
            role.name,
            role.tier.as_str(),
            role.tier.value()
        );
        Some(match o.reason.as_str() {
            "Scheduled" => {
                let node = assigned_node(&o.note).unwrap_or("?").to_owned();
                self.scheduled.insert(role.name.clone(), node.clone());
                self.failed.remove(&role.name);
                format!("  scheduled  {who} -> node {node}")
            }
            "Preempted" => {
                self.preempted.insert(role.name.clone());
                self.scheduled.remove(&role.name);
                format!("  preempted  {who}: {}", o.note)
            }
            "FailedScheduling" => {
                self.failed.insert(role.name.clone());
                format!("  waiting    {who}: {}", o.note)
            }
            other => format!("  {:<10} {who}: {}", other.to_lowercase(), o.note),
        })
    }

    fn of_tier(&self, tier: Tier) -> impl Iterator<Item = &String> {
        self.roles
            .values()
            .filter(move |r| r.tier == tier && !self.gone.contains(&r.name))
            .map(|r| &r.name)
    }

    /// Whether `step` has shown what it is meant to.
    pub fn done(&self, step: Step) -> bool {
        let scheduled = |tier| {
            let mut names = self.of_tier(tier).peekable();
            names.peek().is_some() && self.of_tier(tier).all(|n| self.scheduled.contains_key(n))
        };
        match step {
            Step::FillLow => scheduled(Tier::Low),
            Step::High => scheduled(Tier::High),
            Step::GangWaits => {
                self.of_tier(Tier::Gang).any(|n| self.failed.contains(n))
                    && !self
                        .of_tier(Tier::Gang)
                        .any(|n| self.scheduled.contains_key(n))
            }
            Step::GangPlaced => scheduled(Tier::Gang),
        }
    }

    /// What a step still waits for, for the timeout message.
    pub fn missing(&self, step: Step) -> Vec<String> {
        let tier = match step {
            Step::FillLow => Tier::Low,
            Step::High => Tier::High,
            Step::GangWaits | Step::GangPlaced => Tier::Gang,
        };
        self.of_tier(tier)
            .filter(|n| match step {
                Step::GangWaits => !self.failed.contains(*n),
                _ => !self.scheduled.contains_key(*n),
            })
            .cloned()
            .collect()
    }

    /// One line per demo pod: where it ended up.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut rows: Vec<&Role> = self.roles.values().collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        for r in rows {
            let state = if self.gone.contains(&r.name) {
                "deleted by the demo".to_owned()
            } else if let Some(node) = self.scheduled.get(&r.name) {
                format!("on {node}")
            } else if self.preempted.contains(&r.name) {
                "preempted".to_owned()
            } else {
                "pending".to_owned()
            };
            out.push_str(&format!(
                "  {:<28} priority {:>3}  {state}\n",
                r.name,
                r.tier.value()
            ));
        }
        out
    }
}

/// The node in a `Scheduled` note (`Successfully assigned ns/pod to node`).
fn assigned_node(note: &str) -> Option<&str> {
    note.rsplit_once(" to ").map(|(_, n)| n.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uid: &str, reason: &str, note: &str) -> Observed {
        Observed {
            uid: uid.into(),
            reason: reason.into(),
            type_: "Normal".into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_real_event_is_read() {
        let e: Event = serde_json::from_value(serde_json::json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "posture-demo-high.1", "namespace": "default"},
            "eventTime": "2026-11-23T14:00:00.000000Z",
            "reportingController": "posture-priority", "reportingInstance": "p-0",
            "action": "Binding", "reason": "Scheduled", "type": "Normal",
            "note": "Successfully assigned default/posture-demo-high to worker-1",
            "regarding": {"kind": "Pod", "namespace": "default", "name": "posture-demo-high", "uid": "u-h"}
        }))
        .unwrap();
        let o = observed_from(&e).unwrap();
        assert_eq!((o.uid.as_str(), o.reason.as_str()), ("u-h", "Scheduled"));
        assert_eq!(assigned_node(&o.note), Some("worker-1"));
        let mut node_event = e.clone();
        node_event.regarding.as_mut().unwrap().kind = Some("Node".into());
        assert!(observed_from(&node_event).is_none());
    }

    #[test]
    fn the_story_is_told_once_and_steps_complete() {
        let mut s = DemoState::default();
        s.track("u1", "posture-demo-low-1", Tier::Low);
        s.track("u2", "posture-demo-low-2", Tier::Low);
        assert!(!s.done(Step::FillLow));
        assert_eq!(
            s.observe(&ev(
                "u1",
                "Scheduled",
                "Successfully assigned default/posture-demo-low-1 to w1"
            ))
            .as_deref(),
            Some("  scheduled  posture-demo-low-1 (low priority 10) -> node w1")
        );
        assert!(
            s.observe(&ev(
                "u1",
                "Scheduled",
                "Successfully assigned default/posture-demo-low-1 to w1"
            ))
            .is_none(),
            "told once"
        );
        assert!(
            s.observe(&ev("other", "Scheduled", "x to y")).is_none(),
            "not ours"
        );
        assert_eq!(
            s.missing(Step::FillLow),
            vec!["posture-demo-low-2".to_owned()]
        );
        s.observe(&ev(
            "u2",
            "Scheduled",
            "Successfully assigned default/posture-demo-low-2 to w2",
        ));
        assert!(s.done(Step::FillLow));

        s.track("uh", "posture-demo-high", Tier::High);
        let line = s
            .observe(&ev(
                "u2",
                "Preempted",
                "Preempted by pod default/posture-demo-high on node w2",
            ))
            .unwrap();
        assert!(
            line.starts_with("  preempted  posture-demo-low-2"),
            "{line}"
        );
        assert!(!s.done(Step::High));
        s.observe(&ev(
            "uh",
            "Scheduled",
            "Successfully assigned default/posture-demo-high to w2",
        ));
        assert!(s.done(Step::High));

        s.track("g1", "posture-demo-gang-1", Tier::Gang);
        s.track("g2", "posture-demo-gang-2", Tier::Gang);
        assert!(!s.done(Step::GangWaits));
        let line = s
            .observe(&Observed { type_: "Warning".into(), ..ev("g1", "FailedScheduling", "pod group default/posture-demo-gang: no complete placement (1/2 members placed, none bound)") })
            .unwrap();
        assert!(
            line.starts_with("  waiting    posture-demo-gang-1 (gang priority 50): pod group"),
            "{line}"
        );
        assert!(s.done(Step::GangWaits));
        s.forget("posture-demo-high");
        s.observe(&ev(
            "g1",
            "Scheduled",
            "Successfully assigned default/posture-demo-gang-1 to w1",
        ));
        assert!(!s.done(Step::GangPlaced));
        assert!(!s.done(Step::GangWaits), "a member is bound");
        s.observe(&ev(
            "g2",
            "Scheduled",
            "Successfully assigned default/posture-demo-gang-2 to w2",
        ));
        assert!(s.done(Step::GangPlaced));
        let summary = s.summary();
        assert!(
            summary.contains("posture-demo-high            priority 100  deleted by the demo"),
            "{summary}"
        );
        assert!(
            summary.contains("posture-demo-low-2           priority  10  preempted"),
            "{summary}"
        );
    }
}
