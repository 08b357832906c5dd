//! The OCI spec as `pct create` options.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::backend::genconf::{self, PctOptions};
use crate::backend::in_root::Tree;
use crate::backend::proxmox::{Owner, description, hostname};
use crate::config::PctConfig;
use crate::error::{Error, Result};
use crate::supervise::MOUNT_POINT;

/// Annotations with this prefix override backend settings, each only if the backend's
/// `allowed_annotations` lists it; anything else under it is refused, never ignored.
pub const ANNOTATION_PREFIX: &str = "org.nexcage.pct.";

/// Backend settings after the container's allowed annotations.
#[derive(Debug, PartialEq)]
pub struct Settings {
    /// Fixed vmid; else one from `pvesh get /cluster/nextid`.
    pub vmid: Option<String>,
}

pub fn settings(spec: &Spec, cfg: &PctConfig) -> Result<Settings> {
    Ok(Settings {
        vmid: crate::backend::proxmox::annotated_vmid(
            spec,
            ANNOTATION_PREFIX,
            &cfg.allowed_annotations,
            "pct",
        )?,
    })
}

/// Where the container's root is: the bundle's rootfs itself (real path, checked),
/// as a Proxmox bind-type rootfs; `idmapped`: an id-mapped mount on which the
/// container's ids are the ids on disk (pve-container 6.1.6+ `idmap=passthrough`).
fn rootfs_volume(rootfs: &Path, idmapped: bool) -> Result<String> {
    let path = property("rootfs", rootfs)?;
    Ok(if idmapped {
        format!("{path},idmap=passthrough")
    } else {
        path
    })
}

/// Where the CT's files come from.
pub struct Placement<'a> {
    /// The bundle's rootfs (real path, checked).
    pub rootfs: &'a Path,
    /// Mounted id-mapped, the container's ids being those on disk.
    pub idmapped_rootfs: bool,
    /// What goes to nexcage's mount point (the runtime dir's `inside`).
    pub runtime_dir: &'a Path,
    /// The spec's mounts (by index) that are Proxmox mount points (see `raw_config`).
    pub mount_points: &'a [usize],
}

pub fn create_options(
    spec: &Spec,
    cfg: &PctConfig,
    id: &str,
    owner: &Owner,
    place: &Placement,
) -> Result<Vec<String>> {
    let mut opts = PctOptions::default();
    let refused = Error::Usage;
    let hostname = hostname(spec.hostname().as_deref().unwrap_or(""), id);
    let unprivileged = if cfg.unprivileged { "1" } else { "0" };
    let rootfs = rootfs_volume(place.rootfs, place.idmapped_rootfs)?;
    let entrypoint = format!("{MOUNT_POINT}/{} init", crate::supervise::BINARY);
    for (option, value) in [
        ("ostype", "unmanaged"),
        ("hostname", &hostname),
        ("unprivileged", unprivileged),
        ("rootfs", &rootfs),
        ("tags", "nexcage"),
        // The OCI id, so that orphans can be found from Proxmox's side.
        ("description", &description(id, owner)),
        ("entrypoint", &entrypoint),
    ] {
        opts.set(option, value).map_err(refused)?;
    }
    if let Some(net0) = &cfg.net0 {
        opts.set("net0", net0.clone()).map_err(refused)?;
    }
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    if let Some(memory) = resources.as_ref().and_then(|r| *r.memory())
        && let Some(limit) = memory.limit().filter(|l| *l > 0)
    {
        let mib = (limit as u64).div_ceil(1 << 20).max(16);
        opts.set("memory", mib.to_string()).map_err(refused)?;
        // OCI's swap is memory+swap; Proxmox's is swap alone.
        if let Some(total) = memory.swap().filter(|s| *s >= limit) {
            let swap = ((total - limit) as u64 >> 20).to_string();
            opts.set("swap", swap).map_err(refused)?;
        }
    }
    if let Some(cpu) = resources.as_ref().and_then(|r| r.cpu().clone()) {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period())
            && quota > 0
            && period > 0
        {
            let limit = (quota as f64 / period as f64 * 100.0).ceil() / 100.0;
            opts.set("cpulimit", format!("{limit}")).map_err(refused)?;
        }
        if let Some(cpus) = cpu.cpus() {
            let cores = count_cpus(cpus).max(1).to_string();
            opts.set("cores", cores).map_err(refused)?;
        }
    }
    // mp0 is nexcage's own runtime directory; the bundle's directory binds follow.
    let mut mount_points = vec![format!(
        "{},mp={MOUNT_POINT},ro=1",
        property("runtime directory", place.runtime_dir)?
    )];
    let mounts = spec.mounts().clone().unwrap_or_default();
    for &i in place.mount_points {
        let Some(mount) = mounts.get(i) else { continue };
        let Some(source) = mount.source() else {
            continue;
        };
        let options = mount.options().clone().unwrap_or_default();
        mount_points.push(format!(
            "{},mp={}{}",
            property("mount source", source)?,
            property("mount destination", mount.destination())?,
            mount_point_options(&options)?
        ));
    }
    for (i, mp) in mount_points.into_iter().enumerate() {
        opts.set(&format!("mp{i}"), mp).map_err(refused)?;
    }
    Ok(opts.into_args())
}

