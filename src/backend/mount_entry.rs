//! LXC's mount entries (`lxc.mount.entry`, fstab syntax with LXC's own options), as
//! the lxc backend writes them into its config and the pct backend into a CT's raw
//! `lxc.*` keys. Targets are given resolved inside the rootfs (`in_root`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::genconf::{self, Refusal};

/// A spec value as text: LXC's config is text, so a path that is not UTF-8 cannot be
/// written as it is (the writer checks the rest).
pub fn value(v: impl AsRef<std::ffi::OsStr>) -> Result<String, Refusal> {
    let v = v.as_ref();
    v.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("a value that is not UTF-8 ({v:?})"))
}

/// A path in an fstab-style mount entry.
pub fn fstab(p: impl AsRef<std::ffi::OsStr>) -> Result<String, Refusal> {
    genconf::fstab_field("mount path", &value(p)?)
}

/// A bind mount, however the spec says it (`type: bind`, or a `bind`/`rbind` option).
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Mount options LXC understands; anything else is filesystem data (size=, mode=),
/// which LXC passes to mount(2) as runc does.
pub fn mount_options(options: &[String]) -> Result<String, Refusal> {
    // LXC's own options, which it finds anywhere in the field (conf.c
    // `parse_lxc_mount_attrs` uses strstr): inside another option they are still its
    // own (`idmap=<path>` is a user namespace LXC opens as root on the host). crun's
    // `idmap` is among them.
    const LXC_OWN: [&str; 4] = ["create=", "optional", "relative", "idmap"];
    let mut out = Vec::new();
    for o in options {
        if o.contains([',', ' ', '\t', '\n']) || LXC_OWN.iter().any(|w| o.contains(w)) {
            return Err(format!("mount option {o:?}"));
        }
        // crun's `tmpcopyup` (podman's /tmp, /run with --read-only): the tmpfs
        // starts empty instead, which hides nothing the container could not see.
        if o == "tmpcopyup" {
            continue;
        }
        // Other crun extensions and SELinux relabelling have no LXC equivalent.
        if matches!(o.as_str(), "copy-symlink" | "z" | "Z" | "U") {
            return Err(format!("mount option {o:?}"));
        }
        out.push(o.as_str());
    }
    if out.is_empty() {
        out.push("defaults");
    }
    Ok(out.join(","))
}

/// A bind of the spec's source at `target`: recursive unless the spec says `bind`,
/// the target made as a directory or a file like the source; `idmapped` for an
/// id-mapped mount in the container's user namespace.
pub fn bind_entry(m: &Mount, idmapped: bool, target: &Path) -> Result<String, Refusal> {
    let source = m
        .source()
        .clone()
        .ok_or_else(|| format!("bind mount on {:?} without a source", m.destination()))?;
    let options = m.options().clone().unwrap_or_default();
    let mut opts = mount_options(&options)?;
    if !options.iter().any(|o| o == "bind" || o == "rbind") {
        opts.push_str(",rbind");
    }
    let is_dir = std::fs::metadata(&source)
        .map(|m| m.is_dir())
        .unwrap_or(true);
    opts.push_str(if is_dir {
        ",create=dir"
    } else {
        ",create=file"
    });
    if idmapped {
        opts.push_str(",idmap=container");
    }
    Ok(format!(
        "{} {} none {opts} 0 0",
        fstab(&source)?,
        fstab(target)?
    ))
}

/// A filesystem mount (tmpfs, proc, ...) at `target`, its directory made if missing.
pub fn fs_entry(m: &Mount, target: &Path) -> Result<String, Refusal> {
    let typ = m.typ().as_deref().unwrap_or("");
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let options = m.options().clone().unwrap_or_default();
    Ok(format!(
        "{} {} {} {},create=dir 0 0",
        fstab(&source)?,
        fstab(target)?,
        fstab(typ)?,
        mount_options(&options)?
    ))
}
