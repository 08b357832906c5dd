//! The OCI spec as a Proxmox VM (`qm create` options) and what the guest does to
//! make the container (`GuestSetup`) and run its process (`GuestProcess`). What
//! cannot be done in a VM yet is refused by the field's name.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::backend::in_root::Tree;
use crate::config::QmConfig;
use crate::error::{Error, Result};
use crate::supervise::guest::GuestSetup;
use crate::supervise::host::{FsMount, Setup};
use crate::supervise::vm_relay::GuestProcess;

/// Which network namespace the holder is in: what the engine configures (hooks, CNI
/// and Docker's libnetwork go to `/proc/<state.pid>/ns/net`), and where the VM's NIC
/// is joined to the engine's interface (see `supervise::vm_net`).
pub enum NetNs {
    /// The spec has none: the holder stays in ours, the VM's NIC is on the bridge.
    Host,
    New,
    Path(std::path::PathBuf),
}

pub struct Plan {
    pub netns: NetNs,
    /// `qm create` options, less `--args` (the backend adds its devices).
    pub options: Vec<String>,
    /// Host directories shared into the guest for the spec's bind mounts, each with
    /// whether it is read-only (its virtiofsd is then `--readonly`: the guest is
    /// not trusted to keep a read-only bind read-only).
    pub shares: Vec<(std::path::PathBuf, bool)>,
    pub guest: GuestSetup,
    pub process: GuestProcess,
}

/// Annotations with this prefix override backend settings, as pct's do (see
/// `proxmox::annotated_vmid`).
pub const ANNOTATION_PREFIX: &str = "org.nexcage.qm.";

fn refused(what: &str) -> Error {
    Error::Usage(format!("{what} is not supported by the qm backend"))
}

