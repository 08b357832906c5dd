//! The OCI spec as an LXC container configuration, plus what init must do itself
//! (see `supervise::host::Setup`). Anything security-relevant that cannot be
//! expressed is refused with the field's name, never dropped.

use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::Serialize;

use crate::backend::genconf::LxcConf as Conf;
use crate::backend::in_root::Tree;
use crate::backend::mount_entry::{bind_entry, fs_entry, fstab, is_bind, value};
use crate::config::LxcConfig;
use crate::supervise::BINARY;
use crate::supervise::host::Setup;

/// What the backend writes for one container.
pub struct Translation {
    pub config: String,
    pub setup: Setup,
    /// Owner of the files in the runtime directory init must reach (see `root_uid`).
    pub root_uid: u32,
    /// The container's root is not the host's: the runtime directory must be
    /// reachable by a mapped uid.
    pub mapped_root: bool,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroup: String,
    /// Where the runtime directory appears inside the container.
    pub mount_point: String,
}

/// Everything `translate` needs to know about where things are.
pub struct Paths<'a> {
    pub rootfs: &'a Path,
    /// What of the runtime directory the container sees (`supervise::INSIDE`).
    pub runtime_dir: &'a Path,
    /// nexcage's binary on the host, bound read-only over the runtime directory's
    /// placeholder; None when the runtime directory holds a copy.
    pub binary: Option<&'a Path>,
}

pub use crate::backend::genconf::Refusal;

pub fn translate(
    spec: &Spec,
    cfg: &LxcConfig,
    id: &str,
    paths: &Paths,
) -> Result<Translation, Refusal> {
    refuse_unsupported(spec)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut c = Conf::default();
    let autodev = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev"));
    // Under /dev (a fresh tmpfs) the mount point never needs the rootfs to be writable.
    let mount_point = if autodev {
        "/dev/.nexcage"
    } else {
        "/.nexcage"
    };

    c.set("lxc.rootfs.path", format!("dir:{}", value(paths.rootfs)?))?;
    c.set(
        "lxc.init.cmd",
        format!("{mount_point}/{BINARY} init --dir {mount_point}"),
    )?;
    // stdio comes from the holder; LXC allocates no console or ttys of its own.
    c.set("lxc.console.path", "none")?;
    c.set("lxc.tty.max", "0")?;
    // The spec's own /dev, /dev/pts (a devpts of its own) and devices, in its order;
    // init adds runc's /dev symlinks (ptmx -> pts/ptmx among them).
    c.set("lxc.pty.max", "0")?;
    c.set("lxc.autodev", "0")?;
    // init runs unconfined, as runc's init does; the holder puts the workload into
    // the spec's profile when it execs it (see `identity`).
    c.set("lxc.apparmor.profile", "unconfined")?;
    if let Some(p) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        c.set("lxc.proc.oom_score_adj", p.to_string())?;
    }

    let userns = namespaces(spec, cfg, &mut c)?;
    let idmapped = userns == UserNs::FromConfig;
    if idmapped {
        c.set("lxc.rootfs.options", "idmap=container")?;
    }
    crate::spec_check::hostname(spec)?;
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        c.set("lxc.uts.name", value(hostname)?)?;
    }

    let cgroup = cgroup_path(linux.cgroups_path().as_deref(), id)?;
    c.set("lxc.cgroup.relative", "0")?;
    c.set("lxc.cgroup.dir.container", cgroup.clone())?;
    c.set("lxc.cgroup.dir.monitor", format!("nexcage.monitor/{id}"))?;
    if let Some(resources) = linux.resources() {
        crate::backend::cgroup_keys::limits(
            resources,
            linux.devices().as_deref().unwrap_or(&[]),
            &mut c,
        )?;
    }

    let mut tree = Tree::new(paths.rootfs);
    let readonly_mounts = mounts(spec, idmapped, &cgroup, &mut tree, &mut c)?;
    crate::backend::device_nodes::devices(spec, autodev, &tree, &mut c)?;
    // Where init is looked for: it must be where it says, not where an image's
    // symlink would put it.
    if tree.resolve(Path::new(mount_point))? != relative(Path::new(mount_point)) {
        return Err(format!(
            "a rootfs whose {mount_point} is a symlink (nexcage mounts itself there)"
        ));
    }
    c.set(
        "lxc.mount.entry",
        format!(
            "{} {} none ro,bind,create=dir{} 0 0",
            fstab(paths.runtime_dir)?,
            mount_point.trim_start_matches('/'),
            if idmapped { ",idmap=container" } else { "" }
        ),
    )?;
    if let Some(binary) = paths.binary {
        c.set(
            "lxc.mount.entry",
            format!(
                "{} {}/{BINARY} none ro,bind{} 0 0",
                fstab(binary)?,
                mount_point.trim_start_matches('/'),
                if idmapped { ",idmap=container" } else { "" }
            ),
        )?;
    }

    for (key, val) in linux.sysctl().iter().flatten() {
        crate::spec_check::sysctl(key, &linux)?;
        c.set(&format!("lxc.sysctl.{key}"), value(val)?)?;
    }

    // seccomp is not LXC's: the holder loads the spec's filter right before it execs
    // the workload, after everything that needs the syscalls a profile may deny.
    let mut setup = Setup::from_spec(spec);
    setup.readonly_mounts = readonly_mounts;
    setup.dev_symlinks = autodev;
    Ok(Translation {
        config: c.text(),
        setup,
        root_uid: root_uid(&linux, userns),
        mapped_root: userns != UserNs::Host,
        cgroup,
        mount_point: mount_point.to_string(),
    })
}

