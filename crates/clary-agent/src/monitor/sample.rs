//! One reading of the host's counters from `/proc` (and `nvidia-smi` where GPUs are), and the
//! pure arithmetic that turns two readings into SageMaker Debugger's system events and into
//! the utilisation metrics SageMaker publishes for a training host.

use serde::Serialize;

/// Jiffies of one CPU line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub idle: u64,
    pub iowait: u64,
}

/// Whole-disk I/O counters summed over the host's disks (`/proc/diskstats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// Bytes received and sent (`/proc/net/dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx: u64,
    pub tx: u64,
}

/// One GPU's utilisation and memory utilisation, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuReading {
    pub utilization: f64,
    pub memory: f64,
}

/// Everything read at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Epoch seconds.
    pub at: f64,
    /// `cpu0`, `cpu1`, … in order.
    pub cpus: Vec<CpuTimes>,
    /// Used memory in percent.
    pub memory_used_percent: f64,
    pub disk: DiskCounters,
    /// Traffic on the loopback interface, where Clary's hosts talk to each other.
    pub algorithm_net: NetCounters,
    /// Traffic on every other interface.
    pub platform_net: NetCounters,
    /// Used space of the filesystem holding the job, in percent.
    pub disk_used_percent: f64,
    pub gpus: Vec<GpuReading>,
}

/// The per-core lines (`cpuN ...`) of `/proc/stat`.
pub fn parse_stat(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            CpuTimes {
                total: (0..8).map(at).sum(),
                idle: at(3),
                iowait: at(4),
            }
        })
        .collect()
}

/// Used memory in percent from `/proc/meminfo` (`MemTotal` less `MemAvailable`).
pub fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable").or_else(|| field("MemFree"))?;
    (total > 0.0).then(|| 100.0 * (total - available) / total)
}

/// I/O counters of the disks named in `disks` (whole disks, not their partitions) from
/// `/proc/diskstats`; sectors are 512 bytes there whatever the device's own size.
pub fn parse_diskstats(text: &str, disks: &[String]) -> DiskCounters {
    let mut out = DiskCounters::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !disks.iter().any(|d| d == f[2]) {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out.reads += n(3);
        out.read_bytes += n(5) * 512;
        out.writes += n(7);
        out.written_bytes += n(9) * 512;
    }
    out
}

/// Loopback and other traffic from `/proc/net/dev`.
pub fn parse_net_dev(text: &str) -> (NetCounters, NetCounters) {
    let mut lo = NetCounters::default();
    let mut other = NetCounters::default();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() < 9 {
            continue;
        }
        let target = if name.trim() == "lo" {
            &mut lo
        } else {
            &mut other
        };
        target.rx += f[0];
        target.tx += f[8];
    }
    (lo, other)
}

/// `nvidia-smi --query-gpu=utilization.gpu,utilization.memory --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuReading> {
    text.lines()
        .filter_map(|l| {
            let (u, m) = l.split_once(',')?;
            Some(GpuReading {
                utilization: u.trim().parse().ok()?,
                memory: m.trim().parse().ok()?,
            })
        })
        .collect()
}

/// One line of Debugger's system metrics file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemEvent {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub name: String,
    pub dimension: &'static str,
    pub value: f64,
    pub node_id: String,
    pub timestamp: f64,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round2((100.0 * part as f64 / whole as f64).clamp(0.0, 100.0))
    }
}

