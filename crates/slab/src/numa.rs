//! The CPU-to-node map: how many memory nodes there are and which node a CPU belongs to.
//!
//! [`NodeMap::Host`] reads sysfs once per process: every `/sys/devices/system/node/nodeN`
//! directory is a node, and its `cpulist` names its CPUs. Node numbers may be sparse (a machine
//! can have `node0` and `node2` only), so nodes are renumbered densely in increasing order of
//! `N`: the result is always an index into a per-node array of length [`node_count`]. Where
//! sysfs is absent or unreadable the host counts as one node holding every CPU.
//! [`NodeMap::Simulated`] puts CPU `c` on node `c % nodes`.

use std::path::Path;
use std::sync::OnceLock;

use object_alloc::NodeMap;

/// The host's topology, read once.
#[derive(Debug)]
struct HostTopology {
    /// Dense node index of each CPU; CPUs beyond the table are on node 0.
    node_of_cpu: Vec<usize>,
    nodes: usize,
}

fn host() -> &'static HostTopology {
    static HOST: OnceLock<HostTopology> = OnceLock::new();
    HOST.get_or_init(|| read_host_topology(Path::new("/sys/devices/system/node")))
}

/// Reads the node directories under `root` (normally `/sys/devices/system/node`).
fn read_host_topology(root: &Path) -> HostTopology {
    let mut found: Vec<(usize, Vec<usize>)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let cpus = std::fs::read_to_string(entry.path().join("cpulist"))
                .ok()
                .and_then(|text| parse_cpu_list(&text))
                .unwrap_or_default();
            found.push((number, cpus));
        }
    }
    found.sort_by_key(|(number, _)| *number);
    if found.is_empty() {
        return HostTopology {
            node_of_cpu: Vec::new(),
            nodes: 1,
        };
    }
    let mut node_of_cpu = Vec::new();
    for (dense, (_, cpus)) in found.iter().enumerate() {
        for &cpu in cpus {
            if cpu >= node_of_cpu.len() {
                node_of_cpu.resize(cpu + 1, 0);
            }
            node_of_cpu[cpu] = dense;
        }
    }
    HostTopology {
        node_of_cpu,
        nodes: found.len(),
    }
}

/// Parses a kernel CPU list such as `"0-3,8,10-11\n"`; `None` if it is malformed. An empty
/// list (a memory-only node) is `Some(vec![])`.
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first.trim().parse().ok()?;
                let last: usize = last.trim().parse().ok()?;
                if last < first || last - first > 1 << 16 {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// Number of memory nodes of `map`: at least 1.
pub fn node_count(map: NodeMap) -> usize {
    match map {
        NodeMap::Host => host().nodes,
        NodeMap::Simulated { nodes } => nodes.max(1),
    }
}

/// The node (an index below [`node_count`]) that `cpu` belongs to under `map`.
pub fn node_of_cpu(map: NodeMap, cpu: usize) -> usize {
    match map {
        NodeMap::Host => host().node_of_cpu.get(cpu).copied().unwrap_or(0),
        NodeMap::Simulated { nodes } => cpu % nodes.max(1),
    }
}

/// Possible CPUs on this machine (one more than the highest CPU number in
/// `/sys/devices/system/cpu/possible`), for sizing per-CPU arrays; falls back to the
/// available parallelism where sysfs says nothing.
pub fn possible_cpus() -> usize {
    static POSSIBLE: OnceLock<usize> = OnceLock::new();
    *POSSIBLE.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|text| parse_cpu_list(&text))
            .and_then(|cpus| cpus.into_iter().max())
            .map(|highest| highest + 1)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_singles_and_reject_garbage() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("\n"), Some(vec![]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
        assert_eq!(parse_cpu_list("1,,2"), Some(vec![1, 2]));
    }

    #[test]
    fn sparse_sysfs_nodes_are_renumbered_densely() {
        let root = std::env::temp_dir().join(format!("slab-numa-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (node, cpus) in [("node0", "0-1\n"), ("node2", "2,3\n"), ("possible", "")] {
            std::fs::create_dir_all(root.join(node)).unwrap();
            std::fs::write(root.join(node).join("cpulist"), cpus).unwrap();
        }
        let topology = read_host_topology(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(topology.nodes, 2);
        assert_eq!(topology.node_of_cpu, vec![0, 0, 1, 1]);
    }

    #[test]
    fn missing_sysfs_means_one_node() {
        let topology = read_host_topology(Path::new("/nonexistent/slab/node"));
        assert_eq!(topology.nodes, 1);
        assert!(topology.node_of_cpu.is_empty());
    }

    #[test]
    fn host_and_simulated_maps_stay_in_range() {
        let host_nodes = node_count(NodeMap::Host);
        assert!(host_nodes >= 1);
        for cpu in 0..possible_cpus() + 4 {
            assert!(node_of_cpu(NodeMap::Host, cpu) < host_nodes);
        }
        let simulated = NodeMap::Simulated { nodes: 3 };
        assert_eq!(node_count(simulated), 3);
        assert_eq!(
            (0..7)
                .map(|c| node_of_cpu(simulated, c))
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 2, 0]
        );
        assert!(possible_cpus() >= 1);
    }
}