fn is_set<T: Serialize>(v: &T) -> bool {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Null) => false,
        Ok(serde_json::Value::Object(m)) => m.values().any(is_set),
        Ok(serde_json::Value::Array(a)) => !a.is_empty(),
        Ok(serde_json::Value::String(s)) => !s.is_empty(),
        _ => true,
    }
}

fn refuse_unsupported(spec: &Spec) -> Result<(), Refusal> {
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return Err("domainname".into());
    }
    if let Some(p) = spec.process() {
        if p.selinux_label().as_deref().is_some_and(|l| !l.is_empty()) {
            return Err("process.selinuxLabel".into());
        }
        if is_set(p.io_priority()) {
            return Err("process.ioPriority".into());
        }
        if is_set(p.scheduler()) {
            return Err("process.scheduler".into());
        }
        if is_set(p.exec_cpu_affinity()) {
            return Err("process.execCPUAffinity".into());
        }
    }
    if let Some(l) = spec.linux() {
        if l.mount_label().as_deref().is_some_and(|l| !l.is_empty()) {
            return Err("linux.mountLabel".into());
        }
        if is_set(l.intel_rdt()) {
            return Err("linux.intelRdt".into());
        }
        if is_set(l.personality()) {
            return Err("linux.personality".into());
        }
        if is_set(l.time_offsets()) {
            return Err("linux.timeOffsets".into());
        }
        if let Some(p) = l.rootfs_propagation().as_deref() {
            // LXC keeps the container's mounts from propagating to the host.
            if !matches!(p, "" | "private" | "rprivate" | "slave" | "rslave") {
                return Err(format!("linux.rootfsPropagation {p:?}"));
            }
        }
    }
    Ok(())
}

/// The owner the runtime directory's files need for the container's root (whom init
/// runs as) to own them: its host uid, but through an id-mapped mount, host root.
fn root_uid(linux: &oci_spec::runtime::Linux, userns: UserNs) -> u32 {
    match userns {
        UserNs::Host | UserNs::FromConfig => 0,
        UserNs::FromSpec => crate::backend::id_maps::root_uid(linux).unwrap_or(0),
    }
}

#[derive(PartialEq, Clone, Copy)]
enum UserNs {
    /// The caller's (no user namespace).
    Host,
    /// Mapped as the spec says, or joined.
    FromSpec,
    /// The backend's `unprivileged` mapping; the rootfs is an id-mapped mount.
    FromConfig,
}

