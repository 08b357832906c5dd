//! runc's `events` on a supervised container: `--stats` prints one stats event read
//! from the container's cgroups (runc's JSON: types.Event with types.Stats), else one
//! every `--interval` until the container has stopped.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::join::cgroup_dir;
use crate::error::{Error, Result};

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    data: Stats,
}

/// runc's types.Stats, with what the cgroups here have.
#[derive(Serialize, Default)]
struct Stats {
    cpu: Cpu,
    cpuset: BTreeMap<String, ()>,
    memory: Memory,
    pids: Pids,
    blkio: BTreeMap<String, ()>,
    hugetlb: BTreeMap<String, ()>,
    intel_rdt: BTreeMap<String, ()>,
    network_interfaces: Option<()>,
}

#[derive(Serialize, Default)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
}

#[derive(Serialize, Default)]
struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    percpu: Vec<u64>,
    kernel: u64,
    user: u64,
}

#[derive(Serialize, Default)]
struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    throttled_periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    throttled_time: u64,
}

#[derive(Serialize, Default)]
struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    cache: u64,
    usage: MemoryEntry,
    swap: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    raw: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct MemoryEntry {
    limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Serialize, Default)]
struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    limit: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `events` for container `id` whose process is `pid` (None: stopped); `alive` says
/// whether it still runs, for the streaming form.
pub fn events(
    a: &crate::cli::EventsArgs,
    id: &str,
    pid: Option<i32>,
    alive: &dyn Fn() -> bool,
) -> Result<i32> {
    let pid = pid.ok_or_else(|| Error::Usage("container not running".into()))?;
    let interval = humantime::parse_duration(&a.interval)
        .map_err(|e| Error::Usage(format!("invalid --interval {:?}: {e}", a.interval)))?;
    if interval.is_zero() && !a.stats {
        return Err(Error::Usage(
            "duration interval must be greater than 0".into(),
        ));
    }
    loop {
        let event = Event {
            kind: "stats",
            id,
            data: stats(pid)?,
        };
        let line = serde_json::to_string(&event).map_err(|e| Error::Usage(e.to_string()))?;
        // A reader that went away (`| head`) ends the stream quietly.
        let mut out = std::io::stdout().lock();
        if std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())
            .and_then(|()| std::io::Write::flush(&mut out))
            .is_err()
            || a.stats
        {
            return Ok(0);
        }
        drop(out);
        std::thread::sleep(interval.max(Duration::from_millis(10)));
        if !alive() {
            return Ok(0);
        }
    }
}

fn stats(pid: i32) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some((dir, v1)) = cgroup_dir(pid, "cpuacct")?.or(cgroup_dir(pid, "cpu")?) {
        if v1 {
            s.cpu.usage.total = number(&dir.join("cpuacct.usage"));
            s.cpu.usage.percpu = read(&dir.join("cpuacct.usage_percpu"))
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            // cpuacct.stat is in USER_HZ ticks; runc reports nanoseconds.
            let stat = keyed(&dir.join("cpuacct.stat"));
            let tick = 1_000_000_000 / clock_ticks();
            s.cpu.usage.user = stat.get("user").copied().unwrap_or(0) * tick;
            s.cpu.usage.kernel = stat.get("system").copied().unwrap_or(0) * tick;
        } else {
            let stat = keyed(&dir.join("cpu.stat"));
            s.cpu.usage.total = stat.get("usage_usec").copied().unwrap_or(0) * 1000;
            s.cpu.usage.user = stat.get("user_usec").copied().unwrap_or(0) * 1000;
            s.cpu.usage.kernel = stat.get("system_usec").copied().unwrap_or(0) * 1000;
        }
    }
    if let Some((dir, v1)) = cgroup_dir(pid, "cpu")? {
        let stat = keyed(&dir.join("cpu.stat"));
        s.cpu.throttling.periods = stat.get("nr_periods").copied().unwrap_or(0);
        s.cpu.throttling.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        s.cpu.throttling.throttled_time = if v1 {
            stat.get("throttled_time").copied().unwrap_or(0)
        } else {
            stat.get("throttled_usec").copied().unwrap_or(0) * 1000
        };
    }
    if let Some((dir, v1)) = cgroup_dir(pid, "memory")? {
        let raw = keyed(&dir.join("memory.stat"));
        if v1 {
            s.memory.usage = MemoryEntry {
                limit: number(&dir.join("memory.limit_in_bytes")),
                usage: number(&dir.join("memory.usage_in_bytes")),
                max: number(&dir.join("memory.max_usage_in_bytes")),
                failcnt: number(&dir.join("memory.failcnt")),
            };
            s.memory.swap = MemoryEntry {
                limit: number(&dir.join("memory.memsw.limit_in_bytes")),
                usage: number(&dir.join("memory.memsw.usage_in_bytes")),
                max: number(&dir.join("memory.memsw.max_usage_in_bytes")),
                failcnt: number(&dir.join("memory.memsw.failcnt")),
            };
            s.memory.cache = raw.get("cache").copied().unwrap_or(0);
        } else {
            s.memory.usage = MemoryEntry {
                limit: limit(&dir.join("memory.max")),
                usage: number(&dir.join("memory.current")),
                max: number(&dir.join("memory.peak")),
                failcnt: keyed(&dir.join("memory.events"))
                    .get("max")
                    .copied()
                    .unwrap_or(0),
            };
            s.memory.swap = MemoryEntry {
                limit: limit(&dir.join("memory.swap.max")),
                usage: number(&dir.join("memory.swap.current")),
                ..MemoryEntry::default()
            };
            s.memory.cache = raw.get("file").copied().unwrap_or(0);
        }
        s.memory.raw = raw;
    }
    if let Some((dir, _)) = cgroup_dir(pid, "pids")? {
        s.pids.current = number(&dir.join("pids.current"));
        s.pids.limit = limit(&dir.join("pids.max"));
    }
    Ok(s)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn number(path: &Path) -> u64 {
    read(path).trim().parse().unwrap_or(0)
}

/// A v2 limit: "max" is unlimited, which runc reports as the largest value.
fn limit(path: &Path) -> u64 {
    match read(path).trim() {
        "max" => u64::MAX,
        v => v.parse().unwrap_or(0),
    }
}

/// `key value` lines.
fn keyed(path: &Path) -> BTreeMap<String, u64> {
    read(path)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}
