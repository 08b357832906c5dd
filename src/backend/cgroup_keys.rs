//! `linux.resources` as LXC cgroup keys: `lxc.cgroup.*` on a v1 hierarchy,
//! `lxc.cgroup2.*` where the controller lives in the unified one. The lxc backend's
//! config, and raw keys of a Proxmox CT's (PVE passes `lxc.cgroup2?.*` through).

use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources,
};

use crate::backend::genconf::{LxcConf as Conf, Refusal};

/// Whether `controller` is mounted as its own v1 hierarchy (this host: hybrid).
fn v1(controller: &str) -> bool {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("cgroup.procs")
        .exists()
        && !Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("cgroup.controllers")
            .exists()
}

/// runc's devices that every container may use, whatever the spec's rules say.
const DEFAULT_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

pub fn limits(r: &LinuxResources, devices: &[LinuxDevice], c: &mut Conf) -> Result<(), Refusal> {
    if let Some(b) = r.block_io() {
        block_io(b, c)?;
    }
    for (set, name) in [
        (
            r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()),
            "hugepageLimits",
        ),
        (r.network().is_some(), "network"),
        (r.rdma().as_ref().is_some_and(|v| !v.is_empty()), "rdma"),
        (
            r.unified().as_ref().is_some_and(|v| !v.is_empty()),
            "unified",
        ),
    ] {
        if set {
            return Err(format!("linux.resources.{name}"));
        }
    }
    if let Some(m) = r.memory() {
        let legacy = v1("memory");
        let bytes = |v: i64| match (v, legacy) {
            (-1, true) => "-1".to_string(),
            (-1, false) => "max".to_string(),
            (v, _) => v.to_string(),
        };
        if let Some(limit) = m.limit() {
            set(
                c,
                legacy,
                "memory.limit_in_bytes",
                "memory.max",
                bytes(limit),
            )?;
        }
        if let Some(swap) = m.swap() {
            if legacy {
                if !Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
                    return Err("linux.resources.memory.swap (no swap accounting here)".into());
                }
                c.set("lxc.cgroup.memory.memsw.limit_in_bytes", bytes(swap))?;
            } else {
                // v2 limits swap alone; the spec's figure is memory+swap.
                let only = match (swap, m.limit()) {
                    (-1, _) => "max".to_string(),
                    (s, Some(l)) if l > 0 => s.saturating_sub(l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                c.set("lxc.cgroup2.memory.swap.max", only)?;
            }
        }
        if let Some(res) = m.reservation() {
            set(
                c,
                legacy,
                "memory.soft_limit_in_bytes",
                "memory.low",
                bytes(res),
            )?;
        }
        if let Some(s) = m.swappiness().filter(|s| *s <= 100) {
            if !legacy {
                return Err("linux.resources.memory.swappiness (cgroup v2)".into());
            }
            c.set("lxc.cgroup.memory.swappiness", s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            if !legacy {
                return Err("linux.resources.memory.disableOOMKiller (cgroup v2)".into());
            }
            c.set("lxc.cgroup.memory.oom_control", "1")?;
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            return Err("linux.resources.memory.kernel/kernelTCP".into());
        }
    }
    if let Some(cpu) = r.cpu() {
        let legacy = v1("cpu");
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            // runc's conversion of shares (2..262144) to a v2 weight (1..10000).
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            set(
                c,
                legacy,
                "cpu.shares",
                "cpu.weight",
                if legacy { shares } else { weight }.to_string(),
            )?;
        }
        let (quota, period) = (cpu.quota(), cpu.period());
        if quota.is_some() || period.is_some() {
            let period = period.unwrap_or(100_000);
            if legacy {
                c.set("lxc.cgroup.cpu.cfs_period_us", period.to_string())?;
                if let Some(q) = quota {
                    c.set("lxc.cgroup.cpu.cfs_quota_us", q.to_string())?;
                }
            } else {
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                c.set("lxc.cgroup2.cpu.max", format!("{q} {period}"))?;
            }
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            set(c, v1("cpuset"), "cpuset.cpus", "cpuset.cpus", plain(cpus)?)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            set(c, v1("cpuset"), "cpuset.mems", "cpuset.mems", plain(mems)?)?;
        }
        if cpu.realtime_runtime().is_some()
            || cpu.realtime_period().is_some()
            || cpu.idle().is_some()
            || cpu.burst().is_some()
        {
            return Err("linux.resources.cpu realtime/idle/burst".into());
        }
    }
    if let Some(p) = r.pids() {
        let max = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        set(c, v1("pids"), "pids.max", "pids.max", max)?;
    }
    if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        let legacy = v1("devices");
        let key = |allow: bool| {
            format!(
                "lxc.{}.devices.{}",
                if legacy { "cgroup" } else { "cgroup2" },
                if allow { "allow" } else { "deny" }
            )
        };
        for rule in rules {
            c.set(&key(rule.allow()), device_rule(rule)?)?;
        }
        for d in DEFAULT_DEVICES {
            c.set(&key(true), *d)?;
        }
        for d in devices {
            let t = if d.typ() == LinuxDeviceType::B {
                'b'
            } else {
                'c'
            };
            c.set(&key(true), format!("{t} {}:{} rwm", d.major(), d.minor()))?;
        }
    }
    Ok(())
}

