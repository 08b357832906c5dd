//! runc's `update` on a supervised container: the new limits (`--resources FILE|-` as
//! JSON, then the flags on top) written to the container's live cgroups, v1 or v2.
//! Zero means "unchanged", as with runc; what cannot be changed is refused by name.

use std::fs;
use std::io::Read;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use crate::cli::UpdateArgs;
use crate::error::{Error, Result};

/// The limits `update` asks for, with runc's precedence (flags over the file).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Limits {
    pub memory: Option<i64>,
    /// memory + swap, as the spec counts it.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_rt_runtime: Option<i64>,
    pub cpu_rt_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids: Option<i64>,
    pub blkio_weight: Option<u16>,
}

impl Limits {
    pub fn from_args(a: &UpdateArgs) -> Result<Limits> {
        let mut l = match a.resources.as_deref() {
            Some(source) => Limits::from_resources(&read_resources(source)?)?,
            None => Limits::default(),
        };
        let bytes = |v: &Option<String>, name: &str| -> Result<Option<i64>> {
            v.as_deref().map(|v| ram_in_bytes(v, name)).transpose()
        };
        let num = |v: &Option<String>, name: &str| -> Result<Option<i64>> {
            v.as_deref()
                .map(|v| {
                    v.parse()
                        .map_err(|_| Error::Usage(format!("invalid value for --{name}: {v:?}")))
                })
                .transpose()
        };
        for (value, name) in [
            (&a.kernel_memory, "kernel-memory"),
            (&a.kernel_memory_tcp, "kernel-memory-tcp"),
            (&a.l3_cache_schema, "l3-cache-schema"),
            (&a.mem_bw_schema, "mem-bw-schema"),
            (&a.cpu_idle, "cpu-idle"),
        ] {
            if value.is_some() {
                return Err(Error::Usage(format!(
                    "update --{name} is not supported by this backend"
                )));
            }
        }
        set(&mut l.memory, bytes(&a.memory, "memory")?);
        set(&mut l.memory_swap, bytes(&a.memory_swap, "memory-swap")?);
        set(
            &mut l.memory_reservation,
            bytes(&a.memory_reservation, "memory-reservation")?,
        );
        set(
            &mut l.cpu_shares,
            num(&a.cpu_share, "cpu-share")?.map(|v| v as u64),
        );
        set(&mut l.cpu_quota, num(&a.cpu_quota, "cpu-quota")?);
        set(
            &mut l.cpu_period,
            num(&a.cpu_period, "cpu-period")?.map(|v| v as u64),
        );
        set(
            &mut l.cpu_rt_runtime,
            num(&a.cpu_rt_runtime, "cpu-rt-runtime")?,
        );
        set(
            &mut l.cpu_rt_period,
            num(&a.cpu_rt_period, "cpu-rt-period")?.map(|v| v as u64),
        );
        set(&mut l.pids, num(&a.pids_limit, "pids-limit")?);
        set(
            &mut l.blkio_weight,
            num(&a.blkio_weight, "blkio-weight")?.map(|v| v as u16),
        );
        if let Some(c) = &a.cpuset_cpus {
            l.cpuset_cpus = Some(cpu_list(c)?);
        }
        if let Some(m) = &a.cpuset_mems {
            l.cpuset_mems = Some(cpu_list(m)?);
        }
        Ok(l)
    }