/// A directory bind's options as a Proxmox mount point's: `ro=1`, and PVE's
/// `mountoptions` (the ones it knows: noatime, nodev, noexec, nosuid). A bind is
/// recursive and private there already; anything else cannot be expressed and is
/// refused by name, never dropped.
fn mount_point_options(options: &[String]) -> Result<String> {
    let mut ro = false;
    let mut mount_options = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => ro = true,
            "rw" | "bind" | "rbind" | "private" | "rprivate" => {}
            "noatime" | "nodev" | "noexec" | "nosuid" => mount_options.push(o.as_str()),
            other => {
                return Err(Error::Usage(format!(
                    "bind mount option {other:?} is not supported by the pct backend"
                )));
            }
        }
    }
    let mut out = String::new();
    if ro {
        out.push_str(",ro=1");
    }
    if !mount_options.is_empty() {
        out.push_str(&format!(",mountoptions={}", mount_options.join(";")));
    }
    Ok(out)
}

/// Where Proxmox mounts a filesystem of its own (its LXC config's `lxc.mount.auto`
/// and autodev): the spec's mount there must be of that type; init adds its
/// restricting options (`Setup::restrict`).
const PROXMOX_MOUNTS: [(&str, &[&str]); 4] = [
    ("/proc", &["proc"]),
    ("/sys", &["sysfs"]),
    ("/dev", &["tmpfs"]),
    ("/dev/pts", &["devpts"]),
];

/// Filesystems init mounts, after LXC's mounts: the spec's `/dev/shm` (over the tmpfs
/// Proxmox mounts there), `/dev/mqueue` (Proxmox mounts none) and the cgroupfs (see
/// `cgroupfs`). Nothing may be mounted below them: it would be hidden.
const INIT_MOUNTS: [(&str, &[&str]); 3] = [
    ("/dev/shm", &["tmpfs"]),
    ("/dev/mqueue", &["mqueue"]),
    ("/sys/fs/cgroup", &["cgroup", "cgroup2"]),
];

/// Where LXC binds an engine's own `/dev/shm` or `/dev/mqueue` for init to move into
/// place (in the container's /dev, a tmpfs of its own).
fn staging(path: &str) -> Option<String> {
    match path {
        "/dev/shm" => Some("/dev/.nexcage-shm".into()),
        "/dev/mqueue" => Some("/dev/.nexcage-mqueue".into()),
        _ => None,
    }
}