/// New namespaces are LXC's default; the spec's joined ones become
/// `lxc.namespace.share.*`, the ones it leaves out `lxc.namespace.keep`.
fn namespaces(spec: &Spec, cfg: &LxcConfig, c: &mut Conf) -> Result<UserNs, Refusal> {
    let linux = spec.linux().clone().unwrap_or_default();
    let wanted = linux.namespaces().clone().unwrap_or_default();
    let find = |t: LinuxNamespaceType| wanted.iter().find(|n| n.typ() == t);
    for ns in &wanted {
        if let Some(path) = ns.path() {
            crate::spec_check::namespace_path(ns.typ(), path)?;
        }
    }
    if find(LinuxNamespaceType::Mount).is_none_or(|n| n.path().is_some()) {
        return Err("a container without a new mount namespace".into());
    }
    let mut keep = Vec::new();
    for (typ, name) in [
        (LinuxNamespaceType::Network, "net"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
    ] {
        match find(typ) {
            None => keep.push(name),
            Some(ns) => {
                if let Some(path) = ns.path() {
                    c.set(&format!("lxc.namespace.share.{name}"), value(path)?)?;
                }
            }
        }
    }
    // A cgroup namespace is always made, even if the spec has none: LXC then mounts
    // the container's own cgroup at /sys/fs/cgroup, as runc does without one.
    if let Some(path) = find(LinuxNamespaceType::Cgroup).and_then(|n| n.path().clone()) {
        c.set("lxc.namespace.share.cgroup", value(path)?)?;
    }
    if let Some(path) = find(LinuxNamespaceType::Time).and_then(|n| n.path().clone()) {
        c.set("lxc.namespace.share.time", value(path)?)?;
    }
    let userns = match find(LinuxNamespaceType::User) {
        Some(ns) => {
            if let Some(path) = ns.path() {
                c.set("lxc.namespace.share.user", value(path)?)?;
            } else {
                for line in crate::backend::id_maps::lines(&linux)? {
                    c.set("lxc.idmap", line)?;
                }
            }
            UserNs::FromSpec
        }
        None if cfg.unprivileged => {
            for kind in ['u', 'g'] {
                c.set(
                    "lxc.idmap",
                    format!("{kind} 0 {} {}", cfg.id_base, cfg.id_count),
                )?;
            }
            UserNs::FromConfig
        }
        None => {
            // Without this LXC makes a user namespace with no mapping at all.
            keep.push("user");
            UserNs::Host
        }
    };
    if !keep.is_empty() {
        c.set("lxc.namespace.keep", keep.join(" "))?;
    }
    Ok(userns)
}

/// runc's cgroupfs paths: absolute from each hierarchy's root; none: nexcage/<id>.
fn cgroup_path(path: Option<&Path>, id: &str) -> Result<String, Refusal> {
    let Some(path) = path else {
        return Ok(format!("nexcage/{id}"));
    };
    let text = value(path)?;
    if text.contains(':') {
        return Err(format!(
            "linux.cgroupsPath {text:?} (systemd slice:prefix:name; this backend needs a cgroupfs path)"
        ));
    }
    let rel = text.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!("linux.cgroupsPath {text:?}"));
    }
    Ok(rel.to_string())
}

