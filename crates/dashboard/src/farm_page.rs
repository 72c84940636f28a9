//! The farm page: where the sources stand (Kubernetes, Prometheus), nodes
//! with GPU usage and state and the analyzers on each, pending analyzers
//! with the scheduler's reason, and recent placements, balancer moves and
//! preemptions.

use std::fmt::Write as _;

use jiff::Timestamp;
use posture_core::gpu::UsageState;

use crate::farm::{FarmView, GpuView};
use crate::html::{LiveRegion, Nav, PageMeta, esc, page, url_part};
use crate::k8s::{FarmSources, KubeStatus};
use crate::model::{Clock, human_duration};

fn ago(now: Timestamp, t: Timestamp) -> String {
    human_duration(now.as_second() - t.as_second())
}

fn sources(out: &mut String, s: &FarmSources, clock: &Clock, now: Timestamp) {
    let kube = match &s.kube {
        KubeStatus::Off => ("off", "turned off (--no-kubernetes)".to_string()),
        KubeStatus::Unavailable(why) => ("bad", format!("not reachable: {}", esc(why))),
        KubeStatus::Waiting => ("wait", "connecting…".to_string()),
        KubeStatus::Ok { at } => ("ok", format!("read {} ago", ago(now, *at))),
        KubeStatus::Failing { error, since } => (
            "bad",
            format!(
                "unreachable since {} ({} ago): {}; showing the last reading",
                clock.datetime(*since),
                ago(now, *since),
                esc(error)
            ),
        ),
    };
    let prom = match (&s.prometheus, s.gpu_read) {
        (None, _) => ("off", "turned off (--no-gpu)".to_string()),
        (Some(url), true) => ("ok", format!("reading {}", esc(url))),
        (Some(url), false) => ("bad", format!("no GPU reading from {} yet", esc(url))),
    };
    let _ = write!(
        out,
        r#"<ul class="sources" aria-label="Data sources"><li class="src-{}"><strong>Kubernetes</strong> {}</li><li class="src-{}"><strong>Prometheus</strong> {}</li></ul>"#,
        kube.0, kube.1, prom.0, prom.1
    );
}

fn gpu_cell(g: Option<&GpuView>) -> String {
    let Some(g) = g else {
        return r#"<span class="muted">not read</span>"#.to_string();
    };
    let state = g.state.as_str();
    let value = g.usage.map_or("–".to_string(), |u| format!("{u:.1} %"));
    let bar = g.usage.map_or(String::new(), |u| {
        format!(
            r#"<span class="bar" aria-hidden="true"><span class="fill {state}" style="width:{:.0}%"></span></span>"#,
            u.clamp(0.0, 100.0)
        )
    });
    let age = g.age_secs.map_or(String::new(), |a| {
        format!(" sample {} old", human_duration(a))
    });
    let why = match (g.state, &g.error) {
        (UsageState::Ok, _) | (_, None) => String::new(),
        (_, Some(e)) => format!(r#"<span class="muted"> — {}</span>"#, esc(e)),
    };
    format!(
        r#"<span class="gpu-value" data-usage="{}">{value}</span>{bar}<span class="badge gpu-{state}">{state}</span><small class="age">{age}</small>{why}"#,
        g.usage.map_or(String::new(), |u| format!("{u:.1}"))
    )
}

/// Why pods and Events are not shown, when Kubernetes is not read.
fn kube_missing(s: &FarmSources) -> Option<&'static str> {
    match s.kube {
        KubeStatus::Off => Some("Kubernetes is not read (--no-kubernetes)."),
        KubeStatus::Unavailable(_) => Some("Kubernetes is not reachable from the dashboard."),
        KubeStatus::Waiting => Some("Reading Kubernetes…"),
        KubeStatus::Ok { .. } | KubeStatus::Failing { .. } => None,
    }
}

