//! PID 1 of a VM guest: `nexcage guest-init`, which the kernel runs as `/init` from
//! the initramfs nexcage builds (`backend::qm::initramfs`; the kernel passes what
//! follows `--` on its command line as init's arguments). It mounts the kernel's
//! filesystems and loads the modules the guest needs, in the initramfs's order.
//! What follows (the rootfs shared in place, the relay to the holder over
//! virtio-serial) builds on this.

use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::host::FsMount;

use crate::error::{Error, Result};

/// Where the initramfs holds the modules guest-init loads, in the order of their
/// names (see `backend::qm::initramfs`).
pub const MODULE_DIR: &str = "modules";

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

/// The virtio-serial port the holder's relay is on (`virtserialport,name=…`).
pub const RELAY_PORT: &str = "org.nexcage.relay";
/// The virtiofs tag of the container's rootfs, shared in place.
pub const ROOTFS_TAG: &str = "rootfs";
/// Where the guest mounts it (in the initramfs's own tree).
const ROOTFS: &str = "/run/rootfs";

/// How the guest makes the container in the rootfs before the workload starts: what a
/// container manager does elsewhere (LXC for lxc and pct).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuestSetup {
    pub hostname: Option<String>,
    /// The spec's filesystem mounts, in its order; each destination resolved inside
    /// the rootfs by the host beforehand (`backend::in_root`), relative.
    pub mounts: Vec<super::host::FsMount>,
    /// Masked and read-only paths, read-only root, sysctls: as init does them in a
    /// supervised container.
    pub setup: super::host::Setup,
    /// How many host directories are shared besides the rootfs (virtiofs tags
    /// `nxshare<N>`): the sources of bind mounts (`fstype` "bind", `source`
    /// `<N>/<path in the share>`).
    #[serde(default)]
    pub shares: usize,
    /// `linux.resources.pids.limit`: the container's processes go into a cgroup of
    /// the guest's with this `pids.max`.
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// The VM's NICs are Proxmox's own (on a bridge, addressed by whoever runs there):
    /// up, as they are.
    #[serde(default)]
    pub nics_up: bool,
}

/// The virtiofs tag of the `n`th share of bind sources.
pub fn share_tag(n: usize) -> String {
    format!("nxshare{n}")
}

/// Where the guest mounts the shares, out of the container's reach once it is made.
const SHARES: &str = "/run/shares";

/// Where the guest keeps its own cgroup2 (out of the container's reach).
const CGROUPS: &str = "/run/cgroup";

