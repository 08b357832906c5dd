//! The guest's initramfs: nexcage itself as `/init` (run as `guest-init`, see
//! `supervise::guest`) and the kernel modules it loads, in dependency order, from a
//! kernel's `modules.dep`. Uncompressed newc: the kernel unpacks it fastest, and it
//! is made once per kernel and nexcage binary.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// What a guest needs: the console and the relay's port (virtio-serial), the rootfs
/// in place (virtiofs), and vsock.
pub const GUEST_MODULES: [&str; 5] = [
    "virtio_pci",
    "virtio_console",
    "virtiofs",
    "virtio_net",
    "vmw_vsock_virtio_transport",
];

pub use crate::supervise::guest::MODULE_DIR;

/// The files of `names` and of what they depend on, each after its dependencies,
/// from `<modules>/modules.dep` (as `depmod` writes it: `path: dep dep...`, paths
/// relative to `modules`). A module built into the kernel is not there, and needs
/// nothing: it is skipped if `modules.builtin` names it.
pub fn resolve(modules: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let read = |file: &str| {
        let path = modules.join(file);
        std::fs::read_to_string(&path).context(|| format!("read {}", path.display()))
    };
    let dep = read("modules.dep")?;
    let builtin = read("modules.builtin").unwrap_or_default();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(module_name(path), (path.to_string(), list));
    }
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    let mut order: Vec<String> = Vec::new();
    for name in names {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            continue;
        }
        let (path, list) = deps.get(&name).ok_or_else(|| Error::Backend {
            backend: "qm".into(),
            reason: format!("kernel module {name} not found in {}", modules.display()),
        })?;
        // depmod lists a module's dependencies so that loading them last-first works.
        for d in list.iter().rev().chain(std::iter::once(path)) {
            if !order.contains(d) {
                order.push(d.clone());
            }
        }
    }
    Ok(order.into_iter().map(|p| modules.join(p)).collect())
}

/// `kernel/drivers/virtio/virtio_pci.ko[.xz]` -> `virtio_pci`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).replace('-', "_")
}

/// Writes the initramfs to `out`: `/init` (a copy of `init`), the directories init
/// mounts on, and `/modules/NN-<file>` for each of `modules`, in order.
pub fn build(out: &Path, init: &Path, modules: &[PathBuf]) -> Result<()> {
    use cpio::newc::{Builder, ModeFileType};
    let mut w = File::create(out).context(|| format!("create {}", out.display()))?;
    let mut ino = 1;
    let mut next = || {
        ino += 1;
        ino
    };
    let io = |e: std::io::Error| Error::io(format!("write {}", out.display()), e);
    for dir in ["dev", "proc", "sys", "run", MODULE_DIR] {
        Builder::new(dir)
            .ino(next())
            .mode(0o755)
            .set_mode_file_type(ModeFileType::Directory)
            .nlink(2)
            .write(&mut w, 0)
            .finish()
            .map_err(io)?;
    }
    // The kernel opens /dev/console for init's stdio before any devtmpfs exists.
    Builder::new("dev/console")
        .ino(next())
        .mode(0o600)
        .set_mode_file_type(ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1)
        .nlink(1)
        .write(&mut w, 0)
        .finish()
        .map_err(io)?;
    let mut file = |name: String, source: &Path, mode: u32| -> Result<()> {
        let mut input = File::open(source).context(|| format!("open {}", source.display()))?;
        let len = input.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        input.rewind().map_err(io)?;
        let len = u32::try_from(len)
            .map_err(|_| Error::Usage(format!("{} is too large", source.display())))?;
        let mut fp = Builder::new(&name)
            .ino(next())
            .mode(mode)
            .set_mode_file_type(ModeFileType::Regular)
            .nlink(1)
            .write(&mut w, len);
        std::io::copy(&mut input, &mut fp).map_err(io)?;
        fp.finish().map_err(io)?;
        Ok(())
    };
    file("init".into(), init, 0o755)?;
    for (i, module) in modules.iter().enumerate() {
        let base = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        file(format!("{MODULE_DIR}/{i:02}-{base}"), module, 0o644)?;
    }
    cpio::newc::trailer(&mut w).map_err(io)?;
    w.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_builtins_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/a/virtio.ko: kernel/a/virtio_ring.ko\n\
             kernel/a/virtio_ring.ko:\n\
             kernel/a/virtio_pci.ko: kernel/a/virtio_pci_modern_dev.ko kernel/a/virtio.ko kernel/a/virtio_ring.ko\n\
             kernel/a/virtio_pci_modern_dev.ko:\n\
             kernel/a/virtio_console.ko: kernel/a/virtio.ko kernel/a/virtio_ring.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/fuse/fuse.ko\n",
        )
        .unwrap();
        let got = resolve(dir.path(), &["virtio_pci", "virtio-console", "fuse"]).unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "virtio_console"
            ]
        );
        assert!(resolve(dir.path(), &["nosuch"]).is_err());
    }
}
