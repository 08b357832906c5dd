//! The VM guest's boot path and relay, on real QEMU (TCG here: this machine's
//! /dev/kvm cannot boot a guest kernel): the guest kernel hack/setup.sh unpacks, the
//! initramfs nexcage builds, nexcage itself as PID 1, the bundle's rootfs shared in
//! place with virtiofs, and the framed channel over one virtio-serial port carrying a
//! process's stdin, stdout, stderr and exit status.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{nexcage, repo};
use nexcage::backend::qm::initramfs;
use nexcage::supervise::guest::GuestSetup;
use nexcage::supervise::guest::{RELAY_PORT, ROOTFS_TAG};
use nexcage::supervise::host::FsMount;
use nexcage::supervise::vm_relay;

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn guest_runs_a_process_from_the_rootfs_in_place() {
    let kernel = repo().join("bundles/vm-kernel");
    assert!(
        kernel.join("vmlinuz").exists(),
        "{} missing: run hack/setup.sh",
        kernel.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let modules = initramfs::resolve(&kernel.join("modules"), &initramfs::GUEST_MODULES).unwrap();
    let image = dir.path().join("initramfs.cpio");
    initramfs::build(&image, Path::new(nexcage()), &modules).unwrap();

    // The rootfs in place: what the guest writes lands in it.
    let rootfs = common::rootfs();
    let virtiofsd = ["/usr/libexec/virtiofsd", "/usr/local/bin/virtiofsd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("virtiofsd (hack/setup.sh builds it)");
    let fs_socket = dir.path().join("fs.sock");
    let _virtiofsd = Killed(
        Command::new(virtiofsd)
            .arg("--socket-path")
            .arg(&fs_socket)
            .arg("--shared-dir")
            .arg(&rootfs)
            .args(["--cache", "never", "--sandbox", "chroot"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&fs_socket);
    let relay = dir.path().join("relay.sock");
    let console = dir.path().join("console");
    let started = Instant::now();
    let qemu = Command::new("qemu-system-x86_64")
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
        .args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!("socket,id=fs,path={}", fs_socket.display()))
        .args([
            "-device",
            &format!("vhost-user-fs-pci,chardev=fs,tag={ROOTFS_TAG}"),
        ])
        .args(["-device", "virtio-serial-pci,id=vs"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=relay,path={},server=on,wait=off",
            relay.display()
        ))
        .args([
            "-device",
            &format!("virtserialport,bus=vs.0,chardev=relay,name={RELAY_PORT}"),
        ])
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 quiet panic=-1 -- guest-init"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .spawn()
        .expect("qemu-system-x86_64 (hack/setup.sh installs it)");
    let mut qemu = Killed(qemu);
    wait_for_socket(&relay);
    let channel = vm_relay::Channel::new(UnixStream::connect(&relay).unwrap()).unwrap();
    let file = |name: &str| dir.path().join(name);
    let fs = |dest: &str, fstype: &str| FsMount {
        destination: dest.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        options: vec!["nosuid".into(), "nodev".into()],
        staged: false,
    };
    // Device nodes must work in /dev (and through the /dev/null that masks).
    let dev = FsMount {
        options: vec!["nosuid".into()],
        ..fs("dev", "devtmpfs")
    };
    let mut setup = GuestSetup {
        hostname: Some("in-vm".into()),
        mounts: vec![fs("proc", "proc"), dev, fs("tmp", "tmpfs")],
        ..GuestSetup::default()
    };
    setup.setup.readonly_root = true;
    setup.setup.masked_paths = vec!["/proc/version".into()];
    vm_relay::setup(&channel, &setup).unwrap();
    // A missing program first: runc's words and 127, the guest still serving.
    let missing = serde_json::json!({
        "args": ["nosuchcmd"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
    });
    let io = vm_relay::Stdio {
        stdin: None,
        stdout: std::fs::File::create(file("out1")).unwrap(),
        stderr: std::fs::File::create(file("err1")).unwrap(),
    };
    let as_process = |v: &serde_json::Value| vm_relay::GuestProcess {
        process: serde_json::from_value(v.clone()).unwrap(),
        seccomp: None,
        window: None,
    };
    let status = vm_relay::run(&channel, 1, &as_process(&missing), io).unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    });
    assert_eq!(status, 127 << 8);
    assert_eq!(
        std::fs::read_to_string(file("err1")).unwrap(),
        "exec: \"nosuchcmd\": executable file not found in $PATH\n"
    );
    // The workload: its user, stdin, stdout, stderr and exit status.
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo out; echo err >&2; cat; id -u; hostname; \
            test -e /proc/self/status && echo proc; wc -c < /proc/version; \
            touch /tmp/x && echo tmp-rw; touch /x 2>/dev/null || echo root-ro; exit 3"],
        "env": ["PATH=/bin:/usr/bin"],
        "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000},
    });
    std::fs::write(file("stdin"), "piped\n").unwrap();
    let io = vm_relay::Stdio {
        stdin: Some(std::fs::File::open(file("stdin")).unwrap()),
        stdout: std::fs::File::create(file("stdout")).unwrap(),
        stderr: std::fs::File::create(file("stderr")).unwrap(),
    };
    let status = vm_relay::run(&channel, 0, &as_process(&process), io).unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    });
    let stdout = std::fs::read(file("stdout")).unwrap();
    let stderr = std::fs::read(file("stderr")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while qemu.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("boot to power-off: {:?}", started.elapsed());
    let text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(
        (
            String::from_utf8_lossy(&stdout).as_ref(),
            String::from_utf8_lossy(&stderr).as_ref(),
            status
        ),
        (
            "out\npiped\n1000\nin-vm\nproc\n0\ntmp-rw\nroot-ro\n",
            "err\n",
            3 << 8
        ),
        "{text}"
    );
    assert!(text.contains("nexcage guest-init: loaded"), "{text}");
}
