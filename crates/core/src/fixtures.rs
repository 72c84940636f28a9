//! Test builders for nodes and pods (`mk_node`, `mk_pod`), shared by the
//! policy tests in this crate.

use crate::model::*;

/// A Ready, schedulable node with room for 110 pods, 4 CPUs and 8 GiB.
pub fn mk_node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
        ready: true,
        unschedulable: false,
        taints: vec![],
        allocatable: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pods: 110,
            extended: Default::default(),
        },
    }
}

/// A pending pod of ours in `default`, priority 0, requesting one pod slot.
pub fn mk_pod(name: &str) -> PodInfo {
    PodInfo {
        key: PodKey::new("default", name),
        uid: format!("uid-{name}"),
        ours: true,
        requests: Resources {
            pods: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A cluster of [`mk_node`]s with the given names.
pub fn mk_cluster(names: &[&str]) -> crate::cluster::Cluster {
    let mut c = crate::cluster::Cluster::new();
    for n in names {
        c.upsert_node(mk_node(n));
    }
    c
}