/// `blockIO` as runc applies it: a weight of 0 is unset (Docker always sends
/// `"weight": 0`); v2 weights are converted from blkio's 10..1000 to io's 1..10000.
fn block_io(b: &LinuxBlockIo, c: &mut Conf) -> Result<(), Refusal> {
    let legacy = v1("blkio");
    let weight = |w: u16| {
        if legacy {
            w.to_string()
        } else {
            (1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990).to_string()
        }
    };
    if b.leaf_weight().is_some_and(|w| w > 0)
        || b.weight_device()
            .iter()
            .flatten()
            .any(|d| d.leaf_weight().is_some_and(|w| w > 0))
    {
        return Err("linux.resources.blockIO.leafWeight".into());
    }
    if let Some(w) = b.weight().filter(|w| *w > 0) {
        set(c, legacy, "blkio.weight", "io.weight", weight(w))?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight().filter(|w| *w > 0) {
            let dev = format!("{}:{}", d.major(), d.minor());
            let value = if legacy {
                format!("{dev} {w}")
            } else {
                format!("{dev} {}", weight(w))
            };
            set(c, legacy, "blkio.weight_device", "io.weight", value)?;
        }
    }
    for (list, v1_key, v2_word) in [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "rbps",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "wbps",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ] {
        for d in list.iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            let value = if legacy {
                format!("{dev} {}", d.rate())
            } else {
                format!("{dev} {v2_word}={}", d.rate())
            };
            set(c, legacy, v1_key, "io.max", value)?;
        }
    }
    Ok(())
}

fn set(
    c: &mut Conf,
    legacy: bool,
    v1_key: &str,
    v2_key: &str,
    value: String,
) -> Result<(), Refusal> {
    if legacy {
        c.set(&format!("lxc.cgroup.{v1_key}"), value)
    } else {
        c.set(&format!("lxc.cgroup2.{v2_key}"), value)
    }
}

fn plain(v: &str) -> Result<String, Refusal> {
    if v.bytes()
        .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        Ok(v.to_string())
    } else {
        Err(format!("cpuset {v:?}"))
    }
}

/// `TYPE MAJOR:MINOR ACCESS` as the devices controller writes it (`a` for all).
fn device_rule(rule: &LinuxDeviceCgroup) -> Result<String, Refusal> {
    let typ = match rule.typ() {
        None | Some(LinuxDeviceType::A) => 'a',
        Some(LinuxDeviceType::B) => 'b',
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
        Some(other) => return Err(format!("device rule of type {other:?}")),
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.bytes().all(|b| b"rwm".contains(&b)) {
        return Err(format!("device rule access {access:?}"));
    }
    if typ == 'a' && rule.major().is_none() && rule.minor().is_none() {
        return Ok(format!("a *:* {access}"));
    }
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    Ok(format!(
        "{typ} {}:{} {access}",
        num(rule.major()),
        num(rule.minor())
    ))
}