/// The spec's mounts: proc, sysfs, cgroup and /dev become LXC's own automatic mounts
/// (which set them up the way runc does); the rest mount entries, in order.
/// The spec's mounts as mount entries, in the spec's order (LXC mounts its entries in
/// order; its own /dev, automatic mounts and devpts would come first or last). Only
/// a cgroupfs at /sys/fs/cgroup expands: one mount per hierarchy of the host, as runc
/// lays it out (see `cgroupfs`).
fn mounts(
    spec: &Spec,
    idmapped: bool,
    cgroup: &str,
    tree: &mut Tree,
    c: &mut Conf,
) -> Result<Vec<String>, Refusal> {
    let mut readonly_later = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        let typ = m.typ().as_deref().unwrap_or("");
        let options = m.options().clone().unwrap_or_default();
        let ro = options.iter().any(|o| o == "ro");
        let bind = is_bind(m);
        if !dest.is_absolute() {
            return Err(format!("mount destination {dest:?} (not absolute)"));
        }
        let target = tree.resolve(dest)?;
        let mut bind_source = None;
        match (dest.to_str(), typ) {
            (Some("/sys/fs/cgroup"), "cgroup" | "cgroup2") => {
                if cgroupfs(ro, cgroup, &target, c)? && ro {
                    readonly_later.push(format!("/{}", value(&target)?));
                }
            }
            _ if bind => {
                c.set("lxc.mount.entry", bind_entry(m, idmapped, &target)?)?;
                bind_source = m.source().clone().filter(|s| s.is_dir());
            }
            _ => {
                let entry = fs_entry(m, &target)?;
                c.set("lxc.mount.entry", &entry)?;
                // After pivot_root LXC detaches whatever is mounted on /dev/pts
                // (lxc_setup_devpts_child, even with lxc.pty.max = 0): a second
                // devpts stacked on the spec's takes that, and the spec's stays
                // where the spec has it.
                if dest == Path::new("/dev/pts") && typ == "devpts" {
                    c.set("lxc.mount.entry", &entry)?;
                }
            }
        }
        tree.mounted(target, bind_source);
    }
    Ok(readonly_later)
}

/// runc's /sys/fs/cgroup: the container's own cgroup of each hierarchy (cgroup v2
/// alone, or, v1 and hybrid, a tmpfs with one per hierarchy), bound from the host
/// (LXC has made them before it mounts anything); `ro` read-only (init remounts the
/// tmpfs read-only at the end). Returns whether there is such a tmpfs.
fn cgroupfs(ro: bool, cgroup: &str, target: &Path, c: &mut Conf) -> Result<bool, Refusal> {
    let mode = if ro { "ro" } else { "rw" };
    let hierarchies =
        crate::supervise::join::hierarchies().map_err(|e| format!("/sys/fs/cgroup: {e}"))?;
    let top = Path::new("/sys/fs/cgroup");
    let bind = |point: &Path, c: &mut Conf| -> Result<(), Refusal> {
        let under = target.join(point.strip_prefix(top).unwrap_or(Path::new("")));
        c.set(
            "lxc.mount.entry",
            format!(
                "{} {} none rbind,{mode},nosuid,nodev,noexec,create=dir 0 0",
                fstab(point.join(cgroup))?,
                fstab(&under)?
            ),
        )?;
        Ok(())
    };
    if let [(point, key)] = &hierarchies[..]
        && point == top
        && key.is_empty()
    {
        bind(top, c)?;
        return Ok(false);
    }
    c.set(
        "lxc.mount.entry",
        format!(
            "tmpfs {} tmpfs rw,nosuid,nodev,noexec,mode=755,create=dir 0 0",
            fstab(target)?
        ),
    )?;
    for (point, _) in &hierarchies {
        if point.starts_with(top) && point != top {
            bind(point, c)?;
        }
    }
    Ok(true)
}

