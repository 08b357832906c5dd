//! The spec's device nodes in a container whose manager cannot make them (LXC): binds
//! of the host's identical node, for the lxc backend's config and a Proxmox CT's raw
//! mount entries.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceType, Spec};

use crate::backend::genconf::{LxcConf as Conf, Refusal};
use crate::backend::in_root::Tree;
use crate::backend::mount_entry::fstab;

/// runc's devices of every container with a /dev of its own.
const DEFAULT_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The spec's device nodes (and, in a /dev of the container's own, runc's default
/// ones), bound from the host's identical node; anything else cannot be made in place
/// and is refused.
pub fn devices(spec: &Spec, own_dev: bool, tree: &Tree, c: &mut Conf) -> Result<(), Refusal> {
    let linux = spec.linux().clone().unwrap_or_default();
    let listed = linux.devices().clone().unwrap_or_default();
    if own_dev {
        for path in DEFAULT_DEVICES {
            if !listed.iter().any(|d| d.path() == Path::new(path)) {
                let target = tree.resolve(Path::new(path))?;
                c.set(
                    "lxc.mount.entry",
                    format!("{path} {} none bind,create=file 0 0", fstab(&target)?),
                )?;
            }
        }
    }
    for d in &listed {
        // /dev/ptmx is init's symlink to the container's devpts; /dev/console and
        // /dev/pts/* are the container's own (podman --privileged lists them all).
        if d.path() == Path::new("/dev/ptmx")
            || d.path() == Path::new("/dev/console")
            || d.path().starts_with("/dev/pts")
        {
            continue;
        }
        let (want_char, want_block) = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => (true, false),
            LinuxDeviceType::B => (false, true),
            _ => {
                return Err(format!(
                    "device {:?} (not a char or block device)",
                    d.path()
                ));
            }
        };
        let host = std::fs::metadata(d.path()).ok().filter(|meta| {
            let t = meta.file_type();
            let rdev = meta.rdev();
            (t.is_char_device() == want_char && t.is_block_device() == want_block)
                && libc::major(rdev) as i64 == d.major()
                && libc::minor(rdev) as i64 == d.minor()
        });
        if host.is_none() {
            return Err(format!(
                "device {:?} {}:{} (no identical node on the host to bind)",
                d.path(),
                d.major(),
                d.minor()
            ));
        }
        c.set(
            "lxc.mount.entry",
            format!(
                "{} {} none bind,create=file 0 0",
                fstab(d.path())?,
                fstab(tree.resolve(d.path())?)?
            ),
        )?;
    }
    Ok(())
}