/// What init does about the spec's mounts at Proxmox's and init's own places (see
/// `PROXMOX_MOUNTS`, `INIT_MOUNTS`), into `setup`; another type there is refused.
pub fn special_mounts(spec: &Spec, setup: &mut crate::supervise::host::Setup) -> Result<()> {
    use crate::supervise::host::FsMount;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        let typ = m.typ().as_deref().unwrap_or("");
        let options = m.options().clone().unwrap_or_default();
        let place = PROXMOX_MOUNTS
            .iter()
            .chain(INIT_MOUNTS.iter())
            .find(|(p, _)| dest == Path::new(p));
        let bind = crate::backend::mount_entry::is_bind(m);
        if let Some((path, _)) = place
            && bind
            && let Some(staging) = staging(path)
        {
            // An engine's own shm or mqueue (podman's, `--ipc=shareable`): bound by
            // LXC where nothing else is (see `raw_mounts`), moved over Proxmox's by init.
            setup.mounts.push(FsMount {
                destination: path.to_string(),
                fstype: String::new(),
                source: staging,
                // Its restricting ones, made sure of after the move.
                options,
                staged: true,
            });
            continue;
        }
        if let Some((path, types)) = place
            && (!types.contains(&typ) || bind)
        {
            return Err(Error::Usage(format!(
                "a {typ:?} mount at {path} is not supported by the pct backend (Proxmox \
                 mounts {} there)",
                types.join(" or ")
            )));
        }
        match place {
            Some((path, _)) if PROXMOX_MOUNTS.iter().any(|(p, _)| p == path) => {
                setup.restrict.push((path.to_string(), options));
            }
            Some((path, _)) if *path != "/sys/fs/cgroup" => setup.mounts.push(FsMount {
                destination: path.to_string(),
                fstype: typ.to_string(),
                source: m
                    .source()
                    .as_ref()
                    .map_or_else(|| typ.to_string(), |s| s.display().to_string()),
                options,
                staged: false,
            }),
            Some(_) => {}
            None => {
                if let Some((below, _)) = INIT_MOUNTS
                    .iter()
                    .find(|(p, _)| dest.starts_with(p) && dest != Path::new(p))
                {
                    return Err(Error::Usage(format!(
                        "mount destination {} is not supported by the pct backend (below \
                         {below}, which is mounted after it)",
                        dest.display()
                    )));
                }
            }
        }
    }
    setup.cgroupfs = cgroupfs(spec);
    Ok(())
}

/// What Proxmox has no option for, as raw `lxc.*` keys of the CT config, which PVE
/// passes to LXC after its own (`lxc.mount.entry`, `lxc.cgroup.*`, `lxc.cgroup2.*`):
/// the spec's other mounts (see `raw_mounts`), its device nodes (binds of the host's
/// identical node) and its `linux.resources` exactly, device rules included (Proxmox's
/// options are whole MiB and cores, and its device list is its own). Also which of the
/// spec's mounts (by index) are Proxmox mount points (`create_options`).
pub fn raw_config(spec: &Spec, rootfs: &Path) -> Result<(genconf::LxcConf, Vec<usize>)> {
    let refused =
        |what: String| Error::Usage(format!("{what} is not supported by the pct backend"));
    let mut c = genconf::LxcConf::default();
    let (tree, mount_points) = raw_mounts(spec, rootfs, &mut c)?;
    crate::backend::device_nodes::devices(spec, false, &tree, &mut c).map_err(refused)?;
    let linux = spec.linux().clone().unwrap_or_default();
    if let Some(resources) = linux.resources() {
        let devices = linux.devices().as_deref().unwrap_or(&[]);
        crate::backend::cgroup_keys::limits(resources, devices, &mut c).map_err(refused)?;
    }
    Ok((c, mount_points))
}