fn relative(dest: &Path) -> &Path {
    dest.strip_prefix("/").unwrap_or(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(patch: serde_json::Value) -> Spec {
        let mut v = serde_json::to_value(Spec::default()).unwrap();
        json_patch(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    fn json_patch(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    json_patch(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }

    fn translate_spec(s: &Spec, cfg: &LxcConfig) -> Result<Translation, Refusal> {
        let paths = Paths {
            rootfs: Path::new("/srv/rootfs"),
            runtime_dir: Path::new("/run/nexcage/backends/lxc/c1"),
            binary: Some(Path::new("/usr/bin/nexcage")),
        };
        translate(s, cfg, "c1", &paths)
    }

    #[test]
    fn default_spec() {
        let t = translate_spec(&Spec::default(), &LxcConfig::default()).unwrap();
        for line in [
            "lxc.rootfs.path = dir:/srv/rootfs",
            "lxc.init.cmd = /dev/.nexcage/nexcage init --dir /dev/.nexcage",
            // The spec's own /dev and devpts, in order; none of LXC's.
            "lxc.autodev = 0",
            "lxc.pty.max = 0",
            "lxc.mount.entry = proc proc proc defaults,create=dir 0 0",
            "lxc.mount.entry = /dev/null dev/null none bind,create=file 0 0",
            "lxc.cgroup.dir.container = nexcage/c1",
            "lxc.mount.entry = /run/nexcage/backends/lxc/c1 dev/.nexcage none ro,bind,create=dir 0 0",
            "lxc.mount.entry = /usr/bin/nexcage dev/.nexcage/nexcage none ro,bind 0 0",
            // No user namespace in the spec: LXC must not make one.
            "lxc.namespace.keep = user",
        ] {
            assert!(t.config.lines().any(|l| l == line), "{line}\n{}", t.config);
        }
        assert!(!t.config.contains("lxc.mount.auto"), "{}", t.config);
        let at = |needle: &str| t.config.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(
            at(" dev tmpfs ") < at(" dev/pts devpts ")
                && at(" dev/pts devpts ") < at(" sys sysfs ")
        );
        assert!(t.setup.dev_symlinks);
        assert_eq!(t.mount_point, "/dev/.nexcage");
    }

    #[test]
    fn engine_namespaces_and_limits() {
        let s = spec(serde_json::json!({
            "hostname": "web",
            "linux": {
                "namespaces": [{"type": "mount"}, {"type": "uts"},
                               {"type": "network", "path": "/proc/self/ns/net"}],
                "cgroupsPath": "/libpod_parent/libpod-abc",
                "resources": {"pids": {"limit": 50}},
                "sysctl": {"kernel.domainname": "example.org"}
            }
        }));
        let t = translate_spec(&s, &LxcConfig::default()).unwrap();
        for line in [
            "lxc.uts.name = web",
            "lxc.namespace.share.net = /proc/self/ns/net",
            "lxc.namespace.keep = pid ipc user",
            "lxc.cgroup.dir.container = libpod_parent/libpod-abc",
            "lxc.sysctl.kernel.domainname = example.org",
        ] {
            assert!(t.config.lines().any(|l| l == line), "{line}\n{}", t.config);
        }
        assert!(t.config.contains("pids.max = 50"), "{}", t.config);
    }

    #[test]
    fn unprivileged_maps_ids_and_idmaps_the_rootfs() {
        let cfg = LxcConfig {
            unprivileged: true,
            id_base: 200_000,
            id_count: 65_536,
            ..LxcConfig::default()
        };
        let t = translate_spec(&Spec::default(), &cfg).unwrap();
        assert!(t.config.contains("lxc.idmap = u 0 200000 65536\n"));
        assert!(t.config.contains("lxc.rootfs.options = idmap=container\n"));
        assert!(!t.config.contains("lxc.namespace.keep = user"));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                serde_json::json!({"linux": {"resources": {"blockIO": {"leafWeight": 10}}}}),
                "leafWeight",
            ),
            (
                serde_json::json!({"linux": {"cgroupsPath": "system.slice:nx:abc"}}),
                "cgroupsPath",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}}),
                "mount namespace",
            ),
            (
                serde_json::json!({"hostname": "x\nlxc.include = /etc/evil"}),
                "line break",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"},
                    {"type": "network", "path": "/proc/self/ns/uts"}]}}),
                "is not a network namespace",
            ),
            (
                serde_json::json!({"linux": {"sysctl": {"kernel.core_pattern": "|/x"}}}),
                "not in a separate kernel namespace",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}],
                    "sysctl": {"net.ipv4.ip_forward": "1"}}}),
                "host's network namespace",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "uts"},
                    {"type": "network", "path": "/proc/self/ns/net"}],
                    "sysctl": {"net.ipv4.ip_forward": "1"}}}),
                "host's network namespace",
            ),
        ];
        for (patch, word) in cases {
            let err = translate_spec(&spec(patch.clone()), &LxcConfig::default())
                .err()
                .unwrap_or_else(|| panic!("{patch} accepted"));
            assert!(err.contains(word), "{patch}: {err}");
        }
    }
}