/// Filesystems the guest mounts itself, as the spec's types map in a VM: the
/// container's cgroups are the VM's own (cgroup2), everything else as asked.
const FILESYSTEMS: [&str; 7] = [
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

pub fn plan(spec: &Spec, cfg: &QmConfig, id: &str, rootfs: &Path) -> Result<Plan> {
    crate::spec_check::hostname(spec).map_err(Error::Usage)?;
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Usage("config.json has no \"process\"".into()))?;
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(refused(
            "process.apparmorProfile (the guest loads no profiles)",
        ));
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(refused("process.selinuxLabel"));
    }
    // Hooks in the runtime's namespaces run on the host (see the backend); the
    // container's namespaces are a VM's, where no host program can run.
    if let Some(h) = spec.hooks() {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(refused("hooks.createContainer (in the container: a VM)"));
        }
        if h.start_container().as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(refused("hooks.startContainer (in the container: a VM)"));
        }
    }
    let linux = spec.linux().clone().unwrap_or_default();
    if linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
    {
        return Err(refused("a user namespace (linux.uidMappings)"));
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(refused("linux.devices"));
    }
    let mut memory = cfg.memory;
    let mut cores = cfg.cores;
    let mut cpu_opts = Vec::new();
    let mut pids_limit = None;
    if let Some(r) = linux.resources() {
        if let Some(limit) = r
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
        {
            memory = (limit as u64).div_ceil(1 << 20).max(64);
        }
        if let Some(cpu) = r.cpu()
            && let Some(n) = cpu_options(cpu, &mut cpu_opts)?
        {
            cores = n;
        }
        let zero = |v: Option<i64>| v.is_none_or(|v| v <= 0);
        pids_limit = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l > 0);
        if r.block_io().as_ref().is_some_and(|b| {
            b.weight().is_some_and(|w| w > 0)
                || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_read_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
                || b.throttle_write_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty())
        }) {
            return Err(refused("linux.resources.blockIO"));
        }
        if r.memory().as_ref().is_some_and(|m| {
            !zero(m.reservation()) || !zero(m.kernel()) || m.swappiness().is_some_and(|s| s <= 100)
        }) {
            return Err(refused("linux.resources.memory (beyond limit)"));
        }
        if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty())
            || r.rdma().as_ref().is_some_and(|v| !v.is_empty())
            || r.unified().as_ref().is_some_and(|v| !v.is_empty())
            || r.network().is_some()
        {
            return Err(refused(
                "linux.resources (hugepages, rdma, unified, network)",
            ));
        }
    }
    let mut setup = Setup::from_spec(spec);
    for (key, value) in linux.sysctl().iter().flatten() {
        setup.sysctls.push((key.clone(), value.clone()));
    }
    let mut tree = Tree::new(rootfs);
    let mut mounts = Vec::new();
    let mut shares: Vec<(std::path::PathBuf, bool)> = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let typ = m.typ().as_deref().unwrap_or("");
        if crate::backend::mount_entry::is_bind(m) {
            if !m.destination().is_absolute() {
                return Err(Error::Usage(format!(
                    "mount destination {:?} (not absolute)",
                    m.destination()
                )));
            }
            let target = tree.resolve(m.destination()).map_err(Error::Usage)?;
            let (share, source, options) = bind_share(m, &mut shares)?;
            mounts.push(FsMount {
                destination: target.to_string_lossy().into_owned(),
                fstype: "bind".into(),
                source: format!("{share}/{source}"),
                options,
                staged: false,
            });
            tree.mounted(target, None);
            continue;
        }
        if !FILESYSTEMS.contains(&typ) {
            return Err(refused(&format!(
                "a {typ:?} mount on {}",
                m.destination().display()
            )));
        }
        if !m.destination().is_absolute() {
            return Err(Error::Usage(format!(
                "mount destination {:?} (not absolute)",
                m.destination()
            )));
        }
        let target = tree.resolve(m.destination()).map_err(Error::Usage)?;
        let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
        let options: Vec<String> = m
            .options()
            .iter()
            .flatten()
            // cgroup v1 controller lists do not apply to the VM's cgroup2.
            .filter(|o| typ != "cgroup" || is_flag(o))
            .cloned()
            .collect();
        mounts.push(FsMount {
            destination: target.to_string_lossy().into_owned(),
            fstype: fstype.into(),
            source: fstype.into(),
            options,
            staged: false,
        });
        tree.mounted(target, None);
    }
    // runc's /dev: device nodes and symlinks in a /dev of the container's own.
    setup.dev_symlinks = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev"));
    let seccomp = match linux.seccomp() {
        Some(s) => Some(crate::supervise::seccomp::compile(s)?.to_bytes()),
        None => None,
    };
    let hostname = crate::backend::proxmox::hostname(spec.hostname().as_deref().unwrap_or(""), id);
    let mut options = vec![
        "--name".into(),
        hostname,
        "--memory".into(),
        memory.to_string(),
        "--cores".into(),
        cores.to_string(),
        "--kvm".into(),
        if cfg.kvm { "1" } else { "0" }.into(),
        "--ostype".into(),
        "l26".into(),
        "--tags".into(),
        "nexcage".into(),
    ];
    options.extend(cpu_opts);
    let netns = match linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
    {
        // A VM cannot share the host's network stack: the nearest is a NIC on the
        // host's bridge, as any Proxmox VM has.
        None => match &cfg.bridge {
            Some(bridge) => {
                options.extend(["--net0".into(), format!("virtio,bridge={bridge}")]);
                NetNs::Host
            }
            None => {
                return Err(refused(
                    "a container without a network namespace (the host's network; \
                     a bridge setting gives it a NIC there)",
                ));
            }
        },
        Some(n) => match n.path() {
            Some(p) => NetNs::Path(p.clone()),
            None => NetNs::New,
        },
    };
    let nics_up = matches!(netns, NetNs::Host);
    Ok(Plan {
        netns,
        options,
        guest: GuestSetup {
            hostname: spec.hostname().clone(),
            mounts,
            setup,
            shares: shares.len(),
            pids_limit,
            nics_up,
        },
        shares,
        process: GuestProcess {
            process,
            seccomp,
            window: None,
        },
    })
}

