//! An agent started on a cluster node (by `srun`) with nothing but the server's URL: it works
//! out which host it is from Slurm's variables, fetches that host's spec, and runs it with
//! node-local directories, the nodes' own addresses, and objects over HTTP.

use crate::reporter::Reporter;
use clary_exec::protocol::{AgentSpec, HostSpec, ProcessingHostSpec};
use clary_exec::slurm::{SlurmExecutor, node_job_dir};
use std::path::{Path, PathBuf};

/// Who this agent is on the node it runs on.
pub struct NodeIdentity {
    /// `algo-<SLURM_NODEID + 1>`: host `algo-i` is the job's `i-1`th node.
    pub host: String,
    /// Every node's address, in node order (the order of `SLURM_JOB_NODELIST`).
    pub addresses: Vec<String>,
}

impl NodeIdentity {
    pub fn from_slurm() -> Result<Self, String> {
        let var = |k: &str| {
            std::env::var(k).map_err(|_| format!("{k} is not set: run the agent under srun"))
        };
        let node_id: usize = var("SLURM_NODEID")?
            .parse()
            .map_err(|_| "SLURM_NODEID is not a number".to_string())?;
        let nodes = SlurmExecutor::hostnames(&var("SLURM_JOB_NODELIST")?)?;
        let addresses = nodes
            .iter()
            .map(|n| SlurmExecutor::node_address(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeIdentity {
            host: format!("algo-{}", node_id + 1),
            addresses,
        })
    }
}

/// Makes the server's spec fit this node: its own directories under `node_dir`, the nodes'
/// addresses, objects over the S3 API.
pub fn localize(mut spec: HostSpec, node: &NodeIdentity, node_dir: &Path) -> HostSpec {
    let dir = node_job_dir(node_dir, &spec.job_name, &spec.current_host);
    spec.base_dir = dir.join("opt_ml");
    spec.python_shims = dir.join("python");
    if let Some(addresses) = node_addresses(&spec.hosts, node) {
        spec.addresses = addresses;
    }
    spec.object_access = over_the_network(&spec.object_access);
    spec
}

/// [`localize`] for a processing host.
pub fn localize_processing(
    mut spec: ProcessingHostSpec,
    node: &NodeIdentity,
    node_dir: &Path,
) -> ProcessingHostSpec {
    let dir = node_job_dir(node_dir, &spec.job_name, &spec.current_host);
    spec.base_dir = dir.join("opt_ml");
    spec.python_shims = dir.join("python");
    if let Some(addresses) = node_addresses(&spec.hosts, node) {
        spec.addresses = addresses;
    }
    spec.object_access = over_the_network(&spec.object_access);
    spec
}

/// How a node reaches objects: presigned URLs to an external store as the server said, the
/// server's S3 API otherwise (a node does not share the server's disk).
fn over_the_network(object_access: &str) -> String {
    if object_access == "presigned" {
        object_access.into()
    } else {
        "http".into()
    }
}

/// Host `algo-i` is node `i-1`.
fn node_addresses(hosts: &[String], node: &NodeIdentity) -> Option<Vec<String>> {
    hosts
        .iter()
        .map(|h| {
            let i: usize = h.strip_prefix("algo-")?.parse().ok()?;
            node.addresses.get(i.checked_sub(1)?).cloned()
        })
        .collect()
}

/// Runs this node's host of `job`; `write_shims` puts the Python helpers in a directory.
pub async fn run(
    control_url: &str,
    kind: clary_exec::protocol::JobKind,
    job: &str,
    region: &str,
    node_dir: PathBuf,
    write_shims: impl Fn(&Path) -> Result<(), String>,
) -> i32 {
    let (access, secret) = match (
        std::env::var("CLARY_AGENT_ACCESS_KEY"),
        std::env::var("CLARY_AGENT_SECRET_KEY"),
    ) {
        (Ok(a), Ok(s)) => (a, s),
        _ => {
            eprintln!("clary agent: CLARY_AGENT_ACCESS_KEY and CLARY_AGENT_SECRET_KEY must be set");
            return 2;
        }
    };
    let node = match NodeIdentity::from_slurm() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("clary agent: {e}");
            return 2;
        }
    };
    let reporter = Reporter::new(control_url, &access, &secret, region, job).for_kind(kind);
    let spec = match reporter.host_spec(&node.host).await {
        Ok(AgentSpec::Training(s)) => AgentSpec::Training(Box::new(localize(*s, &node, &node_dir))),
        Ok(AgentSpec::Processing(s)) => {
            AgentSpec::Processing(Box::new(localize_processing(*s, &node, &node_dir)))
        }
        Ok(AgentSpec::Transform(_)) => {
            // CreateTransformJob refuses a server whose hosts do not share its disk.
            eprintln!(
                "clary agent: {} of {job} is a transform host, which runs only where it shares the server's disk",
                node.host
            );
            return 1;
        }
        Err(e) => {
            eprintln!(
                "clary agent: fetching the spec of {} of {job}: {e}",
                node.host
            );
            return 1;
        }
    };
    let shims = match &spec {
        AgentSpec::Training(s) => s.python_shims.clone(),
        AgentSpec::Processing(s) => s.python_shims.clone(),
        AgentSpec::Transform(s) => s.model.python_shims.clone(),
    };
    if let Err(e) = write_shims(&shims) {
        eprintln!(
            "clary agent: writing the Python helpers to {}: {e}",
            shims.display()
        );
        return 1;
    }
    crate::run_agent(spec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_its_own_directories_addresses_and_http_objects() {
        let spec = crate::test_spec(serde_json::json!({"current_host": "algo-2"}));
        let node = NodeIdentity {
            host: "algo-2".into(),
            addresses: vec!["10.0.0.1".into(), "10.0.0.2".into()],
        };
        let s = localize(spec, &node, Path::new("/scratch/clary"));
        assert_eq!(s.base_dir, Path::new("/scratch/clary/j/algo-2/opt_ml"));
        assert_eq!(s.python_shims, Path::new("/scratch/clary/j/algo-2/python"));
        assert_eq!(s.address_of("algo-2"), "10.0.0.2");
        assert_eq!(s.object_access, "http");
    }
}