/// The spec's mounts other than Proxmox's and init's own, in its order: binds of
/// directories are Proxmox mount points (`mpN`, shown in the UI), which PVE mounts
/// before any raw entry; so a directory bind that overlaps (above, below or at) an
/// earlier raw mount's target is a raw entry too, and the spec's order holds. The
/// rest (file binds such as an engine's `/etc/hosts`, tmpfs and other filesystems) are
/// raw `lxc.mount.entry` values, targets resolved inside the rootfs. Returns the mount
/// tree, for what is resolved inside it afterwards, and the mount points' indices.
fn raw_mounts<'a>(
    spec: &Spec,
    rootfs: &'a Path,
    c: &mut genconf::LxcConf,
) -> Result<(Tree<'a>, Vec<usize>)> {
    use crate::backend::mount_entry::{bind_entry, fs_entry, is_bind};
    let refused = |e: String| Error::Usage(e);
    let mut tree = Tree::new(rootfs);
    let special = || PROXMOX_MOUNTS.iter().chain(INIT_MOUNTS.iter());
    for (dest, _) in special() {
        tree.mounted(dest.trim_start_matches('/').into(), None);
    }
    let mut raw_targets: Vec<std::path::PathBuf> = Vec::new();
    let mut mount_points = Vec::new();
    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        let dest = mount.destination();
        if let Some((path, _)) = special().find(|(p, _)| dest == Path::new(p)) {
            // Staged for init (see `special_mounts`).
            if is_bind(mount)
                && let Some(staging) = staging(path)
            {
                let target = Path::new(staging.trim_start_matches('/'));
                let entry = bind_entry(mount, false, target).map_err(refused)?;
                c.set("lxc.mount.entry", entry).map_err(refused)?;
            }
            continue;
        }
        if !dest.is_absolute() {
            return Err(refused(format!(
                "mount destination {dest:?} (not absolute)"
            )));
        }
        let target = tree.resolve(dest).map_err(refused)?;
        let bind_source = mount.source().as_ref().filter(|_| is_bind(mount));
        if let Some(source) = bind_source
            && !source.exists()
        {
            return Err(refused(format!(
                "mount source {} of {} does not exist",
                source.display(),
                dest.display()
            )));
        }
        let overlaps = raw_targets
            .iter()
            .any(|t| t.starts_with(&target) || target.starts_with(t));
        match bind_source {
            Some(source) if source.is_dir() && !overlaps => {
                mount_points.push(i);
                tree.mounted(target, Some(source.clone()));
            }
            _ => {
                let entry = if is_bind(mount) {
                    bind_entry(mount, false, &target)
                } else {
                    fs_entry(mount, &target)
                };
                c.set("lxc.mount.entry", entry.map_err(refused)?)
                    .map_err(refused)?;
                raw_targets.push(target.clone());
                tree.mounted(target, None);
            }
        }
    }
    Ok((tree, mount_points))
}

/// The spec's cgroup mount at `/sys/fs/cgroup` (path, read-only), which init makes.
fn cgroupfs(spec: &Spec) -> Option<(String, bool)> {
    spec.mounts().iter().flatten().find_map(|m| {
        let cgroup = matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"));
        (cgroup && m.destination() == Path::new("/sys/fs/cgroup")).then(|| {
            let ro = m.options().iter().flatten().any(|o| o == "ro");
            ("/sys/fs/cgroup".to_string(), ro)
        })
    })
}

/// An absolute path inside a Proxmox property string; no `..`, which would climb out
/// of the container's root before Proxmox's own checks see the path.
fn property(field: &str, path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .filter(|_| path.is_absolute())
        .filter(|_| {
            !path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "{field} {path:?}: not an absolute UTF-8 path without '..'"
            ))
        })?;
    genconf::property(field, text).map_err(Error::Usage)
}

/// `0-3,6` -> 5; saturating, as the list is the spec's (`0-18446744073709551615`).
fn count_cpus(list: &str) -> usize {
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => (b - a).saturating_add(1),
                _ => 0,
            },
            None => usize::from(part.trim().parse::<usize>().is_ok()),
        })
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0-3,6"), 5);
        assert_eq!(count_cpus("1"), 1);
        assert_eq!(count_cpus("0-18446744073709551615,0-1"), usize::MAX);
    }
}
