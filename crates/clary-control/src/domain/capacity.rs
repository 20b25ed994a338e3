//! How much of this machine a training instance takes, so the queue can hold jobs back.
//!
//! An instance type's vCPUs and memory follow the EC2 size ladder (`large` = 2 vCPUs,
//! `xlarge` = 4, `Nxlarge` = 4N); memory per vCPU depends on the family. A single job's demand
//! is capped at the machine's size, so any job can run when it has the machine to itself.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_gib: f64,
    /// Operator overrides: instance type → (vCPUs, GiB).
    pub overrides: BTreeMap<String, (u32, f64)>,
}

impl Capacity {
    pub fn of_this_machine() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        Capacity {
            cpus,
            memory_gib: machine_memory_gib().unwrap_or(4.0),
            overrides: BTreeMap::new(),
        }
    }

    /// (vCPUs, GiB) one instance of `instance_type` takes here, or `None` if the type is unknown.
    pub fn demand(&self, instance_type: &str) -> Option<(u32, f64)> {
        let (cpus, mem) = match self.overrides.get(instance_type) {
            Some(d) => *d,
            None => instance_shape(instance_type)?,
        };
        Some((cpus.min(self.cpus), mem.min(self.memory_gib)))
    }
}

/// vCPUs and GiB of an `ml.<family>.<size>` instance type.
pub fn instance_shape(instance_type: &str) -> Option<(u32, f64)> {
    if instance_type == "local" || instance_type == "local_gpu" {
        return Some((1, 1.0));
    }
    let rest = instance_type.strip_prefix("ml.")?;
    let (family, size) = rest.split_once('.')?;
    let cpus = match size {
        "medium" => 1,
        "large" => 2,
        "xlarge" => 4,
        s => {
            let n: u32 = s.strip_suffix("xlarge")?.parse().ok()?;
            4 * n
        }
    };
    let gib_per_cpu = match family.chars().next()? {
        'c' => 2.0,
        'r' | 'x' => 8.0,
        't' => 2.0,
        _ => 4.0,
    };
    if !family
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    Some((cpus, cpus as f64 * gib_per_cpu))
}

fn machine_memory_gib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_size_ladder_and_cap_at_the_machine() {
        assert_eq!(instance_shape("ml.c5.xlarge"), Some((4, 8.0)));
        assert_eq!(instance_shape("ml.m5.2xlarge"), Some((8, 32.0)));
        assert_eq!(instance_shape("ml.p3.16xlarge"), Some((64, 256.0)));
        assert_eq!(instance_shape("c5.xlarge"), None);
        let cap = Capacity {
            cpus: 2,
            memory_gib: 16.0,
            overrides: BTreeMap::new(),
        };
        assert_eq!(cap.demand("ml.m5.24xlarge"), Some((2, 16.0)));
    }
}
