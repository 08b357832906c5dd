//! The VM guest's boot path, on real QEMU (TCG here: this machine's /dev/kvm cannot
//! boot a guest kernel): the guest kernel hack/setup.sh unpacks, the initramfs nexcage
//! builds, and nexcage itself as PID 1 loading the virtio modules and powering off.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{nexcage, repo};
use nexcage::backend::qm::initramfs;

#[test]
fn guest_boots_into_nexcage_and_powers_off() {
    let kernel = repo().join("bundles/vm-kernel");
    assert!(
        kernel.join("vmlinuz").exists(),
        "{} missing: run hack/setup.sh",
        kernel.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let modules = initramfs::resolve(&kernel.join("modules"), &initramfs::GUEST_MODULES).unwrap();
    let image = dir.path().join("initramfs.cpio");
    initramfs::build(&image, std::path::Path::new(nexcage()), &modules).unwrap();
    let console = dir.path().join("console");
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc,accel=tcg",
            "-m",
            "512",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-boot", "menu=off"])
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 quiet panic=-1 -- guest-init"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .spawn()
        .expect("qemu-system-x86_64 (hack/setup.sh installs it)");
    let deadline = started + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = qemu.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            panic!(
                "the guest did not power off: {}",
                std::fs::read_to_string(&console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&console).unwrap();
    eprintln!("boot to power-off: {:?}", started.elapsed());
    assert!(status.success(), "qemu: {status}\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("nexcage guest-init:"))
        .unwrap_or_else(|| panic!("no word from init:\n{text}"));
    for module in ["virtio_pci.ko", "virtio_console.ko", "virtiofs.ko"] {
        assert!(line.contains(module), "{line}");
    }
}
