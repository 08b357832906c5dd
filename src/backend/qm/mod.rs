//! Backend `qm`: the container is a Proxmox VE VM, made, started and destroyed with
//! `qm` (a vmid from `pvesh`), visible in Proxmox's UI. Its kernel is the configured
//! one, its init nexcage itself (`guest-init`, from an initramfs nexcage builds), its
//! root the bundle's rootfs in place (virtiofs). The engine's pid is a holder on the
//! host (`vm-holder`) that relays the process's stdio, exit status and signals over
//! one virtio-serial port (see `supervise::frames`). The VM's NIC is joined to the
//! engine's interface in the container's network namespace (`supervise::vm_net`).

pub mod initramfs;
pub mod translate;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::proxmox::{self, OWNER, Owner};
use super::{Backend, Exit, Invocation, Observed};
use crate::bundle::Bundle;
use crate::cli;
use crate::config::QmConfig;
use crate::error::{Error, IoContext, Result};
use crate::state::Record;
use crate::supervise::host::{self, Supervisor};
use crate::supervise::vm_holder::{GUEST_PROCESS, GUEST_SETUP, RELAY_PATH, TAP};
use crate::supervise::vm_relay::GuestProcess;

/// In the backend's dir: the sockets QEMU and virtiofsd listen on, by vmid (short
/// paths: `sun_path` holds 107 bytes, and QEMU takes a path). Not a valid id.
const SOCKETS: &str = "@sockets";
const VIRTIOFSD_PID: &str = "virtiofsd.pid";
/// In the runtime dir: how the VM's sockets are named (see `Qm::socket`).
const SOCKET_KEY: &str = "sockets";
/// In the runtime dir: the guest's serial console.
const CONSOLE_LOG: &str = "console.log";
/// How often `create` takes a new vmid when another create took its one first.
const CREATE_ATTEMPTS: usize = 5;

/// What `qm create` is given, whatever the vmid.
struct NewVm<'a> {
    dir: &'a Path,
    rootfs: &'a Path,
    plan: &'a translate::Plan,
    memory: &'a str,
    initramfs: &'a Path,
    description: &'a str,
}

/// In the runtime dir: `pause` suspended the VM (until `resume`).
const PAUSED: &str = "paused";

pub struct Qm {
    name: String,
    cfg: QmConfig,
    sup: Supervisor,
}

impl Qm {
    pub fn new(name: &str, cfg: &QmConfig, base: PathBuf) -> Qm {
        Qm {
            name: name.to_string(),
            cfg: cfg.clone(),
            sup: Supervisor {
                backend: name.to_string(),
                base,
            },
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported {
            command: what.to_string(),
            backend: self.name.clone(),
        }
    }

    /// A qm run that failed, in its words: the error (stderr) after the task's log
    /// (stdout), where qm puts what QEMU said.
    fn failed(&self, what: &str, out: &Output) -> Error {
        let log = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        let text = [log.trim(), err.trim()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("{what} failed: {}", text.trim().replace('\n', " / ")),
        }
    }

    fn run_tool(&self, tool: &Path, args: &[&str]) -> Result<Output> {
        Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("run {}", tool.display()))
    }

    fn qm(&self, args: &[&str]) -> Result<Output> {
        self.run_tool(&self.cfg.qm, args)
    }

    /// The owner of a container whose runtime dir we have (see pct's `Owner`: the
    /// description names the token and this backend's place, so that another root's
    /// VM is never taken for ours, and a wiped state's are found).
    fn owner(&self, id: &str) -> Option<Owner> {
        let token = fs::read_to_string(self.sup.dir(id).join(OWNER)).ok()?;
        Some(Owner {
            token: token.trim().to_string(),
            place: self.place(),
        })
    }

    /// The container's VM, if its description says it is ours (a vmid noted before
    /// `qm create` ran may be someone else's).
    fn our_vmid(&self, id: &str) -> Result<Option<String>> {
        let (Some(vmid), Some(owner)) = (self.vmid(id), self.owner(id)) else {
            return Ok(None);
        };
        let ours = self.description(&vmid)? == Some(proxmox::description(id, &owner));
        Ok(ours.then_some(vmid))
    }

    fn place(&self) -> String {
        crate::backend::proxmox::place(&self.sup.base)
    }

