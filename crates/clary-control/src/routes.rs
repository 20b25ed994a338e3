//! The routing table `InvokeEndpoint` reads on every call: per endpoint, its variants with
//! their weights and the healthy instances of each, every instance with a count of requests in
//! flight so the router can pick the least busy. The hosting loop republishes it on changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct InstanceRoute {
    pub id: String,
    /// `host:port` of the instance's model server.
    pub authority: String,
    /// Presented on every request (`x-clary-instance-token`).
    pub token: String,
    pub in_flight: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct VariantRoute {
    pub name: String,
    pub weight: f64,
    pub instances: Vec<Arc<InstanceRoute>>,
}

#[derive(Debug, Clone)]
pub struct EndpointRoute {
    pub name: String,
    pub variants: Vec<VariantRoute>,
}

impl EndpointRoute {
    /// The variant named by `TargetVariant`, or one drawn by weight among those with instances.
    pub fn pick_variant(&self, target: Option<&str>, draw: f64) -> Option<&VariantRoute> {
        if let Some(t) = target {
            return self.variants.iter().find(|v| v.name == t);
        }
        let live: Vec<&VariantRoute> = self
            .variants
            .iter()
            .filter(|v| !v.instances.is_empty())
            .collect();
        let total: f64 = live.iter().map(|v| v.weight.max(0.0)).sum();
        if total <= 0.0 {
            return live.first().copied();
        }
        let mut point = draw * total;
        for v in &live {
            point -= v.weight.max(0.0);
            if point < 0.0 {
                return Some(v);
            }
        }
        live.last().copied()
    }
}

impl VariantRoute {
    /// The instance with the fewest requests in flight.
    pub fn least_busy(&self) -> Option<&Arc<InstanceRoute>> {
        self.instances
            .iter()
            .min_by_key(|i| i.in_flight.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
pub struct Routes {
    table: RwLock<HashMap<String, Arc<EndpointRoute>>>,
    /// Instances by id, so a republished table keeps their in-flight counts.
    instances: RwLock<HashMap<String, Arc<InstanceRoute>>>,
    seed: AtomicU64,
}

impl Routes {
    pub fn get(&self, endpoint: &str) -> Option<Arc<EndpointRoute>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned()
    }

    /// The shared handle of an instance (created on first use).
    pub fn instance(&self, id: &str, authority: &str, token: &str) -> Arc<InstanceRoute> {
        let mut m = self.instances.write().unwrap_or_else(|p| p.into_inner());
        match m.get(id) {
            // A relaunched instance listens on a new port: its counts start afresh.
            Some(known) if known.authority == authority && known.token == token => known.clone(),
            _ => {
                let fresh = Arc::new(InstanceRoute {
                    id: id.to_string(),
                    authority: authority.to_string(),
                    token: token.to_string(),
                    in_flight: AtomicUsize::new(0),
                });
                m.insert(id.to_string(), fresh.clone());
                fresh
            }
        }
    }

    /// Every routed endpoint.
    pub fn all(&self) -> Vec<Arc<EndpointRoute>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn publish(&self, route: EndpointRoute) {
        self.table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(route.name.clone(), Arc::new(route));
    }

    pub fn remove(&self, endpoint: &str) {
        self.table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(endpoint);
    }

    pub fn forget_instance(&self, id: &str) {
        self.instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// A number in [0, 1) for weighted variant choice (xorshift; no cryptographic need).
    pub fn draw(&self) -> f64 {
        let mut x = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            ^ 0x2545_F491_4F6C_DD1D;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(routes: &Routes, name: &str, weight: f64, n: usize) -> VariantRoute {
        VariantRoute {
            name: name.into(),
            weight,
            instances: (0..n)
                .map(|i| {
                    routes.instance(
                        &format!("{name}-{i}"),
                        &format!("127.0.0.1:{}", 9000 + i),
                        "t",
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn weights_split_traffic_and_target_variant_wins() {
        let routes = Routes::default();
        let ep = EndpointRoute {
            name: "e".into(),
            variants: vec![variant(&routes, "a", 3.0, 1), variant(&routes, "b", 1.0, 1)],
        };
        let mut a = 0;
        for _ in 0..4000 {
            if ep.pick_variant(None, routes.draw()).unwrap().name == "a" {
                a += 1;
            }
        }
        assert!(
            (2700..3300).contains(&a),
            "{a} of 4000 went to the weight-3 variant"
        );
        assert_eq!(ep.pick_variant(Some("b"), 0.0).unwrap().name, "b");
        assert!(ep.pick_variant(Some("c"), 0.0).is_none());
    }

    #[test]
    fn least_busy_instance_and_counts_survive_republishing() {
        let routes = Routes::default();
        let v = variant(&routes, "a", 1.0, 2);
        v.instances[0].in_flight.store(3, Ordering::Relaxed);
        assert_eq!(v.least_busy().unwrap().id, "a-1");
        let again = routes.instance("a-0", "127.0.0.1:9000", "t");
        assert_eq!(again.in_flight.load(Ordering::Relaxed), 3);
    }
}
