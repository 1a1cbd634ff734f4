//! A station's load: CPU and memory from `sysinfo`, calls in flight from the station.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What a station reports about how busy it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Load {
    /// CPU use of the whole machine, percent (0–100).
    pub cpu: f32,
    /// Memory in use on the machine, percent (0–100).
    pub memory: f32,
    /// Object calls running or queued on the station.
    pub in_flight: u64,
}

impl Load {
    /// A single score for placement: lower is less loaded. Calls in flight dominate, CPU breaks ties.
    pub fn score(&self) -> f64 {
        self.in_flight as f64 * 10.0 + self.cpu as f64 + self.memory as f64 * 0.1
    }

    /// The compact gossip form `cpu,memory,in_flight`.
    pub fn encode(&self) -> String {
        format!("{:.1},{:.1},{}", self.cpu, self.memory, self.in_flight)
    }

    /// Parses the gossip form.
    pub fn decode(text: &str) -> Option<Load> {
        let mut parts = text.split(',');
        Some(Load {
            cpu: parts.next()?.parse().ok()?,
            memory: parts.next()?.parse().ok()?,
            in_flight: parts.next()?.parse().ok()?,
        })
    }
}

/// Samples machine load; the in-flight counter is shared with whoever counts calls.
pub struct LoadSampler {
    system: sysinfo::System,
    in_flight: Arc<AtomicU64>,
}

impl LoadSampler {
    /// A sampler reading `in_flight` for the call count.
    pub fn new(in_flight: Arc<AtomicU64>) -> LoadSampler {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        LoadSampler { system, in_flight }
    }

    /// Refreshes and returns the current load (CPU use is measured since the previous sample).
    pub fn sample(&mut self) -> Load {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let total = self.system.total_memory().max(1);
        Load {
            cpu: self.system.global_cpu_usage(),
            memory: (self.system.used_memory() as f64 / total as f64 * 100.0) as f32,
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_round_trips_through_its_gossip_form() {
        let load = Load {
            cpu: 12.5,
            memory: 40.0,
            in_flight: 3,
        };
        assert_eq!(Load::decode(&load.encode()), Some(load));
        assert_eq!(Load::decode("1,2"), None);
    }

    #[test]
    fn calls_in_flight_weigh_more_than_cpu() {
        let busy = Load {
            cpu: 5.0,
            memory: 10.0,
            in_flight: 8,
        };
        let idle = Load {
            cpu: 60.0,
            memory: 10.0,
            in_flight: 0,
        };
        assert!(idle.score() < busy.score());
    }
}