    /// The description of VM `vmid` (decoded), if it has a config.
    fn description(&self, vmid: &str) -> Result<Option<String>> {
        let out = self.qm(&["config", vmid])?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("description: "))
                .map(|d| proxmox::percent_decode(d).trim_end().to_string())
                .next()
                .unwrap_or_default(),
        ))
    }

    /// Stops and destroys VM `vmid` (virtiofsd ends with its QEMU).
    fn destroy_vm(&self, vmid: &str) -> Result<()> {
        let _ = self.qm(&["stop", vmid]);
        let out = self.qm(&["destroy", vmid, "--purge"])?;
        if !out.status.success() {
            return Err(self.failed("qm destroy", &out));
        }
        Ok(())
    }

    fn remove_sockets(&self, key: &str) {
        let mut names = vec!["relay".to_string()];
        for n in 0..=translate::MAX_SHARES {
            let what = if n == 0 {
                "fs".to_string()
            } else {
                format!("share{}", n - 1)
            };
            // virtiofsd leaves a pid file beside its socket.
            names.push(format!("{what}.pid"));
            names.push(what);
        }
        for name in names {
            let _ = fs::remove_file(self.socket(key, &name));
        }
    }

    fn vmid(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.sup.dir(id).join("vmid"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    }

    /// A socket of the VM whose sockets are named by `key` (`<vmid>-<creator pid>`:
    /// stand-in nodes in tests share vmids, and a vmid is reused once destroyed).
    fn socket(&self, key: &str, what: &str) -> PathBuf {
        self.sup.base.join(SOCKETS).join(format!("{key}.{what}"))
    }

    fn socket_key(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.sup.dir(id).join(SOCKET_KEY))
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty() && !k.contains('/'))
    }

    /// The initramfs for this nexcage binary and kernel, made once (by name: the
    /// binary's size and mtime, the kernel's version).
    fn initramfs(&self) -> Result<PathBuf> {
        let exe = fs::read_link("/proc/self/exe").context(|| "find own binary")?;
        let meta = fs::metadata(&exe).context(|| "stat own binary")?;
        let version = fs::read_to_string(self.cfg.kernel.join("version"))
            .unwrap_or_else(|_| "unknown".into());
        use std::os::unix::fs::MetadataExt;
        let name = format!(
            "initramfs-{}-{}-{}.cpio",
            meta.len(),
            meta.mtime(),
            version.trim().replace('/', "_")
        );
        let path = self.sup.base.join(&name);
        if !path.exists() {
            let modules =
                initramfs::resolve(&self.cfg.kernel.join("modules"), &initramfs::GUEST_MODULES)?;
            let temp = self
                .sup
                .base
                .join(format!(".{name}.{}", std::process::id()));
            initramfs::build(&temp, &exe, &modules)?;
            fs::rename(&temp, &path).context(|| format!("rename into {}", path.display()))?;
            // Those of other binaries or kernels: QEMU reads one only as it boots.
            for entry in fs::read_dir(&self.sup.base).into_iter().flatten().flatten() {
                let other = entry.file_name().to_string_lossy().into_owned();
                if other.starts_with("initramfs-") && other != name {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(path)
    }

    fn next_vmid(&self) -> Result<String> {
        let out = self.run_tool(&self.cfg.pvesh, &["get", "/cluster/nextid"])?;
        if !out.status.success() {
            return Err(self.failed("pvesh get /cluster/nextid", &out));
        }
        let vmid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_matches('"')
            .to_string();
        if vmid.is_empty() || !vmid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Backend {
                backend: self.name.clone(),
                reason: format!("pvesh gave no vmid: {vmid:?}"),
            });
        }
        Ok(vmid)
    }

    /// virtiofsd sharing `rootfs` on `socket`, in a session of its own (it ends when
    /// QEMU goes).
    fn start_virtiofsd(
        &self,
        dir: &Path,
        what: &str,
        socket: &Path,
        shared: &Path,
        readonly: bool,
    ) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = fs::File::create(dir.join(format!("virtiofsd-{what}.log")))
            .context(|| "virtiofsd log")?;
        let mut cmd = Command::new(&self.cfg.virtiofsd);
        cmd.arg("--socket-path")
            .arg(socket)
            .arg("--shared-dir")
            .arg(shared)
            .args(["--cache", "never", "--sandbox", "chroot"]);
        if readonly {
            cmd.arg("--readonly");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // SAFETY: setsid(2) between fork and exec.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
        }
        let child = cmd
            .spawn()
            .context(|| format!("run {}", self.cfg.virtiofsd.display()))?;
        host::write_pid_note(
            &dir.join(format!("{what}.{VIRTIOFSD_PID}")),
            child.id() as i32,
        )?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Backend {
                    backend: self.name.clone(),
                    reason: format!("virtiofsd did not listen on {}", socket.display()),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }

    /// Ends the virtiofsd processes of the container whose runtime dir is `dir`.
    fn stop_virtiofsd(&self, dir: &Path) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(VIRTIOFSD_PID)
                && let Some(pid) = host::read_pid_note(&entry.path())
            {
                // SAFETY: kill(2) on a virtiofsd we started (its start time checked).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// `qm create` with a fresh vmid (or the annotated one), retrying when another
    /// create took it first; returns the vmid and the sockets' key. The vmid is noted
    /// in the runtime dir first, so that a create killed half-way leaves something
    /// `delete --force` can find (and checks by description).
    fn create_vm(&self, vm: &NewVm, fixed: Option<&str>) -> Result<(String, String)> {
        let mut last = String::new();
        for _ in 0..CREATE_ATTEMPTS {
            let vmid = match fixed {
                Some(v) => v.to_string(),
                None => self.next_vmid()?,
            };
            fs::write(vm.dir.join("vmid"), &vmid).context(|| "write vmid")?;
            let key = format!("{vmid}-{}", std::process::id());
            fs::write(vm.dir.join(SOCKET_KEY), &key).context(|| "write the socket key")?;
            let relay = self.socket(&key, "relay");
            fs::write(vm.dir.join(RELAY_PATH), relay.to_string_lossy().as_bytes())
                .context(|| "write the relay path")?;
            self.start_virtiofsd(vm.dir, "fs", &self.socket(&key, "fs"), vm.rootfs, false)?;
            for (n, (share, ro)) in vm.plan.shares.iter().enumerate() {
                let what = format!("share{n}");
                self.start_virtiofsd(vm.dir, &what, &self.socket(&key, &what), share, *ro)?;
            }
            let tap = tap_of(vm.plan, &key);
            let shares = vm.plan.shares.len();
            let args = self.args(
                vm.dir,
                &key,
                vm.memory,
                vm.initramfs,
                shares,
                tap.as_deref(),
            )?;
            let mut argv: Vec<&str> = vec!["create", &vmid];
            argv.extend(vm.plan.options.iter().map(String::as_str));
            argv.extend(["--description", vm.description, "--args", &args]);
            let out = self.qm(&argv)?;
            if out.status.success() {
                return Ok((vmid, key));
            }
            // Taken meanwhile, or refused: what exists under that vmid is not ours.
            let _ = fs::remove_file(vm.dir.join("vmid"));
            let err = self.failed("qm create", &out);
            let taken = String::from_utf8_lossy(&out.stderr).contains("already exists");
            if fixed.is_some() || !taken {
                return Err(err);
            }
            self.stop_virtiofsd(vm.dir);
            self.remove_sockets(&key);
            last = err.to_string();
        }
        Err(Error::Backend {
            backend: self.name.clone(),
            reason: format!("qm create: vmid taken {CREATE_ATTEMPTS} times in a row: {last}"),
        })
    }

    /// QEMU's arguments for the guest nexcage boots (`args:`, appended last by
    /// qemu-server), in pci.2 slots qemu-server never assigns.
    fn args(
        &self,
        dir: &Path,
        key: &str,
        memory: &str,
        initramfs: &Path,
        shares: usize,
        tap: Option<&str>,
    ) -> Result<String> {
        let word = |what: &str, p: &Path| translate::arg_word(what, &p.to_string_lossy());
        let console = word("runtime dir", &dir.join(CONSOLE_LOG))?;
        let kernel = word("kernel", &self.cfg.kernel.join("vmlinuz"))?;
        let initrd = word("initramfs", initramfs)?;
        let fs = word("socket", &self.socket(key, "fs"))?;
        let relay = word("socket", &self.socket(key, "relay"))?;
        let port = crate::supervise::guest::RELAY_PORT;
        let tag = crate::supervise::guest::ROOTFS_TAG;
        let mut devices = Vec::new();
        for n in 0..shares {
            let what = format!("share{n}");
            let socket = word("socket", &self.socket(key, &what))?;
            let tag = crate::supervise::guest::share_tag(n);
            devices.push(format!("-chardev socket,id=nx{what},path={socket}"));
            devices.push(format!(
                "-device vhost-user-fs-pci,chardev=nx{what},tag={tag},bus=pci.2,addr={:#x}",
                0x1b + n
            ));
        }
        // QEMU makes the tap on the host; create moves it into the container's network
        // namespace (see `supervise::vm_net`).
        if let Some(tap) = tap {
            devices.push(format!(
                "-netdev tap,id=nxnet0,ifname={tap},script=no,downscript=no \
                 -device virtio-net-pci,netdev=nxnet0,bus=pci.2,addr=0x1f"
            ));
        }
        Ok([
            format!("-kernel {kernel} -initrd {initrd}"),
            // Boot time (seconds under TCG): no patching of SMP instructions for one
            // CPU, no self-tests of crypto the guest does not use, no PS/2 probe.
            "-append 'console=ttyS0 quiet panic=-1 noreplace-smp cryptomgr.notests \
             i8042.noaux i8042.nokbd i8042.nopnp -- guest-init'"
                .into(),
            "-boot menu=off -no-reboot".into(),
            // The guest's console: the kernel's and guest-init's words, for errors.
            format!("-serial file:{console}"),
            format!("-object memory-backend-memfd,id=nxmem,size={memory}M,share=on"),
            "-numa node,memdev=nxmem".into(),
            format!("-chardev socket,id=nxfs,path={fs}"),
            format!("-device vhost-user-fs-pci,chardev=nxfs,tag={tag},bus=pci.2,addr=0x19"),
            "-device virtio-serial-pci,id=nxvs,bus=pci.2,addr=0x1a".into(),
            format!("-chardev socket,id=nxrelay,path={relay},server=on,wait=off"),
            format!("-device virtserialport,bus=nxvs.0,chardev=nxrelay,name={port}"),
        ]
        .into_iter()
        .chain(devices)
        .collect::<Vec<_>>()
        .join(" "))
    }

    /// Starts the holder with our stdio, in the network namespace the spec asks for;
    /// returns it once it says the container is made.
    fn spawn_holder(
        &self,
        dir: &Path,
        netns: &translate::NetNs,
        console: Option<&std::os::unix::net::UnixStream>,
    ) -> Result<std::process::Child> {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        // A terminal: a pty of ours whose master goes to the engine's console socket,
        // its slave the holder's stdio and controlling terminal (so it hears resizes);
        // raw, as the guest's pty does the line discipline.
        let slave = match console {
            Some(socket) => Some(host_pty(socket)?),
            None => None,
        };
        let slave_fd = slave.as_ref().map(AsRawFd::as_raw_fd);
        let join: Option<OwnedFd> = match netns {
            translate::NetNs::Path(path) => Some(
                fs::File::open(path)
                    .context(|| format!("open network namespace {}", path.display()))?
                    .into(),
            ),
            _ => None,
        };
        let new_netns = matches!(netns, translate::NetNs::New);
        let join_fd = join.as_ref().map(AsRawFd::as_raw_fd);
        // Close-on-exec: only the dup at fd 3 reaches the holder, so its EOF is ours.
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("pipe", e.into()))?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("vm-holder")
            .arg("--dir")
            .arg(dir)
            .args(["--ready-fd", "3"]);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&write_end);
        // SAFETY: setns(2), dup2(2), setsid(2) and ioctl(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // The namespace first: its fd may be the 3 that the pipe goes to.
                if let Some(fd) = join_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if new_netns && libc::unshare(libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = slave_fd {
                    libc::setsid();
                    for to in 0..3 {
                        if libc::dup2(fd, to) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context(|| "start the holder")?;
        drop(write_end);
        let mut said = String::new();
        let _ = fs::File::from(read_end).read_to_string(&mut said);
        match said.lines().next() {
            Some("ready") => Ok(child),
            Some(line) => Err(Error::Backend {
                backend: self.name.clone(),
                reason: line.strip_prefix("error: ").unwrap_or(line).to_string(),
            }),
            None => Err(Error::Backend {
                backend: self.name.clone(),
                reason: "the holder ended before the container was made".into(),
            }),
        }
    }
}

impl Qm {
    /// runc's `exec`: the process (`--process`, or the container's changed by the
    /// flags) runs in the guest, its stdio ours, passed to the holder, which relays;
    /// we end as it ended.
    fn exec(&self, a: &cli::ExecArgs, id: &str) -> Result<Exit> {
        for (set, what) in [
            // Fds cannot cross into the VM.
            (a.preserve_fds.is_some_and(|n| n > 0), "exec --preserve-fds"),
            (a.pidfd_socket.is_some(), "exec --pidfd-socket"),
            (!a.cgroup.is_empty(), "exec --cgroup"),
            (a.apparmor.is_some(), "exec --apparmor"),
            (a.process_label.is_some(), "exec --process-label"),
        ] {
            if set {
                return Err(self.unsupported(what));
            }
        }
        if !self.sup.running(id) {
            return Err(Error::Usage("container not running".into()));
        }
        let dir = self.sup.dir(id);
        let base: GuestProcess = {
            let body = fs::read(dir.join(GUEST_PROCESS)).context(|| "read the process")?;
            serde_json::from_slice(&body).map_err(|e| Error::Usage(e.to_string()))?
        };
        let process = match &a.process {
            Some(path) => {
                let body = fs::read(path).context(|| format!("read {}", path.display()))?;
                serde_json::from_slice(&body)
                    .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
            }
            None => {
                let mut p = base.process.clone();
                let args: Vec<String> = a
                    .command
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                if args.is_empty() {
                    return Err(Error::Usage("exec needs a command".into()));
                }
                p.set_args(Some(args));
                let mut env = p.env().clone().unwrap_or_default();
                env.extend(a.env.iter().cloned());
                p.set_env(Some(env));
                if let Some(cwd) = &a.cwd {
                    p.set_cwd(cwd.into());
                }
                if let Some(u) = &a.user {
                    let (uid, gid) = crate::supervise::identity::Identity::parse_user(u)
                        .ok_or_else(|| Error::Usage(format!("invalid --user {u:?}")))?;
                    let mut user = p.user().clone();
                    user.set_uid(uid);
                    user.set_gid(gid);
                    p.set_user(user);
                }
                if !a.additional_gids.is_empty() {
                    let gids = crate::supervise::exec::additional_gids(a)?;
                    // runc adds them to the process's own.
                    let mut user = p.user().clone();
                    let mut all = user.additional_gids().clone().unwrap_or_default();
                    all.extend(gids);
                    user.set_additional_gids(Some(all));
                    p.set_user(user);
                }
                if a.no_new_privs {
                    p.set_no_new_privileges(Some(true));
                }
                add_capabilities(&mut p, &a.cap)?;
                p.set_terminal(Some(a.tty));
                p
            }
        };
        let terminal = process.terminal() == Some(true);
        let console = crate::supervise::exec::console_socket(a, terminal)?;
        // With a console socket the process's terminal is a host pty (its master sent
        // there, its slave what the holder relays); else our own stdio.
        let slave = match &console {
            Some(socket) => Some(host_pty(socket)?),
            None => None,
        };
        let stdio: [i32; 3] = match &slave {
            Some(fd) => [std::os::fd::AsRawFd::as_raw_fd(fd); 3],
            None => [0, 1, 2],
        };
        let name = format!(
            "{}{}.json",
            crate::supervise::vm_holder::EXEC_PREFIX,
            std::process::id()
        );
        let guest = GuestProcess {
            process,
            seccomp: base.seccomp,
            window: None,
        };
        host::write_new(&dir.join(&name), &to_json(&guest)?, 0o600)?;
        if a.detach {
            return self.exec_detached(a, &dir, &name, stdio);
        }
        // A terminal of our own in the foreground: raw while the guest's pty has it.
        let _raw = (terminal && console.is_none())
            .then(crate::supervise::terminal::RawMode::enter)
            .flatten();
        self.exec_via_holder(&dir, &name, stdio, None)
    }

    /// `exec --detach`: a child of ours does the exec and ends as the process ends
    /// (engines reap it; its pid goes to `--pid-file`); we return once it has handed
    /// the process to the holder.
    fn exec_detached(
        &self,
        a: &cli::ExecArgs,
        dir: &Path,
        name: &str,
        stdio: [i32; 3],
    ) -> Result<Exit> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("pipe", e.into()))?;
        // SAFETY: nexcage is single-threaded here; the child only talks to the holder.
        match unsafe { nix::unistd::fork() }.map_err(|e| Error::io("fork", e.into()))? {
            nix::unistd::ForkResult::Child => {
                drop(read_end);
                let code = match self.exec_via_holder(dir, name, stdio, Some(write_end)) {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("nexcage: {e}");
                        255
                    }
                };
                std::process::exit(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write_end);
                let mut said = String::new();
                let _ = fs::File::from(read_end).read_to_string(&mut said);
                if said.trim() != "sent" {
                    let _ = fs::remove_file(dir.join(name));
                    return Err(Error::Backend {
                        backend: self.name.clone(),
                        reason: "exec: the process did not reach the holder".into(),
                    });
                }
                if let Some(path) = &a.pid_file {
                    host::write_pid_file(path, child.as_raw())?;
                }
                Ok(0)
            }
        }
    }

    /// Hands the process in `name` and our stdio to the holder; its exit code.
    /// `sent`: told once the holder has them.
    fn exec_via_holder(
        &self,
        dir: &Path,
        name: &str,
        stdio: [i32; 3],
        sent: Option<std::os::fd::OwnedFd>,
    ) -> Result<Exit> {
        let answer = (|| -> Result<String> {
            let mut conn = crate::supervise::protocol::SocketDir::open(dir)?
                .connect(crate::supervise::SOCKET)
                .context(|| "connect to the holder")?;
            crate::supervise::protocol::send_line(&mut conn, &format!("exec {name}"))?;
            crate::supervise::protocol::send_fds(&conn, &stdio)?;
            forward_signals(&conn)?;
            if let Some(fd) = sent {
                let _ = std::io::Write::write_all(&mut fs::File::from(fd), b"sent\n");
            }
            crate::supervise::protocol::read_line(&conn)?
                .ok_or_else(|| Error::Usage("the holder went away".into()))
        })();
        let _ = fs::remove_file(dir.join(name));
        let answer = answer?;
        if let Some(reason) = answer.strip_prefix("error: ") {
            return Err(Error::Backend {
                backend: self.name.clone(),
                reason: reason.to_string(),
            });
        }
        let status: i32 = answer
            .strip_prefix("exit ")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::Usage(format!("unexpected answer from the holder: {answer:?}"))
            })?;
        use std::os::unix::process::ExitStatusExt;
        Ok(crate::process::exit_code(
            std::process::ExitStatus::from_raw(status),
        ))
    }
}

