//! What `probectl status` shows, and the one line systemd's STATUS= gets.

use std::time::Instant;

use serde_json::json;

use super::state::DaemonState;

impl DaemonState {
    pub fn sample_rate(&mut self) {
        let received = self.engine.reader().received;
        let r = &mut self.rates;
        let secs = r.at.elapsed().as_secs_f64().max(1e-3);
        r.per_second = received.saturating_sub(r.received) as f64 / secs;
        r.at = Instant::now();
        r.received = received;
        for (kind, &n) in &self.engine.events.by_kind {
            let entry = r.by_kind.entry(kind).or_default();
            *entry = (n, n.saturating_sub(entry.0) as f64 / secs);
        }
    }

    /// For systemd's STATUS= and the log.
    pub fn one_line_status(&self) -> String {
        let s = &self.engine.sensors;
        let attached = s.status.iter().filter(|x| x.attached).count();
        format!(
            "{attached}/{} sensors attached; {} watched processes; {:.0} events/s; {} subscribers",
            s.status.len(),
            self.engine.procs.live().count(),
            self.rates.per_second,
            self.subscribers()
        )
    }

    pub fn status(&self) -> serde_json::Value {
        let e = &self.engine;
        let losses = self.losses();
        let socket = self
            .socket_stats
            .lock()
            .map(|x| serde_json::to_value(&*x).unwrap_or_default())
            .unwrap_or_default();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "host": *self.host,
            "uptime_s": self.started.elapsed().as_secs(),
            "sensors": e.sensors.choices,
            "unattached": e.sensors.unattached().collect::<Vec<_>>(),
            "attach": e.sensors.status,
            "env_objects": e.sensors.env_objects_status(),
            "events": {
                "received": e.reader().received,
                "handled": e.events.handled,
                "per_second": self.rates.per_second,
                "by_kind": e.events.by_kind.iter().map(|(kind, n)| json!({
                    "kind": kind,
                    "received": n,
                    "per_second": self.rates.by_kind.get(kind).map_or(0.0, |r| r.1),
                    "dropped_ring_full": losses.get(&format!("kernel:ring_full_{kind}")),
                })).collect::<Vec<_>>(),
            },
            "drops": losses.all(),
            "filtered": losses.nonzero_filtered(),
            "policy": {
                "name": e.policy().name,
                "version": self.policy.version,
                "loaded_at": self.policy.loaded_at,
                "files": self.policy.files,
            },
            "trees": {
                "watched_processes": e.procs.live().count(),
                "known_processes": e.procs.len(),
                "timeline": e.correlator.timeline_usage(),
                "tree_grace_s": self.config.memory.tree_grace.as_secs(),
            },
            "memory": {"rss_bytes": rss_bytes(), "dns_names": e.correlator.names.len()},
            "sinks": self.sink_statuses(),
            "sequence": {"next": self.ids.peek_seq(), "state_errors": self.ids.state_errors},
            "subscribers": self.subscribers(),
            "socket": socket,
            "enforcement": e.enforcement().unwrap_or(
                crate::records::Enforcement { enforcing: e.enforce, block_rules: Vec::new(), dns: None, not_judged: None },
            ),
        })
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