    pub fn from_resources(r: &LinuxResources) -> Result<Limits> {
        let refuse = |what: &str| {
            Err(Error::Usage(format!(
                "update of linux.resources.{what} is not supported by this backend"
            )))
        };
        if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
            return refuse("hugepageLimits");
        }
        if r.network().is_some() {
            return refuse("network");
        }
        if r.unified().as_ref().is_some_and(|v| !v.is_empty()) {
            return refuse("unified");
        }
        if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
            return refuse("rdma");
        }
        let mut l = Limits::default();
        if let Some(m) = r.memory() {
            if m.kernel().is_some_and(|k| k != 0) || m.kernel_tcp().is_some_and(|k| k != 0) {
                return refuse("memory.kernel");
            }
            l.memory = m.limit().filter(|v| *v != 0);
            l.memory_swap = m.swap().filter(|v| *v != 0);
            l.memory_reservation = m.reservation().filter(|v| *v != 0);
        }
        if let Some(c) = r.cpu() {
            l.cpu_shares = c.shares().filter(|v| *v != 0);
            l.cpu_quota = c.quota().filter(|v| *v != 0);
            l.cpu_period = c.period().filter(|v| *v != 0);
            l.cpu_rt_runtime = c.realtime_runtime().filter(|v| *v != 0);
            l.cpu_rt_period = c.realtime_period().filter(|v| *v != 0);
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                l.cpuset_cpus = Some(cpu_list(cpus)?);
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                l.cpuset_mems = Some(cpu_list(mems)?);
            }
        }
        if let Some(p) = r.pids() {
            l.pids = Some(p.limit()).filter(|v| *v != 0);
        }
        if let Some(b) = r.block_io() {
            l.blkio_weight = b.weight().filter(|w| *w != 0);
        }
        Ok(l)
    }

    /// Writes them into the cgroups of `pid` (the container's process).
    pub fn apply(&self, pid: i32) -> Result<()> {
        if let Some(limit) = self.memory {
            memory(pid, limit, self.memory_swap)?;
        } else if let Some(swap) = self.memory_swap {
            memory_swap(pid, swap, None)?;
        }
        if let Some(r) = self.memory_reservation {
            write(
                pid,
                "memory",
                ("memory.soft_limit_in_bytes", "memory.low"),
                &max(r),
            )?;
        }
        if let Some(shares) = self.cpu_shares {
            let v2 = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write_each(pid, "cpu", ("cpu.shares", shares), ("cpu.weight", v2))?;
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() {
            let (dir, v1) = dir(pid, "cpu")?;
            if v1 {
                if let Some(p) = self.cpu_period {
                    put(&dir, "cpu.cfs_period_us", &p.to_string())?;
                }
                if let Some(q) = self.cpu_quota {
                    put(&dir, "cpu.cfs_quota_us", &q.to_string())?;
                }
            } else {
                let current = fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
                let mut parts = current.split_whitespace();
                let (old_q, old_p) = (
                    parts.next().unwrap_or("max"),
                    parts.next().unwrap_or("100000"),
                );
                let q = self.cpu_quota.map_or(old_q.to_string(), |q| {
                    if q > 0 { q.to_string() } else { "max".into() }
                });
                let p = self.cpu_period.map_or(old_p.to_string(), |p| p.to_string());
                put(&dir, "cpu.max", &format!("{q} {p}"))?;
            }
        }
        if self.cpu_rt_runtime.is_some() || self.cpu_rt_period.is_some() {
            let (dir, v1) = dir(pid, "cpu")?;
            if !v1 {
                return Err(Error::Usage(
                    "update of realtime cpu limits needs cgroup v1".into(),
                ));
            }
            if let Some(p) = self.cpu_rt_period {
                put(&dir, "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = self.cpu_rt_runtime {
                put(&dir, "cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        if let Some(cpus) = &self.cpuset_cpus {
            write(pid, "cpuset", ("cpuset.cpus", "cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = &self.cpuset_mems {
            write(pid, "cpuset", ("cpuset.mems", "cpuset.mems"), mems)?;
        }
        if let Some(p) = self.pids {
            let value = if p > 0 { p.to_string() } else { "max".into() };
            write(pid, "pids", ("pids.max", "pids.max"), &value)?;
        }
        if let Some(w) = self.blkio_weight {
            let v2 = 1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990;
            // v1's blkio hierarchy, else v2's controller, which is named io.
            let (dir, v1) = match super::join::cgroup_dir(pid, "blkio")? {
                Some(found) => found,
                None => dir(pid, "io")?,
            };
            if v1 {
                put(&dir, "blkio.weight", &w.to_string())?;
            } else {
                put(&dir, "io.weight", &v2.to_string())?;
            }
        }
        Ok(())
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

/// The new memory limit, and memory+swap: v1 checks each write against the other, so
/// the order depends on whether the limit grows (runc does the same).
fn memory(pid: i32, limit: i64, swap: Option<i64>) -> Result<()> {
    let (dir, v1) = dir(pid, "memory")?;
    if !v1 {
        put(&dir, "memory.max", &max(limit))?;
        return match swap {
            Some(s) => memory_swap(pid, s, Some(limit)),
            None => Ok(()),
        };
    }
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let current = fs::read_to_string(&memsw)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    let grows_past = |c: i64| limit == -1 || limit > c;
    match (swap, current) {
        (Some(s), Some(c)) if grows_past(c) => {
            put(&dir, "memory.memsw.limit_in_bytes", &s.to_string())?;
            put(&dir, "memory.limit_in_bytes", &limit.to_string())
        }
        (Some(s), _) => {
            put(&dir, "memory.limit_in_bytes", &limit.to_string())?;
            put(&dir, "memory.memsw.limit_in_bytes", &s.to_string())
        }
        (None, _) => put(&dir, "memory.limit_in_bytes", &limit.to_string()),
    }
}

fn memory_swap(pid: i32, swap: i64, limit: Option<i64>) -> Result<()> {
    let (dir, v1) = dir(pid, "memory")?;
    if v1 {
        return put(&dir, "memory.memsw.limit_in_bytes", &swap.to_string());
    }
    // v2 limits swap alone; the spec's figure is memory+swap.
    let limit = limit.or_else(|| {
        fs::read_to_string(dir.join("memory.max"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    let only = match (swap, limit) {
        (-1, _) => "max".to_string(),
        (s, Some(l)) if l > 0 => (s - l).max(0).to_string(),
        (s, _) => s.to_string(),
    };
    put(&dir, "memory.swap.max", &only)
}

fn max(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn dir(pid: i32, controller: &str) -> Result<(std::path::PathBuf, bool)> {
    super::join::cgroup_dir(pid, controller)?.ok_or_else(|| {
        Error::Usage(format!(
            "update: the {controller} controller is not available for this container"
        ))
    })
}

fn write(pid: i32, controller: &str, (v1_file, v2_file): (&str, &str), value: &str) -> Result<()> {
    let (dir, v1) = dir(pid, controller)?;
    let value = if !v1 && value == "-1" { "max" } else { value };
    put(&dir, if v1 { v1_file } else { v2_file }, value)
}

fn write_each(
    pid: i32,
    controller: &str,
    (v1_file, v1_value): (&str, u64),
    (v2_file, v2_value): (&str, u64),
) -> Result<()> {
    let (dir, v1) = dir(pid, controller)?;
    if v1 {
        put(&dir, v1_file, &v1_value.to_string())
    } else {
        put(&dir, v2_file, &v2_value.to_string())
    }
}

fn put(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| {
        Error::Usage(format!(
            "update: write {value:?} to {}: {e}",
            path.display()
        ))
    })
}

fn read_resources(source: &str) -> Result<LinuxResources> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("read resources from stdin", e))?;
    } else {
        text = fs::read_to_string(source).map_err(|e| Error::io(format!("read {source}"), e))?;
    }
    serde_json::from_str(&text).map_err(|e| Error::Usage(format!("invalid resources: {e}")))
}

/// go-units' RAMInBytes, as runc parses memory flags: a number with an optional
/// b/k/m/g/t/p suffix (binary), `-1` for unlimited.
fn ram_in_bytes(text: &str, name: &str) -> Result<i64> {
    let bad = || Error::Usage(format!("invalid value for --{name}: {text:?}"));
    if text == "-1" {
        return Ok(-1);
    }
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix('b')
        .filter(|s| !s.is_empty())
        .unwrap_or(&lower);
    let (digits, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "ki" => 1024.0,
        "m" | "mi" => 1024f64.powi(2),
        "g" | "gi" => 1024f64.powi(3),
        "t" | "ti" => 1024f64.powi(4),
        "p" | "pi" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    if value < 0.0 {
        return Err(bad());
    }
    Ok((value * mult) as i64)
}

fn cpu_list(v: &str) -> Result<String> {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        Ok(v.to_string())
    } else {
        Err(Error::Usage(format!("invalid cpu/mem list {v:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_flags_parse_as_runc() {
        assert_eq!(ram_in_bytes("100m", "memory").unwrap(), 100 << 20);
        assert_eq!(ram_in_bytes("1G", "memory").unwrap(), 1 << 30);
        assert_eq!(ram_in_bytes("4096", "memory").unwrap(), 4096);
        assert_eq!(ram_in_bytes("-1", "memory").unwrap(), -1);
        assert!(ram_in_bytes("lots", "memory").is_err());
    }

    #[test]
    fn zero_means_unchanged() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 104857600, "swap": 0},
            "cpu": {"shares": 0, "quota": 0, "period": 0},
            "blockIO": {"weight": 0},
            "pids": {"limit": 0}
        }))
        .unwrap();
        let l = Limits::from_resources(&r).unwrap();
        assert_eq!(
            l,
            Limits {
                memory: Some(104_857_600),
                ..Limits::default()
            }
        );
    }
}