impl Qm {
    /// runc's `pause`/`resume`: the whole VM with `qm suspend`/`qm resume` (QEMU's
    /// `stop`/`cont`), noted in the runtime dir.
    fn pause(&self, id: &str, pause: bool) -> Result<Exit> {
        let not_running = || Error::Usage("container not running".into());
        // runc pauses a created or running container, not a paused one.
        if self.sup.holder(id).is_none() || (pause && self.paused(id)) {
            return Err(not_running());
        }
        let vmid = self.vmid(id).ok_or_else(not_running)?;
        let marker = self.sup.dir(id).join(PAUSED);
        if !pause && !self.paused(id) {
            return Err(Error::Usage("container not paused".into()));
        }
        let verb = if pause { "suspend" } else { "resume" };
        let out = self.qm(&[verb, &vmid])?;
        if !out.status.success() {
            return Err(self.failed(&format!("qm {verb}"), &out));
        }
        if pause {
            fs::write(&marker, "").context(|| "note the pause")?;
        } else {
            let _ = fs::remove_file(&marker);
        }
        Ok(0)
    }

    /// runc's `ps`: the container's processes are the guest's, listed by guest-init
    /// (their pids are the guest's; no host process is the container's).
    fn ps(&self, a: &cli::PsArgs, id: &str) -> Result<Exit> {
        if !a.ps_args.is_empty() {
            return Err(self.unsupported("ps with ps(1) options"));
        }
        if !self.sup.running(id) {
            return Err(Error::Usage("container not running".into()));
        }
        if self.paused(id) {
            return Err(Error::Usage(
                "ps of a paused container: its VM is suspended".into(),
            ));
        }
        let mut conn = self
            .sup
            .connect(id)
            .ok_or_else(|| Error::Usage("container not running".into()))?;
        crate::supervise::protocol::send_line(&mut conn, crate::supervise::vm_holder::PS)?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .context(|| "read the holder's answer")?;
        let answer = answer.trim_end();
        if let Some(reason) = answer.strip_prefix("error: ") {
            return Err(Error::Backend {
                backend: self.name.clone(),
                reason: reason.to_string(),
            });
        }
        let procs: Vec<crate::supervise::guest_ps::GuestProcessInfo> = answer
            .strip_prefix("processes ")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| {
                Error::Usage(format!("unexpected answer from the holder: {answer:?}"))
            })?;
        let text = if a.format == "json" {
            // Engines look these pids up on the host (containerd's shim, `docker top`):
            // the container's only host process is the holder.
            let pids: Vec<i32> = self.sup.holder(id).into_iter().collect();
            format!(
                "{}\n",
                to_json(&pids).map(|b| String::from_utf8_lossy(&b).into_owned())?
            )
        } else {
            crate::supervise::guest_ps::table(&procs)
        };
        crate::output::emit(&text)?;
        Ok(0)
    }

    /// Paused by us, and still so (a VM resumed in Proxmox's UI is running again).
    fn paused(&self, id: &str) -> bool {
        let marker = self.sup.dir(id).join(PAUSED);
        if !marker.exists() {
            return false;
        }
        let still = self.vmid(id).is_some_and(|vmid| {
            self.qm(&["status", &vmid])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "status: paused")
        });
        if !still {
            let _ = fs::remove_file(&marker);
        }
        still
    }
}