fn nodes(out: &mut String, v: &FarmView) {
    out.push_str(r#"<section aria-labelledby="nodes-h"><h2 id="nodes-h">Nodes</h2>"#);
    if v.nodes.is_empty() {
        out.push_str(r#"<p class="empty-state">No node known: neither Kubernetes nor Prometheus gave one.</p></section>"#);
        return;
    }
    out.push_str(r#"<div class="table-wrap"><table class="nodes"><thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">GPU usage</th><th scope="col">Analyzers and other pods of ours</th></tr></thead><tbody>"#);
    for n in &v.nodes {
        let state = match (n.ready, n.cordoned) {
            (None, _) => r#"<span class="muted">–</span>"#,
            (Some(true), false) => r#"<span class="badge good">Ready</span>"#,
            (Some(true), true) => r#"<span class="badge silent">Cordoned</span>"#,
            (Some(false), _) => r#"<span class="badge bad">Not ready</span>"#,
        };
        let mut pods = String::new();
        for p in &n.pods {
            let label = match &p.camera {
                Some(c) => format!(
                    r#"<a href="/camera/{}">{}</a> <span class="muted">{}</span>"#,
                    url_part(c),
                    esc(c),
                    esc(&p.name)
                ),
                None => esc(&p.name),
            };
            let _ = write!(
                pods,
                r#"<li class="{}">{label} <span class="phase">{}</span></li>"#,
                if p.analyzer { "analyzer" } else { "platform" },
                esc(&p.phase)
            );
        }
        if pods.is_empty() {
            pods.push_str(r#"<li class="muted">none</li>"#);
        }
        let _ = write!(
            out,
            r#"<tr data-node="{name}"><th scope="row">{name}</th><td>{state}</td><td class="gpu">{}</td><td><ul class="pods">{pods}</ul></td></tr>"#,
            gpu_cell(n.gpu.as_ref()),
            name = esc(&n.name),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

fn pending(out: &mut String, v: &FarmView, s: &FarmSources, clock: &Clock, now: Timestamp) {
    if let Some(why) = kube_missing(s) {
        let _ = write!(
            out,
            r#"<section aria-labelledby="pending-h"><h2 id="pending-h">Pending analyzers</h2><p class="muted">{why}</p></section>"#
        );
        return;
    }
    let _ = write!(
        out,
        r#"<section aria-labelledby="pending-h"><h2 id="pending-h">Pending analyzers <span class="count">{}</span></h2>"#,
        v.pending.len()
    );
    if v.pending.is_empty() {
        out.push_str(r#"<p class="muted">Every analyzer has a node.</p></section>"#);
        return;
    }
    out.push_str(r#"<ul class="pending">"#);
    for p in &v.pending {
        let _ = write!(
            out,
            r#"<li><strong>{}/{}</strong> <span class="muted">waiting {}</span><br>{}</li>"#,
            esc(&p.pod.namespace),
            esc(&p.pod.name),
            p.since.map_or("".to_string(), |s| format!(
                "since {} ({})",
                clock.time(s),
                ago(now, s)
            )),
            p.reason.as_deref().map_or(
                "No reason reported yet (is the scheduler running?)".to_string(),
                esc
            ),
        );
    }
    out.push_str("</ul></section>");
}

fn activity(out: &mut String, v: &FarmView, s: &FarmSources, clock: &Clock) {
    out.push_str(r#"<section aria-labelledby="activity-h"><h2 id="activity-h">Recent placements, moves and preemptions</h2>"#);
    if let Some(why) = kube_missing(s) {
        let _ = write!(out, r#"<p class="muted">{why}</p></section>"#);
        return;
    }
    if v.activity.is_empty() {
        out.push_str(r#"<p class="muted">No Scheduled, Rebalanced, Preempted or FailedScheduling event (Kubernetes keeps Events for about an hour).</p></section>"#);
        return;
    }
    let _ = write!(
        out,
        r#"<div class="table-wrap"><table class="activity"><thead><tr><th scope="col">Time ({})</th><th scope="col">Event</th><th scope="col">Object</th><th scope="col">Message</th></tr></thead><tbody>"#,
        esc(&clock.zone_name())
    );
    for a in &v.activity {
        let class = match a.reason.as_str() {
            "Scheduled" => "good",
            "Rebalanced" => "info",
            "Preempted" => "silent",
            _ => "bad",
        };
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><span class="badge {class}">{}</span>{}</td><td>{}</td><td>{}</td></tr>"#,
            a.time.map_or("–".to_string(), |t| clock.datetime(t)),
            esc(&a.reason),
            if a.count > 1 {
                format!(" ×{}", a.count)
            } else {
                String::new()
            },
            esc(&a.object),
            esc(&a.message),
        );
    }
    out.push_str("</tbody></table></div></section>");
}

/// The live region.
pub fn fragment(v: &FarmView, s: &FarmSources, clock: &Clock, now: Timestamp) -> String {
    let mut out = String::new();
    sources(&mut out, s, clock, now);
    nodes(&mut out, v);
    pending(&mut out, v, s, clock, now);
    activity(&mut out, v, s, clock);
    out
}

/// The whole page.
pub fn page_html(
    v: &FarmView,
    s: &FarmSources,
    clock: &Clock,
    now: Timestamp,
    database: &str,
) -> String {
    let body = format!(
        r#"<h1>Farm</h1><div id="live" aria-live="off">{}</div>"#,
        fragment(v, s, clock, now)
    );
    page(
        &PageMeta {
            title: "Farm",
            nav: Nav::Farm,
            live: Some(LiveRegion {
                kind: "farm",
                src: "/fragment/farm".into(),
                camera: None,
                follow: true,
            }),
            clock,
            database,
        },
        &body,
    )
}
