//! What running jobs of every kind hold of this machine: vCPUs and memory (so the queues of
//! all kinds share one capacity) and loopback address blocks (so no two running jobs' hosts
//! share addresses). Each kind's queue keeps its own entries in step.

use crate::domain::capacity::Capacity;
use crate::domain::job::Kind;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// (vCPUs, GiB).
pub type Demand = (u32, f64);

/// A running job as its kind's queue reports it: name, demand and address block.
pub type Running = (String, Demand, Option<(u8, u8)>);

#[derive(Debug, Clone, Copy)]
struct Claim {
    demand: Demand,
    block: Option<(u8, u8)>,
}

pub struct Ledger {
    capacity: Capacity,
    claims: Mutex<HashMap<(Kind, String), Claim>>,
}

/// Capacity in use when a job did not fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Full {
    pub used_cpus: u32,
    pub total_cpus: u32,
}

impl Ledger {
    pub fn new(capacity: Capacity) -> Self {
        Ledger {
            capacity,
            claims: Mutex::new(HashMap::new()),
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, String), Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (vCPUs, GiB) `count` instances of `instance_type` take here, capped at the machine.
    pub fn demand(&self, instance_type: &str, count: u32) -> Demand {
        let cap = &self.capacity;
        let n = count.max(1);
        let (c, m) = cap.demand(instance_type).unwrap_or((1, 1.0));
        (
            (c * n).min(cap.cpus),
            (m * f64::from(n)).min(cap.memory_gib),
        )
    }

    /// Replaces `kind`'s claims by what its running jobs hold now.
    pub fn sync(&self, kind: Kind, running: Vec<Running>) {
        let mut claims = self.claims();
        claims.retain(|(k, _), _| *k != kind);
        for (name, demand, block) in running {
            claims.insert((kind, name), Claim { demand, block });
        }
    }

    /// Takes `demand` for a job about to launch when it fits beside every kind's running jobs
    /// (or always, when the executor queues work itself).
    pub fn try_claim(
        &self,
        kind: Kind,
        name: &str,
        demand: Demand,
        unbounded: bool,
    ) -> Result<(), Full> {
        let mut claims = self.claims();
        let key = (kind, name.to_string());
        let (cpus, mem) = claims
            .iter()
            .filter(|(k, _)| **k != key)
            .fold((0u32, 0f64), |(c, m), (_, cl)| {
                (c + cl.demand.0, m + cl.demand.1)
            });
        if !unbounded
            && (cpus + demand.0 > self.capacity.cpus
                || mem + demand.1 > self.capacity.memory_gib + 1e-9)
        {
            return Err(Full {
                used_cpus: cpus,
                total_cpus: self.capacity.cpus,
            });
        }
        let block = claims.get(&key).and_then(|c| c.block);
        claims.insert(key, Claim { demand, block });
        Ok(())
    }

    /// Picks the address block of a job's hosts: its own stable block unless another running
    /// job holds it.
    pub fn claim_block(&self, kind: Kind, name: &str) -> (u8, u8) {
        let mut claims = self.claims();
        let key = (kind, name.to_string());
        let taken: HashSet<(u8, u8)> = claims
            .iter()
            .filter(|(k, _)| **k != key)
            .filter_map(|(_, c)| c.block)
            .collect();
        let block = crate::domain::training::address_block(name, &taken);
        claims
            .entry(key)
            .or_insert(Claim {
                demand: (0, 0.0),
                block: None,
            })
            .block = Some(block);
        block
    }

    /// (vCPUs, GiB) running jobs of every kind hold, and the machine's total.
    pub fn in_use(&self) -> (Demand, Demand) {
        let used = self.claims().values().fold((0u32, 0f64), |(c, m), cl| {
            (c + cl.demand.0, m + cl.demand.1)
        });
        (used, (self.capacity.cpus, self.capacity.memory_gib))
    }

    /// The job no longer runs.
    pub fn release(&self, kind: Kind, name: &str) {
        self.claims().remove(&(kind, name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ledger(cpus: u32) -> Ledger {
        Ledger::new(Capacity {
            cpus,
            memory_gib: 64.0,
            overrides: BTreeMap::new(),
        })
    }

    #[test]
    fn kinds_share_one_capacity() {
        let l = ledger(8);
        assert!(l.try_claim(Kind::TrainingJob, "a", (4, 8.0), false).is_ok());
        assert!(l.try_claim(Kind::TrainingJob, "b", (4, 8.0), false).is_ok());
        assert_eq!(
            l.try_claim(Kind::TrainingJob, "c", (2, 4.0), false),
            Err(Full {
                used_cpus: 8,
                total_cpus: 8
            })
        );
        l.release(Kind::TrainingJob, "a");
        assert!(l.try_claim(Kind::TrainingJob, "c", (2, 4.0), false).is_ok());
        // A cluster scheduler queues for itself.
        assert!(l.try_claim(Kind::TrainingJob, "d", (8, 8.0), true).is_ok());
    }

    #[test]
    fn sync_replaces_only_its_own_kind() {
        let l = ledger(8);
        l.sync(Kind::TrainingJob, vec![("a".into(), (6, 1.0), None)]);
        assert!(
            l.try_claim(Kind::TrainingJob, "b", (4, 1.0), false)
                .is_err()
        );
        l.sync(Kind::TrainingJob, Vec::new());
        assert!(l.try_claim(Kind::TrainingJob, "b", (4, 1.0), false).is_ok());
    }

    #[test]
    fn running_jobs_never_share_an_address_block() {
        let l = ledger(8);
        let a = l.claim_block(Kind::TrainingJob, "same");
        assert_eq!(a, l.claim_block(Kind::TrainingJob, "same"));
        l.sync(Kind::TrainingJob, vec![("x".into(), (1, 1.0), Some(a))]);
        assert_ne!(l.claim_block(Kind::TrainingJob, "same"), a);
    }
}