impl Backend for Qm {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        host::refuse_checkpoint(inv.command, &self.name)
    }

    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let (create, run) =
            host::create_args(inv.command).ok_or_else(|| self.unsupported(inv.command.name()))?;
        host::refuse_unsupported_flags(create, &self.name)?;
        let bundle = Bundle::load(&record.bundle)?;
        let console = host::create_terminal(&bundle, create, run, &self.name)?;
        let rootfs = bundle.checked_rootfs()?;
        let plan = translate::plan(&bundle.spec, &self.cfg, &record.id, &rootfs)?;
        // A path that is our own network namespace would hand the host's NIC's
        // traffic to the VM.
        if let translate::NetNs::Path(path) = &plan.netns {
            use std::os::unix::fs::MetadataExt;
            let ours =
                fs::metadata("/proc/self/ns/net").context(|| "stat our network namespace")?;
            let theirs =
                fs::metadata(path).context(|| format!("network namespace {}", path.display()))?;
            if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
                return Err(Error::Usage(format!(
                    "network namespace {} is the host's, which a VM cannot share",
                    path.display()
                )));
            }
        }
        let fixed = proxmox::annotated_vmid(
            &bundle.spec,
            translate::ANNOTATION_PREFIX,
            &self.cfg.allowed_annotations,
            "qm",
        )?;
        for (what, path) in [
            ("kernel", self.cfg.kernel.join("vmlinuz")),
            ("kernel", self.cfg.kernel.join("modules/modules.dep")),
            ("virtiofsd", self.cfg.virtiofsd.clone()),
        ] {
            if !path.exists() {
                return Err(Error::Backend {
                    backend: self.name.clone(),
                    reason: format!(
                        "{} not found (the backend's {what:?} setting)",
                        path.display()
                    ),
                });
            }
        }
        let memory = plan
            .options
            .iter()
            .skip_while(|o| *o != "--memory")
            .nth(1)
            .cloned()
            .unwrap_or_else(|| self.cfg.memory.to_string());
        // The first create since the state was made: a wiped state's VMs go.
        if !self.sup.base.join(SOCKETS).exists() {
            self.collect_strays();
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(self.sup.base.join(SOCKETS))
            .context(|| "create the socket dir")?;
        let initramfs = self.initramfs()?;
        let dir = self.sup.dir(&record.id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .context(|| format!("create {}", dir.display()))?;
        host::write_new(&dir.join(GUEST_SETUP), &to_json(&plan.guest)?, 0o600)?;
        // The environment may hold secrets: only root reads it.
        host::write_new(&dir.join(GUEST_PROCESS), &to_json(&plan.process)?, 0o600)?;
        let owner = Owner {
            token: proxmox::new_owner_token()?,
            place: self.place(),
        };
        fs::write(dir.join(OWNER), &owner.token).context(|| "write the owner token")?;
        let description = proxmox::description(&record.id, &owner);
        let vm = NewVm {
            dir: &dir,
            rootfs: &rootfs,
            plan: &plan,
            memory: &memory,
            initramfs: &initramfs,
            description: &description,
        };
        let (vmid, key) = self.create_vm(&vm, fixed.as_deref())?;
        let tap = tap_of(&plan, &key);
        let out = self.qm(&["start", &vmid])?;
        if !out.status.success() {
            return Err(self.failed("qm start", &out));
        }
        let mut holder = self.spawn_holder(&dir, &plan.netns, console.as_ref())?;
        let pid = holder.id() as i32;
        host::write_pid_note(&dir.join(crate::supervise::HOLDER_PID), pid)?;
        if let Some(tap) = &tap {
            let netns = fs::File::open(format!("/proc/{pid}/ns/net"))
                .context(|| "open the holder's network namespace")?;

            crate::supervise::vm_net::move_tap(tap, std::os::fd::AsFd::as_fd(&netns))?;
            fs::write(dir.join(TAP), tap).context(|| "write the tap's name")?;
        }
        // The runtime's hooks (prestart: Docker's libnetwork-setkey), on the host, with
        // the holder's pid; poststart and poststop run from `start` and `delete`.
        use crate::supervise::hooks::{Hooks, Kind};
        if let Some(hooks) = Hooks::from_spec(&bundle.spec, &record.id, &record.bundle) {
            hooks.save(&dir)?;
            hooks.run(Kind::Prestart, "creating", pid, None)?;
            hooks.run(Kind::CreateRuntime, "creating", pid, None)?;
        }
        if let Some(path) = &create.pid_file {
            host::write_pid_file(path, pid)?;
        }
        let Some(r) = run else {
            return Ok(0);
        };
        if r.detach {
            return Ok(0);
        }
        self.sup.start(&record.id)?;
        let status = holder.wait().context(|| "wait for the holder")?;
        if !r.keep {
            self.remove(inv, &record.id)?;
        }
        Ok(crate::process::exit_code(status))
    }

    fn start(&self, _inv: &Invocation, record: &Record) -> Result<Exit> {
        self.sup.start(&record.id).map(|()| 0)
    }

    fn holds(&self, record: &Record) -> bool {
        self.sup.dir(&record.id).exists()
    }

    fn observe(&self, _inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>> {
        Ok(records
            .iter()
            .filter_map(|r| {
                let mut seen = self.sup.observe(&r.id)?;
                if matches!(seen.status, super::Status::Running | super::Status::Created)
                    && self.paused(&r.id)
                {
                    seen.status = super::Status::Paused;
                }
                Some((r.id.clone(), seen))
            })
            .collect())
    }

    /// The holder passes a signal on to the workload in the VM; `--all`, to every
    /// process there (the holder's cgroup is the caller's, never the container's).
    /// SIGKILL ends the holder, which cannot pass it on: the VM is stopped, as the
    /// kernel would end a container's processes.
    fn kill(&self, _inv: &Invocation, record: &Record, signal: i32, all: bool) -> Result<Exit> {
        let id = &record.id;
        if all && signal != libc::SIGKILL && self.sup.started(id) {
            let mut conn = self
                .sup
                .connect(id)
                .ok_or_else(|| Error::Usage("container not running".into()))?;
            crate::supervise::protocol::send_line(
                &mut conn,
                &format!("{} {signal}", crate::supervise::vm_holder::SIGNAL_ALL),
            )?;
            return match crate::supervise::protocol::read_line(&conn)?.as_deref() {
                Some("ok") => Ok(0),
                _ => Err(Error::Usage("container not running".into())),
            };
        }
        let code = self.sup.kill(id, signal, false)?;
        if signal == libc::SIGKILL
            && let Some(vmid) = self.our_vmid(id)?
        {
            let _ = self.qm(&["stop", &vmid]);
        }
        Ok(code)
    }

    fn delete(&self, inv: &Invocation, record: &Record, _force: bool) -> Result<Exit> {
        self.remove(inv, &record.id).map(|()| 0)
    }

    /// Idempotent, from any state: holder gone, VM stopped and destroyed (only if
    /// its description says it is this container's), virtiofsd gone, sockets and
    /// runtime directory removed.
    fn remove(&self, _inv: &Invocation, id: &str) -> Result<()> {
        self.sup.kill_holder(id);
        if let Some(vmid) = self.our_vmid(id)? {
            self.destroy_vm(&vmid)?;
        }
        if let Some(key) = self.socket_key(id) {
            self.remove_sockets(&key);
        }
        self.stop_virtiofsd(&self.sup.dir(id));
        self.sup.remove_dir(id)
    }

    fn held(&self) -> Vec<String> {
        crate::ids::dirs_in(&self.sup.base)
    }

    /// VMs this backend made before its state was wiped: ours by place, with a token
    /// no runtime dir holds.
    fn collect_strays(&self) -> Vec<String> {
        let mut done = Vec::new();
        let Ok(list) = self.qm(&["list"]) else {
            return done;
        };
        let place = self.place();
        for vmid in String::from_utf8_lossy(&list.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        {
            let Ok(Some(text)) = self.description(vmid) else {
                continue;
            };
            let Some((id, owner)) = proxmox::parse_description(&text) else {
                continue;
            };
            if owner.place != place || self.owner(&id).is_some_and(|o| o.token == owner.token) {
                continue;
            }
            match self.destroy_vm(vmid) {
                Ok(()) => {
                    let prefix = format!("{vmid}-");
                    for entry in fs::read_dir(self.sup.base.join(SOCKETS))
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        if entry.file_name().to_string_lossy().starts_with(&prefix) {
                            let _ = fs::remove_file(entry.path());
                        }
                    }
                    done.push(format!(
                        "Proxmox VM {vmid} of container {id}, whose state is gone"
                    ));
                }
                Err(e) => log::warn!("gc: VM {vmid}: {e}"),
            }
        }
        done
    }

    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        match inv.command {
            cli::Command::Exec(a) => {
                if self.paused(&record.id) {
                    return Err(Error::Usage("cannot exec in a paused container".into()));
                }
                self.exec(a, &record.id)
            }
            cli::Command::Ps(a) => self.ps(a, &record.id),
            cli::Command::Pause(_) => self.pause(&record.id, true),
            cli::Command::Resume(_) => self.pause(&record.id, false),
            other => Err(self.unsupported(other.name())),
        }
    }
}