/// The change from `before` to `now` as Debugger's events of `host`, and as the metrics
/// SageMaker publishes for a host (`CPUUtilization` summed over cores, `MemoryUtilization`,
/// `DiskUtilization`, `GPUUtilization`, `GPUMemoryUtilization`).
pub fn events(
    before: &Reading,
    now: &Reading,
    host: &str,
) -> (Vec<SystemEvent>, Vec<(String, f64)>) {
    let at = now.at;
    let secs = (now.at - before.at).max(1e-3);
    let event = |kind, name: String, dimension, value| SystemEvent {
        kind,
        name,
        dimension,
        value,
        node_id: host.to_string(),
        timestamp: at,
    };
    let mut out = Vec::new();
    let mut cpu_sum = 0.0;
    for (i, (b, n)) in before.cpus.iter().zip(&now.cpus).enumerate() {
        let total = n.total.saturating_sub(b.total);
        let idle = n.idle.saturating_sub(b.idle);
        let iowait = n.iowait.saturating_sub(b.iowait);
        let busy = percent(total.saturating_sub(idle + iowait), total);
        cpu_sum += busy;
        out.push(event("cpu", format!("cpu{i}"), "CPUUtilization", busy));
        out.push(event(
            "cpu",
            format!("cpu{i}"),
            "I/OWaitPercentage",
            percent(iowait, total),
        ));
    }
    let memory = round2(now.memory_used_percent);
    out.push(event("memory", "MemoryUsedPercent".into(), "", memory));
    let rate = |a: u64, b: u64| round2(a.saturating_sub(b) as f64 / secs);
    let (d, p) = (&now.disk, &before.disk);
    out.push(event(
        "i/o",
        "IOPS".into(),
        "",
        rate(d.reads + d.writes, p.reads + p.writes),
    ));
    out.push(event(
        "i/o",
        "ReadThroughputInBytesPerSecond".into(),
        "",
        rate(d.read_bytes, p.read_bytes),
    ));
    out.push(event(
        "i/o",
        "WriteThroughputInBytesPerSecond".into(),
        "",
        rate(d.written_bytes, p.written_bytes),
    ));
    for (dimension, n, b) in [
        ("Algorithm", now.algorithm_net, before.algorithm_net),
        ("Platform", now.platform_net, before.platform_net),
    ] {
        out.push(event(
            "network",
            "ReceiveBytesPerSecond".into(),
            dimension,
            rate(n.rx, b.rx),
        ));
        out.push(event(
            "network",
            "TransmitBytesPerSecond".into(),
            dimension,
            rate(n.tx, b.tx),
        ));
    }
    let mut metrics = vec![
        ("CPUUtilization".to_string(), round2(cpu_sum)),
        ("MemoryUtilization".to_string(), memory),
        ("DiskUtilization".to_string(), round2(now.disk_used_percent)),
    ];
    for (i, g) in now.gpus.iter().enumerate() {
        out.push(event(
            "gpu",
            format!("gpu{i}"),
            "GPUUtilization",
            g.utilization,
        ));
        out.push(event(
            "gpu",
            format!("gpu{i}"),
            "GPUMemoryUtilization",
            g.memory,
        ));
    }
    if !now.gpus.is_empty() {
        metrics.push((
            "GPUUtilization".into(),
            now.gpus.iter().map(|g| g.utilization).sum(),
        ));
        metrics.push((
            "GPUMemoryUtilization".into(),
            now.gpus.iter().map(|g| g.memory).sum(),
        ));
    }
    (out, metrics)
}

