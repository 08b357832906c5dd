//! PID 1 of a VM guest: `nexcage guest-init`, which the kernel runs as `/init` from
//! the initramfs nexcage builds (`backend::qm::initramfs`; the kernel passes what
//! follows `--` on its command line as init's arguments). It mounts the kernel's
//! filesystems and loads the modules the guest needs, in the initramfs's order.
//! What follows (the rootfs shared in place, the relay to the holder over
//! virtio-serial) builds on this.

use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};

use crate::backend::qm::initramfs::MODULE_DIR;
use crate::error::{Error, Result};

/// Mounts /proc, /sys and /dev and loads the modules; returns their file names.
pub fn boot() -> Result<Vec<String>> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        mount(Some(fstype), target, Some(fstype), flags, None::<&str>)
            .map_err(|e| Error::Usage(format!("mount {fstype} on {target}: {e}")))?;
    }
    let dir = Path::new("/").join(MODULE_DIR);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(format!("read {}", dir.display()), e))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut loaded = Vec::new();
    for path in files {
        let file = std::fs::File::open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match nix::kmod::finit_module(file.as_fd(), c"", nix::kmod::ModuleInitFlags::empty()) {
            // Built in after all, or loaded as another's dependency.
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(Error::Usage(format!("load {}: {e}", path.display())));
            }
        }
        loaded.push(
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
    }
    Ok(loaded)
}

/// Powers the guest off: with PID 1 gone the kernel would panic instead.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached if the reboot call failed.
    std::process::exit(1)
}