/// The container's cgroup in the guest, with the spec's limits; returns its
/// `cgroup.procs`, open, for each process to move itself into.
fn container_cgroup(g: &GuestSetup) -> Result<std::fs::File> {
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} in {CGROUPS}"), e);
    std::fs::create_dir_all(CGROUPS).map_err(|e| io("mkdir", e))?;
    mount(
        Some("cgroup2"),
        CGROUPS,
        Some("cgroup2"),
        MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|e| Error::Usage(format!("mount cgroup2: {e}")))?;
    let top = Path::new(CGROUPS);
    std::fs::write(top.join("cgroup.subtree_control"), "+pids")
        .map_err(|e| io("enable pids", e))?;
    let dir = top.join("container");
    std::fs::create_dir_all(&dir).map_err(|e| io("mkdir", e))?;
    if let Some(limit) = g.pids_limit {
        std::fs::write(dir.join("pids.max"), limit.to_string())
            .map_err(|e| io("write pids.max", e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| io("open cgroup.procs", e))
}

/// Makes the container: the mounts inside the rootfs, the rootfs as `/` (moved over
/// the initramfs's, which cannot be pivoted away), then the confinements.
fn make_container(root: &Path, g: &GuestSetup) -> Result<()> {
    if let Some(name) = g.hostname.as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name).map_err(|e| Error::Usage(format!("sethostname: {e}")))?;
    }
    super::vm_net::loopback_up()?;
    if g.nics_up {
        super::vm_net::nics_up()?;
    }
    for n in 0..g.shares {
        let at = Path::new(SHARES).join(n.to_string());
        std::fs::create_dir_all(&at)
            .map_err(|e| Error::io(format!("mkdir {}", at.display()), e))?;
        mount(
            Some(share_tag(n).as_str()),
            &at,
            Some("virtiofs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| Error::Usage(format!("mount share {n}: {e}")))?;
    }
    for m in &g.mounts {
        let relative = Path::new(&m.destination);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::Usage(format!(
                "mount destination {:?}: not resolved inside the rootfs",
                m.destination
            )));
        }
        if m.fstype == "bind" {
            bind_from_share(&Path::new(SHARES).join(&m.source), &root.join(relative), m)?;
            continue;
        }
        let at = FsMount {
            destination: root.join(relative).to_string_lossy().into_owned(),
            ..m.clone()
        };
        super::confine::mount_fs(&at)?;
    }
    // Reachable only through the binds from here on.
    for n in 0..g.shares {
        let at = Path::new(SHARES).join(n.to_string());
        let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
    }
    let fail = |what: &str, e: nix::errno::Errno| Error::Usage(format!("{what}: {e}"));
    if g.setup.dev_symlinks {
        default_devices(&root.join("dev"))?;
    }
    nix::unistd::chdir(root).map_err(|e| fail("chdir to the rootfs", e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| fail("move the rootfs to /", e))?;
    nix::unistd::chroot(".").map_err(|e| fail("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))?;
    super::confine::apply(&g.setup)
}

/// A bind mount of the spec's, from a share: the target made as the source is (a
/// file or a directory), then the spec's restricting options.
fn bind_from_share(source: &Path, target: &Path, m: &FsMount) -> Result<()> {
    if m.source.split('/').any(|c| c == "..") {
        return Err(Error::Usage(format!("bind source {:?}", m.source)));
    }
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", target.display()), e);
    if source.is_dir() {
        std::fs::create_dir_all(target).map_err(|e| io("mkdir", e))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("mkdir", e))?;
        }
        if std::fs::symlink_metadata(target).is_err() {
            std::fs::File::create(target).map_err(|e| io("create", e))?;
        }
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Usage(format!(
            "bind {} on {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    super::confine::restrict(target, &m.options)
}

/// runc's device nodes of every container with a /dev of its own (a tmpfs: the
/// VM's devtmpfs would show the container the relay's port too).
fn default_devices(dev: &Path) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        let mode = Mode::from_bits_truncate(0o666);
        match mknod(&path, SFlag::S_IFCHR, mode, makedev(major, minor)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(Error::Usage(format!("mknod {}: {e}", path.display()))),
        }
        // The umask took some bits.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
    }
    Ok(())
}

/// The device of the port named `name` (no udev here to make /dev/virtio-ports).
fn find_port(name: &str) -> Result<std::path::PathBuf> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/sys/class/virtio-ports")
            .into_iter()
            .flatten()
            .flatten()
        {
            let named = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
            if named.trim_end() == name {
                return Ok(Path::new("/dev").join(entry.file_name()));
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Usage(format!("no virtio-serial port named {name}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Mounts the rootfs, then runs the processes the holder starts over the relay,
/// passing their stdio and exit status, until the first (the workload) has ended and
/// the holder has acknowledged its exit.
pub fn serve() -> Result<()> {
    std::fs::create_dir_all(ROOTFS).map_err(|e| Error::io(format!("mkdir {ROOTFS}"), e))?;
    mount(
        Some(ROOTFS_TAG),
        ROOTFS,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::Usage(format!("mount the rootfs (virtiofs {ROOTFS_TAG}): {e}")))?;
    let port = find_port(RELAY_PORT)?;
    let channel = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&port)
        .map_err(|e| Error::io(format!("open {}", port.display()), e))?;
    let mut last_word = channel
        .try_clone()
        .map_err(|e| Error::io(format!("open {}", port.display()), e))?;
    let served = relay::Relay::new(channel, Path::new(ROOTFS)).run();
    if let Err(e) = &served {
        let text = e.to_string().into_bytes();
        let _ = super::frames::write(&mut last_word, &super::frames::Frame::Error { text });
    }
    served
}

mod relay {
    //! The guest's end of the frames (see `supervise::frames`).

    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::path::{Path, PathBuf};

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use crate::error::{Error, Result};
    use crate::supervise::frames::{self, Decoder, Frame};

    /// What a process becomes (see `init::enter`).
    struct Launch {
        args: Vec<std::ffi::OsString>,
        env: Vec<String>,
        cwd: String,
        identity: crate::supervise::identity::Identity,
        oom_score_adj: Option<i32>,
    }

    struct Running {
        id: u32,
        pid: nix::unistd::Pid,
        /// The pty master of a process with a terminal (its size is set there).
        tty: Option<std::os::fd::OwnedFd>,
        stdin: Option<File>,
        /// stdout, stderr while open.
        outputs: [Option<File>; 2],
        status: Option<i32>,
    }

    pub struct Relay {
        channel: File,
        root: PathBuf,
        decoder: Decoder,
        procs: Vec<Running>,
        /// The workload's exit was sent; waiting for the holder's ack.
        exited: Option<u32>,
        /// The container is made (the rootfs is `/`).
        made: bool,
        /// The workload has ended, and with it every other process.
        ended: bool,
        /// The container's `cgroup.procs` (see `container_cgroup`).
        cgroup: Option<File>,
    }

    impl Relay {
        pub fn new(channel: File, root: &Path) -> Relay {
            Relay {
                channel,
                root: root.to_path_buf(),
                decoder: Decoder::default(),
                procs: Vec::new(),
                exited: None,
                made: false,
                ended: false,
                cgroup: None,
            }
        }

        fn send(&mut self, frame: &Frame) -> Result<()> {
            frames::write(&mut self.channel, frame).map_err(|e| Error::io("write the relay", e))
        }

        pub fn run(mut self) -> Result<()> {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let mut fds = vec![PollFd::new(self.channel.as_fd(), PollFlags::POLLIN)];
                for p in &self.procs {
                    for out in p.outputs.iter().flatten() {
                        fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
                    }
                }
                poll(&mut fds, PollTimeout::from(50u16))
                    .map_err(|e| Error::io("poll", e.into()))?;
                let ready: Vec<bool> = fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                drop(fds);
                if ready[0] {
                    // Before the holder connects, and after it leaves, a read gives 0.
                    let n = self
                        .channel
                        .read(&mut buf)
                        .map_err(|e| Error::io("read the relay", e))?;
                    if n == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    self.decoder.push(&buf[..n]);
                    while let Some(frame) = self
                        .decoder
                        .next_frame()
                        .map_err(|e| Error::io("relay frame", e))?
                    {
                        if self.handle(frame)? {
                            return Ok(());
                        }
                    }
                }
                self.pump_outputs(&ready[1..], &mut buf)?;
                self.reap()?;
            }
        }

        /// Acts on one frame from the holder; true once the workload's exit is acked.
        fn handle(&mut self, frame: Frame) -> Result<bool> {
            match frame {
                Frame::Setup { spec } => {
                    let setup: super::GuestSetup = serde_json::from_slice(&spec)
                        .map_err(|e| Error::Usage(format!("setup: {e}")))?;
                    self.make(&setup)?;
                    self.send(&Frame::Ack {
                        process: crate::supervise::vm_relay::SETUP_DONE,
                    })?;
                }
                Frame::Network { spec } => {
                    let net: crate::supervise::vm_net::NetSetup = serde_json::from_slice(&spec)
                        .map_err(|e| Error::Usage(format!("network: {e}")))?;
                    crate::supervise::vm_net::apply(&net)?;
                    self.send(&Frame::Ack {
                        process: crate::supervise::vm_relay::NETWORK_DONE,
                    })?;
                }
                Frame::Start { process, spec } => {
                    let started = self
                        .make(&super::GuestSetup::default())
                        .and_then(|()| self.start(process, &spec));
                    if let Err(e) = started {
                        let text = format!("nexcage: {e}\n").into_bytes();
                        self.send(&Frame::Data {
                            process,
                            fd: 2,
                            bytes: text,
                        })?;
                        self.send(&Frame::Exit {
                            process,
                            status: 127 << 8,
                        })?;
                        if process == 0 {
                            self.exited = Some(0);
                        }
                    }
                }
                Frame::Data { process, bytes, .. } => {
                    if let Some(stdin) = self.find(process).and_then(|p| p.stdin.as_mut()) {
                        // A process that stopped reading its stdin loses it, as with a pipe.
                        let _ = stdin.write_all(&bytes);
                    }
                }
                Frame::Eof { process, .. } => {
                    if let Some(p) = self.find(process) {
                        p.stdin = None;
                    }
                }
                Frame::Signal { process, signal } => {
                    if process == crate::supervise::vm_relay::ALL_PROCESSES {
                        // SAFETY: kill(2) of every process but ourselves (PID 1).
                        unsafe { libc::kill(-1, signal) };
                    } else if let Some(p) = self.find(process) {
                        // SAFETY: kill(2) on our own child.
                        unsafe { libc::kill(p.pid.as_raw(), signal) };
                    }
                }
                Frame::Ack { process } => return Ok(self.exited == Some(process)),
                Frame::Ps { process } => {
                    let list = crate::supervise::guest_ps::answer();
                    self.send(&Frame::Processes { process, list })?;
                }
                Frame::Resize {
                    process,
                    rows,
                    cols,
                } => {
                    if let Some(tty) = self.find(process).and_then(|p| p.tty.as_ref()) {
                        let size = libc::winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ on a pty master we hold, from a local.
                        unsafe {
                            libc::ioctl(
                                std::os::fd::AsRawFd::as_raw_fd(tty),
                                libc::TIOCSWINSZ,
                                &size,
                            )
                        };
                    }
                }
                Frame::Exit { .. } | Frame::Error { .. } | Frame::Processes { .. } => {}
            }
            Ok(false)
        }

        /// Makes the container once (a start without a setup gets the bare rootfs).
        fn make(&mut self, setup: &super::GuestSetup) -> Result<()> {
            if !self.made {
                self.cgroup = Some(super::container_cgroup(setup)?);
                super::make_container(&self.root, setup)?;
                self.made = true;
            }
            Ok(())
        }

        fn find(&mut self, id: u32) -> Option<&mut Running> {
            self.procs.iter_mut().find(|p| p.id == id)
        }

        /// Forks process `id`, which becomes the spec's process in the container
        /// as a supervised container's does (`init::enter`: cwd, PATH lookup with
        /// runc's words, rlimits, capabilities, no_new_privileges, uid/gid), its stdio
        /// pipes to us.
        fn start(&mut self, id: u32, spec: &[u8]) -> Result<()> {
            use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe};
            let guest: crate::supervise::vm_relay::GuestProcess =
                serde_json::from_slice(spec).map_err(|e| Error::Usage(format!("process: {e}")))?;
            let process = guest.process;
            let args: Vec<std::ffi::OsString> =
                process.args().iter().flatten().map(Into::into).collect();
            let env = process.env().clone().unwrap_or_default();
            let cwd = process.cwd().to_string_lossy().into_owned();
            let oom_score_adj = process.oom_score_adj();
            let mut identity = crate::supervise::identity::Identity::from_process(&process);
            identity.seccomp = match guest.seccomp.as_deref() {
                Some(bytes) => Some(crate::supervise::seccomp::Program::from_bytes(bytes)?),
                None => None,
            };
            let launch = Launch {
                args,
                env,
                cwd,
                identity,
                oom_score_adj,
            };
            if process.terminal() == Some(true) {
                return self.start_with_terminal(id, launch, guest.window);
            }
            let io = |e: nix::errno::Errno| Error::io("pipe", e.into());
            let (in_r, in_w) = pipe().map_err(io)?;
            let (out_r, out_w) = pipe().map_err(io)?;
            let (err_r, err_w) = pipe().map_err(io)?;
            // SAFETY: guest-init has one thread; the child only sets up and execs.
            match unsafe { fork() }.map_err(io)? {
                ForkResult::Child => {
                    let _ = (dup2_stdin(&in_r), dup2_stdout(&out_w), dup2_stderr(&err_w));
                    drop((in_r, in_w, out_r, out_w, err_r, err_w));
                    self.become_process(launch)
                }
                ForkResult::Parent { child } => {
                    drop((in_r, out_w, err_w));
                    self.procs.push(Running {
                        id,
                        pid: child,
                        tty: None,
                        stdin: Some(File::from(in_w)),
                        outputs: [Some(File::from(out_r)), Some(File::from(err_r))],
                        status: None,
                    });
                    Ok(())
                }
            }
        }

        /// The forked child's end, its stdio in place: into the container's cgroup,
        /// then the process (the rootfs is our `/` already, see `make`); if that
        /// fails, runc's words and 127 (not found) or 126.
        fn become_process(&mut self, launch: Launch) -> ! {
            if let Some(procs) = &mut self.cgroup {
                let _ = procs.write_all(b"0");
            }
            if let Some(adj) = launch.oom_score_adj {
                let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
            }
            let err = crate::supervise::init::enter(
                &launch.args,
                &launch.env,
                &launch.cwd,
                launch.identity,
                None,
                None,
            );
            let text = err.to_string();
            let _ = writeln!(std::io::stderr(), "{text}");
            let missing = text.contains("not found") || text.contains("no such file");
            // SAFETY: leaving the forked child without running our destructors.
            unsafe { libc::_exit(if missing { 127 } else { 126 }) }
        }

        /// As `start`, on a pty of the container's devpts (made as runc makes one:
        /// the process's session and controlling terminal); its output is fd 1.
        fn start_with_terminal(
            &mut self,
            id: u32,
            launch: Launch,
            window: Option<(u16, u16)>,
        ) -> Result<()> {
            use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork};
            let size = window.map(|(rows, cols)| nix::pty::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            });
            let pty = nix::pty::openpty(size.as_ref(), None)
                .map_err(|e| Error::Usage(format!("open a pty in the container: {e}")))?;
            let io = |e: nix::errno::Errno| Error::io("pty", e.into());
            // SAFETY: guest-init has one thread; the child only sets up and execs.
            match unsafe { fork() }.map_err(io)? {
                ForkResult::Child => {
                    let _ = nix::unistd::setsid();
                    let _ = (
                        dup2_stdin(&pty.slave),
                        dup2_stdout(&pty.slave),
                        dup2_stderr(&pty.slave),
                    );
                    drop(pty);
                    // SAFETY: TIOCSCTTY on our new stdin.
                    unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
                    self.become_process(launch)
                }
                ForkResult::Parent { child } => {
                    drop(pty.slave);
                    let dup =
                        |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(|e| Error::io("dup", e));
                    let input = dup(&pty.master)?;
                    let output = dup(&pty.master)?;
                    self.procs.push(Running {
                        id,
                        pid: child,
                        tty: Some(pty.master),
                        stdin: Some(File::from(input)),
                        outputs: [Some(File::from(output)), None],
                        status: None,
                    });
                    Ok(())
                }
            }
        }

        fn pump_outputs(&mut self, ready: &[bool], buf: &mut [u8]) -> Result<()> {
            let mut i = 0;
            let mut frames = Vec::new();
            for p in &mut self.procs {
                for (n, slot) in p.outputs.iter_mut().enumerate() {
                    let Some(out) = slot else { continue };
                    let is_ready = ready.get(i).copied().unwrap_or(false);
                    i += 1;
                    if !is_ready {
                        continue;
                    }
                    let fd = n as u8 + 1;
                    match out.read(buf) {
                        Ok(0) | Err(_) => {
                            *slot = None;
                            frames.push(Frame::Eof { process: p.id, fd });
                        }
                        Ok(k) => frames.push(Frame::Data {
                            process: p.id,
                            fd,
                            bytes: buf[..k].to_vec(),
                        }),
                    }
                }
            }
            for f in frames {
                self.send(&f)?;
            }
            Ok(())
        }

        /// Exit frames of processes that ended and whose output has all been sent.
        fn reap(&mut self) -> Result<()> {
            // PID 1 reaps everything: orphans of the processes' descendants too.
            loop {
                let mut status = 0;
                // SAFETY: waitpid(2) into a local.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if let Some(p) = self.procs.iter_mut().find(|p| p.pid.as_raw() == pid) {
                    p.status = Some(status);
                }
            }
            // The container ends with its workload, as a pid namespace does with its
            // init: what is left (a background child holding the stdio) is killed.
            if !self.ended && self.procs.iter().any(|p| p.id == 0 && p.status.is_some()) {
                // SAFETY: kill(2): as PID 1, -1 is every process but ourselves.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                self.ended = true;
            }
            let mut done = Vec::new();
            for p in &mut self.procs {
                if let Some(status) = p.status
                    && p.outputs.iter().all(Option::is_none)
                {
                    done.push((p.id, status));
                }
            }
            for (id, status) in done {
                self.procs.retain(|p| p.id != id);
                self.send(&Frame::Exit {
                    process: id,
                    status,
                })?;
                if id == 0 {
                    self.exited = Some(0);
                }
            }
            Ok(())
        }
    }
}