/// Debugger's file of the minute `at` falls in, relative to `system/incremental/`:
/// `<YYYYMMDDHH>/<minute epoch seconds>.<host>.json`.
pub fn file_key(at: f64, host: &str) -> String {
    let minute = (at as i64).div_euclid(60) * 60;
    let hour = chrono::DateTime::from_timestamp(minute, 0)
        .map(|t| t.format("%Y%m%d%H").to_string())
        .unwrap_or_default();
    format!("{hour}/{minute}.{host}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 10 80 0 0 0 0 0 0\n\
cpu0 50 0 10 30 10 0 0 0 0 0\n\
cpu1 0 0 0 100 0 0 0 0 0 0\n\
intr 12345\n";

    #[test]
    fn stat_gives_each_core_and_skips_the_total() {
        let cpus = parse_stat(STAT);
        assert_eq!(cpus.len(), 2);
        assert_eq!(
            cpus[0],
            CpuTimes {
                total: 100,
                idle: 30,
                iowait: 10
            }
        );
    }

    #[test]
    fn meminfo_uses_available_memory() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(text), Some(75.0));
        assert_eq!(
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 500 kB\n"),
            Some(50.0)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn diskstats_count_whole_disks_only() {
        let text = "   8       0 sda 100 0 2000 0 50 0 1000 0 0 0 0\n\
   8       1 sda1 100 0 2000 0 50 0 1000 0 0 0 0\n\
   7       0 loop0 9 0 9 0 9 0 9 0 0 0 0\n";
        let d = parse_diskstats(text, &["sda".to_string()]);
        assert_eq!(
            d,
            DiskCounters {
                reads: 100,
                writes: 50,
                read_bytes: 2000 * 512,
                written_bytes: 1000 * 512
            }
        );
    }

    #[test]
    fn net_dev_splits_loopback_from_the_rest() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n\
    lo: 1000 10 0 0 0 0 0 0 2000 10 0 0 0 0 0 0\n\
  eth0: 300 3 0 0 0 0 0 0 400 4 0 0 0 0 0 0\n\
  eth1: 5 3 0 0 0 0 0 0 6 4 0 0 0 0 0 0\n";
        let (lo, other) = parse_net_dev(text);
        assert_eq!(lo, NetCounters { rx: 1000, tx: 2000 });
        assert_eq!(other, NetCounters { rx: 305, tx: 406 });
    }

    #[test]
    fn nvidia_smi_lines() {
        assert_eq!(
            parse_nvidia_smi("87, 40\n3, 1\n"),
            vec![
                GpuReading {
                    utilization: 87.0,
                    memory: 40.0
                },
                GpuReading {
                    utilization: 3.0,
                    memory: 1.0
                }
            ]
        );
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
    }

    #[test]
    fn two_readings_make_debuggers_events() {
        let before = Reading {
            at: 100.0,
            cpus: vec![
                CpuTimes {
                    total: 100,
                    idle: 50,
                    iowait: 0
                };
                2
            ],
            disk: DiskCounters {
                reads: 10,
                writes: 0,
                read_bytes: 0,
                written_bytes: 0,
            },
            ..Default::default()
        };
        let now = Reading {
            at: 100.5,
            cpus: vec![
                CpuTimes {
                    total: 200,
                    idle: 100,
                    iowait: 10,
                },
                CpuTimes {
                    total: 200,
                    idle: 150,
                    iowait: 0,
                },
            ],
            memory_used_percent: 42.123,
            disk: DiskCounters {
                reads: 20,
                writes: 5,
                read_bytes: 1024,
                written_bytes: 0,
            },
            algorithm_net: NetCounters { rx: 500, tx: 50 },
            disk_used_percent: 61.0,
            ..Default::default()
        };
        let (events, metrics) = events(&before, &now, "algo-1");
        let find = |name: &str, dim: &str| {
            events
                .iter()
                .find(|e| e.name == name && e.dimension == dim)
                .map(|e| e.value)
                .unwrap()
        };
        assert_eq!(find("cpu0", "CPUUtilization"), 40.0);
        assert_eq!(find("cpu0", "I/OWaitPercentage"), 10.0);
        assert_eq!(find("cpu1", "CPUUtilization"), 0.0);
        assert_eq!(find("MemoryUsedPercent", ""), 42.12);
        assert_eq!(find("IOPS", ""), 30.0);
        assert_eq!(find("ReadThroughputInBytesPerSecond", ""), 2048.0);
        assert_eq!(find("ReceiveBytesPerSecond", "Algorithm"), 1000.0);
        assert!(
            events
                .iter()
                .all(|e| e.node_id == "algo-1" && e.timestamp == 100.5)
        );
        let line = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"Type": "cpu", "Name": "cpu0", "Dimension": "CPUUtilization",
                               "Value": 40.0, "NodeId": "algo-1", "Timestamp": 100.5})
        );
        assert_eq!(metrics[0], ("CPUUtilization".into(), 40.0));
        assert_eq!(metrics[2], ("DiskUtilization".into(), 61.0));
    }

    #[test]
    fn files_are_per_minute_under_the_hour() {
        assert_eq!(
            file_key(1_591_748_109.23, "algo-1"),
            "2020061000/1591748100.algo-1.json"
        );
        assert_eq!(
            file_key(1_591_748_160.0, "algo-2"),
            "2020061000/1591748160.algo-2.json"
        );
    }
}