/// `linux.resources.cpu` as a VM's: a quota is so many cores (rounded up) and
/// `cpulimit`, shares are `cpuunits` (a cgroup v2 weight, as runc converts), a cpuset
/// is `affinity` (the host CPUs QEMU runs on); the rest has no VM equivalent.
/// Returns the cores a quota asks for.
fn cpu_options(cpu: &oci_spec::runtime::LinuxCpu, opts: &mut Vec<String>) -> Result<Option<u64>> {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if set(cpu.mems()) {
        return Err(refused("linux.resources.cpu.mems"));
    }
    if cpu.realtime_runtime().is_some_and(|v| v != 0)
        || cpu.realtime_period().is_some_and(|v| v != 0)
    {
        return Err(refused("linux.resources.cpu realtime"));
    }
    if cpu.idle().is_some_and(|v| v != 0) {
        return Err(refused("linux.resources.cpu.idle"));
    }
    if cpu.burst().is_some_and(|v| v != 0) {
        return Err(refused("linux.resources.cpu.burst"));
    }
    if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
        let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
        opts.extend(["--cpuunits".to_string(), weight.to_string()]);
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.trim().is_empty()) {
        if !cpus
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        {
            return Err(Error::Usage(format!(
                "linux.resources.cpu.cpus {cpus:?}: not a CPU list"
            )));
        }
        opts.extend(["--affinity".to_string(), cpus.to_string()]);
    }
    // runc's period when the spec gives a quota alone.
    match (cpu.quota(), cpu.period().unwrap_or(100_000)) {
        (Some(q), p) if q > 0 && p > 0 => {
            // Proxmox takes hundredths; 0 would mean no limit at all.
            let limit = (q as f64 / p as f64).max(0.01);
            opts.extend(["--cpulimit".to_string(), format!("{limit:.2}")]);
            Ok(Some((q as u64).div_ceil(p).max(1)))
        }
        _ => Ok(None),
    }
}

/// The most shares the backend gives a VM: the free pci.2 slots after its own.
pub const MAX_SHARES: usize = 4;

/// Which share a bind's source is in (its directory, or a file's parent directory;
/// read-only and read-write ones apart), added if new; the path inside the share, and
/// the options the guest applies to the bind.
fn bind_share(
    m: &oci_spec::runtime::Mount,
    shares: &mut Vec<(std::path::PathBuf, bool)>,
) -> Result<(usize, String, Vec<String>)> {
    let source = m.source().clone().ok_or_else(|| {
        Error::Usage(format!(
            "bind mount on {:?} without a source",
            m.destination()
        ))
    })?;
    let real = std::fs::canonicalize(&source).map_err(|e| {
        Error::Usage(format!(
            "mount source {} of {}: {e}",
            source.display(),
            m.destination().display()
        ))
    })?;
    let (dir, inside) = if real.is_dir() {
        (real.clone(), String::new())
    } else {
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (real.parent().unwrap_or(Path::new("/")).to_path_buf(), name)
    };
    let options: Vec<String> = m.options().iter().flatten().cloned().collect();
    for o in &options {
        if !matches!(
            o.as_str(),
            "bind" | "rbind" | "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "private" | "rprivate"
        ) {
            return Err(refused(&format!("bind mount option {o:?}")));
        }
    }
    let ro = options.iter().any(|o| o == "ro");
    let index = match shares.iter().position(|(d, r)| *d == dir && *r == ro) {
        Some(i) => i,
        None if shares.len() < MAX_SHARES => {
            shares.push((dir, ro));
            shares.len() - 1
        }
        None => {
            return Err(refused(&format!(
                "more than {MAX_SHARES} directories of bind sources"
            )));
        }
    };
    Ok((index, inside, options))
}

fn is_flag(o: &str) -> bool {
    matches!(
        o,
        "ro" | "rw" | "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "relatime"
    )
}

/// One `args:` word: qemu-server splits the value like a shell; a path of ours with
/// blanks or quotes would come apart there.
pub fn arg_word(what: &str, word: &str) -> Result<String> {
    if word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "'\"\\$`".contains(c))
    {
        return Err(Error::Usage(format!(
            "{what} {word:?}: blanks, quotes and backslashes cannot go into a VM's args"
        )));
    }
    Ok(word.to_string())
}