/// Our signals, from here on, are the exec'd process's: a thread takes them (they are
/// blocked everywhere else) and sends each to the holder on the exec's connection.
fn forward_signals(conn: &std::os::unix::net::UnixStream) -> Result<()> {
    use crate::supervise::vm_holder::{EXEC_SIGNAL, FORWARDED};
    let mut mask = nix::sys::signal::SigSet::empty();
    for s in FORWARDED.into_iter().filter(|s| *s != libc::SIGWINCH) {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(s) {
            mask.add(sig);
        }
    }
    mask.thread_block()
        .map_err(|e| Error::io("block signals", e.into()))?;
    let mut lines = conn.try_clone().context(|| "clone the holder connection")?;
    std::thread::spawn(move || {
        while let Ok(sig) = mask.wait() {
            let line = format!("{EXEC_SIGNAL}{}", sig as i32);
            if crate::supervise::protocol::send_line(&mut lines, &line).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The tap joined to the engine's interface, unless the VM's NIC is Proxmox's own.
fn tap_of(plan: &translate::Plan, key: &str) -> Option<String> {
    (!matches!(plan.netns, translate::NetNs::Host)).then(|| crate::supervise::vm_net::tap_name(key))
}

/// A host pty for a process with a terminal in the guest: its master goes to the
/// engine's console socket; its slave, raw (the guest's pty does the line
/// discipline), is what the holder relays.
fn host_pty(socket: &std::os::unix::net::UnixStream) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    let pty = nix::pty::openpty(None, None).context(|| "open a pty")?;
    if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
        nix::sys::termios::cfmakeraw(&mut t);
        let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
    }
    crate::supervise::protocol::send_fds(socket, &[pty.master.as_raw_fd()])?;
    Ok(pty.slave)
}

/// runc's `exec --cap`: added to the bounding, effective and permitted sets.
fn add_capabilities(p: &mut oci_spec::runtime::Process, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut caps = p.capabilities().clone().unwrap_or_default();
    for name in names {
        let unknown = || Error::Usage(format!("unknown capability {name:?}"));
        let cap: caps::Capability = name.parse().map_err(|_| unknown())?;
        let cap: oci_spec::runtime::Capability =
            serde_json::from_value(serde_json::Value::String(cap.to_string()))
                .map_err(|_| unknown())?;
        let with = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.insert(cap);
            Some(set)
        };
        let (b, e, p) = (
            with(caps.bounding()),
            with(caps.effective()),
            with(caps.permitted()),
        );
        caps.set_bounding(b).set_effective(e).set_permitted(p);
    }
    p.set_capabilities(Some(caps));
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Usage(e.to_string()))
}
