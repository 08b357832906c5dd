//! The Proxmox VE stand-in under hack/pve (`pct`, `pvesh`, `qm`) against real LXC and
//! QEMU: the behaviour nexcage's pct (and a qm) backend will rely on, checked on a
//! machine without Proxmox.
//!
//! Every test gets its own PVE_STANDIN_ROOT (a temporary directory holding /etc/pve/lxc,
//! /var/lib/vz, /var/lib/lxc, /run/pve) and its own cgroup prefix, so the tests run in
//! parallel even though each of them gets vmid 100 from `pvesh get /cluster/nextid`.
//! A guard stops the containers, removes the directories and the cgroups, also when a
//! test fails.
//!
//! The qm tests boot at most twice under TCG (`kvm: 0`): QEMU 10 and the guest kernel in
//! bundles/vm-kernel (hack/setup.sh, hack/vm/get-kernel.sh).
//!
//! Needs root, lxc (hack/setup.sh) and, for unprivileged containers, root's id range
//! `root:100000:65536` in /etc/subuid and /etc/subgid (as on every PVE host).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Per pct call; create/start/stop take well under a second here.
const TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pve_bin(name: &str) -> PathBuf {
    repo().join("hack/pve").join(name)
}

/// A finished command: exit code and output.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self, what: &str) -> Out {
        assert_eq!(self.code, Some(0), "{what} failed: {self:?}");
        self
    }
}

/// Runs `cmd` with piped output. Once it has exited, its stdout and stderr must reach
/// EOF: a container started by `pct start` must not keep the caller's pipes open.
fn run_cmd(mut cmd: Command) -> Out {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let out_rx = reader(Box::new(child.stdout.take().unwrap()));
    let err_rx = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} exited but a leftover process holds its output"))
    };
    Out {
        code: status.code(),
        stdout: collect(out_rx),
        stderr: collect(err_rx),
    }
}

/// An isolated PVE "node": directories under a tempdir and a cgroup prefix.
struct Pve {
    dir: tempfile::TempDir,
    cgroup_top: String,
}

impl Pve {
    fn new() -> Pve {
        assert!(
            Path::new("/usr/bin/lxc-start").exists(),
            "lxc missing: run hack/setup.sh"
        );
        let dir = tempfile::Builder::new()
            .prefix("nexcage-pve-")
            .tempdir()
            .unwrap();
        // Unprivileged containers (host uid 100000) must traverse to their rootfs, as
        // under /var/lib/vz on PVE; tempdirs are created 0700.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let cgroup_top = format!(
            "nexcage-pve-test-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let pve = Pve { dir, cgroup_top };
        std::fs::create_dir_all(pve.template_dir()).unwrap();
        pve
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn conf_dir(&self) -> PathBuf {
        self.root().join("etc/pve/lxc")
    }

    fn template_dir(&self) -> PathBuf {
        self.root().join("var/lib/vz/template/cache")
    }

    fn images_dir(&self) -> PathBuf {
        self.root().join("var/lib/vz/images")
    }

    fn lxc_path(&self) -> PathBuf {
        self.root().join("var/lib/lxc")
    }

    fn envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PVE_STANDIN_ROOT", self.root().display().to_string()),
            ("PVE_STANDIN_NODE", "testnode".to_string()),
            ("PVE_STANDIN_CGROUP_PREFIX", format!("{}/", self.cgroup_top)),
        ]
    }

    fn tool(&self, name: &str, args: &[&str]) -> Out {
        let mut cmd = Command::new(pve_bin(name));
        cmd.args(args).envs(self.envs());
        run_cmd(cmd)
    }

    fn pct(&self, args: &[&str]) -> Out {
        self.tool("pct", args)
    }

    fn pvesh(&self, args: &[&str]) -> Out {
        self.tool("pvesh", args)
    }

    fn qm(&self, args: &[&str]) -> Out {
        self.tool("qm", args)
    }

    fn qemu_dir(&self) -> PathBuf {
        self.root().join("etc/pve/qemu-server")
    }

    /// `PVE_STANDIN_QEMU_RUN_DIR`'s default: <vmid>.pid, .qmp, .serialN.
    fn qemu_run_dir(&self) -> PathBuf {
        self.root().join("var/run/qemu-server")
    }

    fn qm_status(&self, vmid: &str) -> String {
        self.qm(&["status", vmid]).ok("qm status").stdout
    }

    /// The pid QEMU wrote, if that process still runs with our `-pidfile`.
    fn qemu_pid(&self, vmid: &str) -> Option<u32> {
        let pidfile = self.qemu_run_dir().join(format!("{vmid}.pid"));
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = format!("-pidfile\0{}\0", pidfile.display());
        String::from_utf8_lossy(&cmdline)
            .contains(&needle)
            .then_some(pid)
    }

    fn nextid(&self) -> String {
        let out = self.pvesh(&["get", "/cluster/nextid"]).ok("pvesh nextid");
        out.stdout.trim().to_string()
    }

    /// A .tar.gz of the shared busybox rootfs in the template storage.
    fn busybox_template(&self) -> (PathBuf, String) {
        let rootfs = repo().join("bundles/rootfs");
        assert!(
            rootfs.join("bin/busybox").exists(),
            "{} missing: run hack/setup.sh first",
            rootfs.display()
        );
        let path = self.template_dir().join("busybox.tar.gz");
        if !path.exists() {
            let mut cmd = Command::new("tar");
            cmd.arg("-C").arg(&rootfs).arg("-czf").arg(&path).arg(".");
            run_cmd(cmd).ok("tar");
        }
        (path, "local:vztmpl/busybox.tar.gz".to_string())
    }

    /// Containers LXC knows under this node's lxc path (`lxc-ls`).
    fn lxc_ls(&self, active: bool) -> Vec<String> {
        let mut cmd = Command::new("lxc-ls");
        cmd.arg("-P").arg(self.lxc_path()).arg("-1");
        if active {
            cmd.arg("--active");
        }
        let out = run_cmd(cmd);
        out.stdout.split_whitespace().map(str::to_string).collect()
    }

    fn status(&self, vmid: &str) -> String {
        self.pct(&["status", vmid]).ok("pct status").stdout
    }

    /// The value of `key` in `pct status --verbose`.
    fn verbose(&self, vmid: &str, key: &str) -> Option<String> {
        let out = self
            .pct(&["status", vmid, "--verbose"])
            .ok("pct status --verbose");
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
    }

    /// Nothing of `vmid` left: config, volumes, LXC directory, LXC's view.
    fn assert_gone(&self, vmid: &str) {
        assert!(!self.conf_dir().join(format!("{vmid}.conf")).exists());
        assert!(!self.images_dir().join(vmid).exists(), "volumes left");
        assert!(!self.lxc_path().join(vmid).exists(), "lxc dir left");
        assert!(!self.lxc_ls(false).contains(&vmid.to_string()));
    }
}

impl Drop for Pve {
    fn drop(&mut self) {
        // VMs still running: SIGKILL QEMU (its pidfile names it).
        if let Ok(entries) = std::fs::read_dir(self.qemu_run_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(vmid) = name.strip_suffix(".pid")
                    && let Some(pid) = self.qemu_pid(vmid)
                {
                    eprintln!("cleanup: killing QEMU of VM {vmid} (pid {pid})");
                    // SAFETY: kill(2) on the pid QEMU's pidfile names.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        // Kill what is still running, without going through the stand-in.
        for name in self.lxc_ls(true) {
            let mut cmd = Command::new("lxc-stop");
            cmd.arg("-P")
                .arg(self.lxc_path())
                .args(["-n", &name, "--kill"]);
            let out = run_cmd(cmd);
            if out.code != Some(0) {
                eprintln!("cleanup: lxc-stop {name}: {out:?}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.lxc_ls(true).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Empty cgroups stay behind after a CT stops (as on PVE): remove ours.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let top = h.path().join(&self.cgroup_top);
                if top.is_dir() {
                    remove_cgroup_tree(&top);
                }
            }
        }
        // The tempdir (rootfs files owned by 100000 included) goes with self.dir.
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cleanup: rmdir {}: {e}", dir.display());
    }
}

/// The parent pid from /proc/<pid>/stat.
fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn list_line(vmid: &str, status: &str, lock: &str, name: &str) -> String {
    format!("{vmid:<10} {status:<10} {lock:<12} {name:<20}")
}

#[test]
fn privileged_ct_with_bind_mount_and_entrypoint() {
    let pve = Pve::new();
    let (template, _) = pve.busybox_template();
    let template = template.display().to_string();

    // No CTs yet: `pct list` prints nothing at all.
    let out = pve.pct(&["list"]).ok("pct list");
    assert_eq!(out.stdout, "");
    let vmid = pve.nextid();
    assert_eq!(vmid, "100");

    let share = pve.root().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), "from the host\n").unwrap();
    let mp0 = format!("{},mp=/data", share.display());
    let out = pve
        .pct(&[
            "create",
            &vmid,
            &template,
            "--ostype",
            "unmanaged",
            "--hostname",
            "web1",
            "--memory",
            "256",
            "--rootfs",
            "local:1",
            "--mp0",
            &mp0,
            "--unprivileged",
            "0",
            "--entrypoint",
            "/bin/sleep 1000",
        ])
        .ok("pct create");
    assert!(out.stdout.contains("extracting archive"), "{out:?}");

    // The config shows what was set, sorted, with PVE's defaults filled in.
    let config = pve.pct(&["config", &vmid]).ok("pct config").stdout;
    let lines: Vec<&str> = config.lines().collect();
    for want in [
        "arch: amd64",
        "entrypoint: /bin/sleep 1000",
        "hostname: web1",
        "memory: 256",
        &format!("mp0: {mp0}"),
        "ostype: unmanaged",
        "swap: 512",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{config}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("rootfs: local:{vmid}/")) && l.ends_with(",size=1G")),
        "{config}"
    );
    assert!(!config.contains("unprivileged"), "{config}");
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "pct config is sorted");
    assert_eq!(pve.status(&vmid), "status: stopped\n");

    // Start: detached like pve-container@.service, pct returns once it runs.
    let out = pve.pct(&["start", &vmid]).ok("pct start");
    assert_eq!(out.stdout, "");
    assert_eq!(pve.status(&vmid), "status: running\n");
    let pid: u32 = pve
        .verbose(&vmid, "pid")
        .expect("pid line")
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("live host pid");
    assert_eq!(cmdline, b"/bin/sleep\x001000\x00");
    // init's parent is LXC's monitor (lxc-start -F), which is not our child.
    let monitor = ppid(pid);
    assert_ne!(ppid(monitor), std::process::id());
    assert_eq!(pve.verbose(&vmid, "name").as_deref(), Some("web1"));
    assert_eq!(pve.verbose(&vmid, "maxmem").as_deref(), Some("268435456"));

    let out = pve.pct(&["start", &vmid]);
    assert_eq!(out.code, Some(255));
    assert_eq!(out.stderr, format!("CT {vmid} already running\n"));

    // exec passes output and exit status through.
    let out = pve.pct(&["exec", &vmid, "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(3), "hi\n"),
        "{out:?}"
    );
    let out = pve
        .pct(&["exec", &vmid, "--", "cat", "/data/hello.txt"])
        .ok("exec cat");
    assert_eq!(out.stdout, "from the host\n");
    let out = pve
        .pct(&["exec", &vmid, "--", "hostname"])
        .ok("exec hostname");
    assert_eq!(out.stdout, "web1\n");

    let list = pve.pct(&["list"]).ok("pct list").stdout;
    assert_eq!(
        list,
        format!(
            "{}\n{}\n",
            list_line("VMID", "Status", "Lock", "Name"),
            list_line(&vmid, "running", "", "web1")
        )
    );

    pve.pct(&["stop", &vmid]).ok("pct stop");
    assert_eq!(pve.status(&vmid), "status: stopped\n");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || ppid(pid) != monitor);
    let out = pve.pct(&["stop", &vmid]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(255), format!("CT {vmid} not running\n").as_str())
    );

    let out = pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");
    assert!(out.stdout.contains("purging CT"), "{out:?}");
    pve.assert_gone(&vmid);
    assert!(
        share.join("hello.txt").exists(),
        "bind mount source untouched"
    );
    assert_eq!(pve.pct(&["list"]).ok("pct list").stdout, "");
}

#[test]
fn unprivileged_ct_with_busybox_init() {
    let pve = Pve::new();
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    assert!(
        subuid.lines().any(|l| l == "root:100000:65536")
            && subgid.lines().any(|l| l == "root:100000:65536"),
        "unprivileged CTs need root:100000:65536 in /etc/subuid and /etc/subgid (hack/setup.sh)"
    );
    let (_, volid) = pve.busybox_template();
    let vmid = pve.nextid();

    // No --unprivileged: pct create defaults to an unprivileged CT; init is /sbin/init.
    pve.pct(&[
        "create",
        &vmid,
        &volid,
        "--hostname",
        "unpriv",
        "--cores",
        "1",
    ])
    .ok("pct create");
    let config = pve.pct(&["config", &vmid]).ok("pct config").stdout;
    assert!(config.lines().any(|l| l == "unprivileged: 1"), "{config}");
    // No /etc/os-release in the busybox rootfs: detected as unmanaged.
    assert!(config.lines().any(|l| l == "ostype: unmanaged"), "{config}");
    assert!(config.lines().any(|l| l == "hostname: unpriv"), "{config}");

    // The template was unpacked shifted by the id map base.
    let volume = std::fs::read_dir(pve.images_dir().join(&vmid))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let meta = std::fs::symlink_metadata(volume.join("bin/busybox")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (100000, 100000));

    pve.pct(&["start", &vmid]).ok("pct start");
    assert_eq!(pve.status(&vmid), "status: running\n");
    let pid = pve.verbose(&vmid, "pid").expect("pid line");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    let out = pve
        .pct(&["exec", &vmid, "--", "sh", "-c", "id -u; cat /proc/1/comm"])
        .ok("exec");
    assert_eq!(out.stdout, "0\ninit\n");

    // busybox init halts on LXC's halt signal (SIGPWR): a clean shutdown works.
    pve.pct(&["shutdown", &vmid, "--timeout", "20"])
        .ok("pct shutdown");
    assert_eq!(pve.status(&vmid), "status: stopped\n");

    pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");
    pve.assert_gone(&vmid);
}

#[test]
fn errors_use_pve_texts_and_exit_255() {
    let pve = Pve::new();
    let (template, volid) = pve.busybox_template();
    let template = template.display().to_string();
    let vmid = pve.nextid();
    let unknown = "999";

    for args in [
        vec!["status", unknown],
        vec!["config", unknown],
        vec!["start", unknown],
        vec!["destroy", unknown],
        vec!["exec", unknown, "--", "true"],
    ] {
        let out = pve.pct(&args);
        assert_eq!(out.code, Some(255), "{args:?}: {out:?}");
        assert_eq!(
            out.stderr,
            format!("Configuration file 'nodes/testnode/lxc/{unknown}.conf' does not exist\n"),
            "{args:?}"
        );
    }

    // Unknown options are refused like Getopt::Long in pct does; nothing is created.
    let out = pve.pct(&["create", &vmid, &volid, "--no-such-option", "1"]);
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr
            .starts_with("Unknown option: no-such-option\n400 unable to parse option\n"),
        "{out:?}"
    );
    let out = pve.pct(&["create", &vmid, &volid, "--memory", "lots"]);
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr
            .contains("memory: type check ('integer') failed - got 'lots'"),
        "{out:?}"
    );
    let out = pve.pct(&["create", &vmid, &volid, "--mp0", "/tmp,mp=/x"]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        "mount points configured, but 'rootfs' not set - aborting\n"
    );
    // A failing create cleans up completely.
    let out = pve.pct(&["create", &vmid, "local:vztmpl/missing.tar.gz"]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        format!("unable to create CT {vmid} - can't find file 'local:vztmpl/missing.tar.gz'\n")
    );
    pve.assert_gone(&vmid);

    pve.pct(&[
        "create",
        &vmid,
        &template,
        "--ostype",
        "unmanaged",
        "--unprivileged",
        "0",
        "--entrypoint",
        "/bin/sleep 1000",
    ])
    .ok("pct create");
    let out = pve.pct(&["create", &vmid, &volid, "--ostype", "unmanaged"]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        format!("CT {vmid} already exists on node 'testnode'\n")
    );
    let out = pve.pvesh(&["get", "/cluster/nextid", "--vmid", &vmid]);
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr
            .contains(&format!("vmid: VM {vmid} already exists")),
        "{out:?}"
    );
    assert_eq!(pve.nextid(), "101");

    let out = pve.pct(&["exec", &vmid, "--", "true"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(255),
            format!("container '{vmid}' not running!\n").as_str()
        )
    );

    pve.pct(&["start", &vmid]).ok("pct start");
    let out = pve.pct(&["destroy", &vmid]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        format!("unable to destroy CT {vmid} - container is running\n")
    );
    assert_eq!(pve.status(&vmid), "status: running\n");
    let out = pve
        .pct(&["destroy", &vmid, "--force", "--purge"])
        .ok("pct destroy --force");
    assert!(
        out.stdout
            .contains(&format!("forced to stop CT {vmid} before destroying!")),
        "{out:?}"
    );
    pve.assert_gone(&vmid);
    assert!(pve.lxc_ls(false).is_empty());
}

/// nexcage may run pct with an empty environment: a wrapper script carries the settings.
#[test]
fn runs_with_an_empty_environment() {
    let pve = Pve::new();
    let wrapper = pve.root().join("pvesh");
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in pve.envs() {
        script += &format!("export {k}='{v}'\n");
    }
    script += &format!("exec '{}' \"$@\"\n", pve_bin("pvesh").display());
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(pve.conf_dir()).unwrap();
    std::fs::write(
        pve.conf_dir().join("100.conf"),
        "hostname: x\nrootfs: /nonexistent\n",
    )
    .unwrap();
    let mut cmd = Command::new(&wrapper);
    cmd.env_clear().args(["get", "/cluster/nextid"]);
    let out = run_cmd(cmd).ok("pvesh with an empty environment");
    assert_eq!(out.stdout, "101\n");

    // qm likewise (its qmstandin.py is found next to pvestandin.py under -I).
    let wrapper = pve.root().join("qm");
    let script = std::fs::read_to_string(pve.root().join("pvesh"))
        .unwrap()
        .replace(
            &pve_bin("pvesh").display().to_string(),
            &pve_bin("qm").display().to_string(),
        );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new(&wrapper);
    cmd.env_clear().args(["create", "101", "--name", "envless"]);
    run_cmd(cmd).ok("qm create with an empty environment");
    let mut cmd = Command::new(&wrapper);
    cmd.env_clear().args(["list"]);
    let out = run_cmd(cmd).ok("qm list with an empty environment");
    assert_eq!(
        out.stdout.lines().nth(1),
        Some(qm_list_line("101", "envless", "stopped", "512", "0").as_str())
    );
}

/// A bind-type rootfs, as nexcage uses it (pve-container: `classify_mountpoint` takes
/// any absolute path from root; `restore_archive` unpacks with `--skip-old-files`;
/// the prestart hook refuses a symlink in the path, `walk_tree_nofollow`): the CT runs
/// on the directory itself, what was there stays, destroy leaves it. Unprivileged with
/// `idmap=passthrough` (6.1.6+) the ids inside are those on disk; raw `lxc.idmap`
/// lines replace PVE's map; raw `lxc.cgroup.*` lines reach LXC after PVE's own.
#[test]
fn bind_rootfs_in_place() {
    use std::os::unix::fs::MetadataExt;
    let pve = Pve::new();
    let rootfs = pve.root().join("oci/rootfs");
    std::fs::create_dir_all(rootfs.parent().unwrap()).unwrap();
    let mut cmd = Command::new("cp");
    cmd.arg("-a")
        .arg(repo().join("bundles/rootfs"))
        .arg(&rootfs);
    run_cmd(cmd).ok("cp");
    std::fs::write(rootfs.join("keep"), "original\n").unwrap();
    // An archive that would replace `keep` and adds `new`.
    let staging = pve.root().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("keep"), "from the archive\n").unwrap();
    std::fs::write(staging.join("new"), "new\n").unwrap();
    let archive = pve.root().join("a.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(&staging)
        .arg("-cf")
        .arg(&archive)
        .arg(".");
    run_cmd(cmd).ok("tar");
    let archive = archive.display().to_string();
    let rootfs_s = rootfs.display().to_string();

    let vmid = pve.nextid();
    let create = |vmid: &str, rootfs: &str, unprivileged: &str| {
        pve.pct(&[
            "create",
            vmid,
            &archive,
            "--rootfs",
            rootfs,
            "--ostype",
            "unmanaged",
            "--unprivileged",
            unprivileged,
            "--entrypoint",
            "/bin/sleep 1000",
        ])
    };
    create(&vmid, &rootfs_s, "0").ok("pct create");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("keep")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("new")).unwrap(),
        "new\n"
    );
    let conf = pve.conf_dir().join(format!("{vmid}.conf"));
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("lxc.cgroup.pids.max: 77\n");
    std::fs::write(&conf, text).unwrap();
    pve.pct(&["start", &vmid]).ok("pct start");
    pve.pct(&["exec", &vmid, "--", "sh", "-c", "echo inside > /written"])
        .ok("pct exec");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("written")).unwrap(),
        "inside\n"
    );
    let pid = pve.verbose(&vmid, "pid").expect("pid");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let pids = cgroup
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
        .expect("a pids cgroup");
    // init is in `lxc/<vmid>/ns`; the limits are on `lxc/<vmid>`.
    let limited = Path::new("/sys/fs/cgroup/pids")
        .join(pids.trim_start_matches('/'))
        .parent()
        .unwrap()
        .join("pids.max");
    assert_eq!(std::fs::read_to_string(limited).unwrap(), "77\n");
    pve.pct(&["stop", &vmid]).ok("pct stop");
    pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");
    assert!(
        rootfs.join("bin/busybox").exists(),
        "destroy took the bind rootfs"
    );

    // Unprivileged, passthrough: root inside owns what root owns on disk.
    let vmid = pve.nextid();
    let volume = format!("{rootfs_s},idmap=passthrough");
    create(&vmid, &volume, "1").ok("pct create");
    pve.pct(&["start", &vmid]).ok("pct start");
    let out = pve
        .pct(&[
            "exec",
            &vmid,
            "--",
            "sh",
            "-c",
            "id -u; stat -c %u /bin/busybox; touch /mine",
        ])
        .ok("pct exec");
    assert_eq!(out.stdout, "0\n0\n");
    assert_eq!(std::fs::metadata(rootfs.join("mine")).unwrap().uid(), 0);
    pve.pct(&["stop", &vmid]).ok("pct stop");
    pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");

    // Unprivileged with a map of its own (raw lxc.idmap) on a plain bind.
    let vmid = pve.nextid();
    create(&vmid, &rootfs_s, "1").ok("pct create");
    let conf = pve.conf_dir().join(format!("{vmid}.conf"));
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("lxc.idmap: u 0 120000 10000\nlxc.idmap: g 0 120000 10000\n");
    std::fs::write(&conf, text).unwrap();
    pve.pct(&["start", &vmid]).ok("pct start");
    let pid = pve.verbose(&vmid, "pid").expect("pid");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "120000", "10000"]
    );
    let out = pve
        .pct(&["exec", &vmid, "--", "stat", "-c", "%u", "/bin/busybox"])
        .ok("pct exec");
    assert_eq!(out.stdout, "65534\n");
    pve.pct(&["stop", &vmid]).ok("pct stop");
    pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");

    // Refused: a symlink on the way (at start, as PVE's prestart hook), an archive
    // not named like one.
    let link = pve.root().join("link");
    std::os::unix::fs::symlink(rootfs.parent().unwrap(), &link).unwrap();
    let vmid = pve.nextid();
    create(&vmid, &format!("{}/rootfs", link.display()), "0").ok("pct create");
    let out = pve.pct(&["start", &vmid]);
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("symlink encountered at: {}", link.display()))
            || out
                .stdout
                .contains(&format!("symlink encountered at: {}", link.display())),
        "{out:?}"
    );
    pve.pct(&["destroy", &vmid, "--purge"]).ok("pct destroy");
    let not_archive = pve.root().join("empty.bin");
    std::fs::write(&not_archive, [0u8; 10240]).unwrap();
    let vmid = pve.nextid();
    let out = pve.pct(&[
        "create",
        &vmid,
        not_archive.to_str().unwrap(),
        "--rootfs",
        &rootfs_s,
        "--ostype",
        "unmanaged",
    ]);
    assert_eq!(out.code, Some(255), "{out:?}");
    assert!(
        out.stderr.contains("does not look like a template archive"),
        "{out:?}"
    );
    assert!(rootfs.join("bin/busybox").exists());
}

/// A gzip'd newc initramfs: static busybox and an /init script that writes `marker` to
/// the first serial port and powers the guest off. An initramfs gets no /dev nodes (the
/// kernel's devtmpfs automount is for a real root only): mount devtmpfs first.
fn marker_initrd(dir: &Path, marker: &str) -> PathBuf {
    let busybox = repo().join("bundles/rootfs/bin/busybox");
    assert!(
        busybox.exists(),
        "{} missing: run hack/setup.sh",
        busybox.display()
    );
    let tree = dir.join("initrd");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    std::fs::copy(&busybox, tree.join("bin/busybox")).unwrap();
    let init = tree.join("init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n\
             echo {marker} > /dev/ttyS0\n/bin/busybox poweroff -f\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = dir.join("initrd.gz");
    let mut cmd = Command::new("sh");
    cmd.current_dir(&tree).arg("-c").arg(format!(
        "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        out.display()
    ));
    run_cmd(cmd).ok("cpio");
    out
}

fn qm_list_line(vmid: &str, name: &str, status: &str, mem: &str, pid: &str) -> String {
    format!(
        "{vmid:>10} {name:<20} {status:<10} {mem:<10} {:>12} {pid:<10}",
        "0.00"
    )
}

/// `qm` without booting: config verbs, their formats and PVE's error texts.
#[test]
fn qm_config_verbs_and_errors() {
    let pve = Pve::new();
    let out = pve.qm(&["list"]).ok("qm list");
    assert_eq!(out.stdout, "", "no VMs: nothing at all");
    let vmid = pve.nextid();

    for args in [
        vec!["status", "999"],
        vec!["config", "999"],
        vec!["start", "999"],
        vec!["stop", "999"],
        vec!["set", "999", "--cores", "2"],
        vec!["destroy", "999"],
    ] {
        let out = pve.qm(&args);
        assert_eq!(out.code, Some(255), "{args:?}: {out:?}");
        assert_eq!(
            out.stderr, "Configuration file 'nodes/testnode/qemu-server/999.conf' does not exist\n",
            "{args:?}"
        );
    }
    let out = pve.qm(&["create", &vmid, "--no-such-option", "1"]);
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr
            .starts_with("Unknown option: no-such-option\n400 unable to parse option\n"),
        "{out:?}"
    );
    let out = pve.qm(&["create", &vmid, "--cores", "many", "--serial0", "tcp"]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        "400 Parameter verification failed.\n\
         cores: type check ('integer') failed - got 'many'\n\
         serial0: value does not match the regex pattern\n\
         qm create <vmid> [OPTIONS]\n"
    );
    assert!(!pve.qemu_dir().join(format!("{vmid}.conf")).exists());

    pve.qm(&[
        "create",
        &vmid,
        "--name",
        "vm-one",
        "--memory",
        "256",
        "--cores",
        "2",
        "--kvm",
        "0",
        "--serial0",
        "socket",
        "--tags",
        "nexcage",
        "--description",
        "first: line\nsecond",
        "--net0",
        "virtio,bridge=vmbr0",
        "--args",
        "-kernel /k -append 'console=ttyS0 quiet'",
    ])
    .ok("qm create");
    let raw = std::fs::read_to_string(pve.qemu_dir().join(format!("{vmid}.conf"))).unwrap();
    assert!(raw.starts_with("#first%3A line\n#second\n"), "{raw}");
    let out = pve.qm(&["config", &vmid]).ok("qm config").stdout;
    let keys: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "args",
            "cores",
            "description",
            "kvm",
            "memory",
            "meta",
            "name",
            "net0",
            "serial0",
            "smbios1",
            "tags",
            "vmgenid"
        ]
    );
    assert!(out.contains("args: -kernel /k -append 'console=ttyS0 quiet'\n"));
    assert!(
        out.contains("description: first%3A line%0Asecond%0A\n"),
        "{out}"
    );
    // add_random_macs: Proxmox's prefix BC:24:11
    assert!(out.contains("net0: virtio=BC:24:11:"), "{out}");
    assert!(out.contains("smbios1: uuid="), "{out}");
    assert_eq!(pve.nextid(), "101", "pvesh sees the VM's id as taken");

    let out = pve.qm(&["list"]).ok("qm list").stdout;
    let header = format!(
        "{:>10} {:<20} {:<10} {:<10} {:>12} {:<10}",
        "VMID", "NAME", "STATUS", "MEM(MB)", "BOOTDISK(GB)", "PID"
    );
    let row = qm_list_line(&vmid, "vm-one", "stopped", "256", "0");
    assert_eq!(out, format!("{header}\n{row}\n"));
    assert_eq!(pve.qm_status(&vmid), "status: stopped\n");
    let out = pve
        .qm(&["status", &vmid, "--verbose"])
        .ok("status -v")
        .stdout;
    assert!(
        out.contains("maxmem: 268435456\n") && out.contains("serial: 1\n"),
        "{out}"
    );
    assert!(out.contains("ha:\n\tmanaged: 0\n"), "{out}");

    // A NIC as qemu-server makes it: a tap named by vmid and index, pve-bridge as
    // its script, the device at pci.0 slot 0x12 with the config's MAC.
    let out = pve.qm(&["showcmd", &vmid]).ok("qm showcmd").stdout;
    let mac = pve.qm(&["config", &vmid]).ok("qm config").stdout;
    let mac = mac
        .lines()
        .find_map(|l| l.strip_prefix("net0: virtio="))
        .and_then(|v| v.split(',').next())
        .unwrap()
        .to_string();
    assert!(
        out.contains(&format!(
            "-netdev 'type=tap,id=net0,ifname=tap{vmid}i0,script={pve}/pve-bridge,downscript={pve}/pve-bridgedown' \
             -device 'virtio-net-pci,mac={mac},netdev=net0,bus=pci.0,addr=0x12,id=net0'",
            pve = repo().join("hack/pve").display()
        )),
        "{out}"
    );
    pve.qm(&["set", &vmid, "--delete", "net0,tags", "--memory", "512"])
        .ok("qm set");
    let out = pve.qm(&["config", &vmid]).ok("qm config").stdout;
    assert!(!out.contains("net0:") && !out.contains("tags:"), "{out}");
    assert!(out.contains("memory: 512\n"), "{out}");
    // qm showcmd: qemu-server's command line for these keys, `args` split and last.
    let out = pve
        .qm(&["showcmd", &vmid, "--pretty"])
        .ok("qm showcmd")
        .stdout;
    let run = pve.qemu_run_dir().display().to_string();
    for line in [
        "/usr/bin/qemu-system-x86_64 \\\n".to_string(),
        "  -no-shutdown \\\n".to_string(),
        format!("  -chardev 'socket,id=qmp,path={run}/{vmid}.qmp,server=on,wait=off' \\\n"),
        format!("  -pidfile {run}/{vmid}.pid \\\n"),
        "  -daemonize \\\n".to_string(),
        "  -smp '2,sockets=1,cores=2,maxcpus=2' \\\n".to_string(),
        "  -nodefaults \\\n".to_string(),
        "  -boot 'menu=on,strict=on,reboot-timeout=1000' \\\n".to_string(),
        "  -cpu qemu64 \\\n".to_string(),
        "  -m 512 \\\n".to_string(),
        format!("  -chardev 'socket,id=serial0,path={run}/{vmid}.serial0,server=on,wait=off' \\\n"),
        "  -device 'isa-serial,chardev=serial0' \\\n".to_string(),
        "  -machine 'accel=tcg,type=pc' \\\n  -kernel /k \\\n  -append 'console=ttyS0 quiet'\n"
            .to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} not in {out}");
    }
    let out = pve.qm(&["set", &vmid]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(255), "no options specified\n")
    );

    // An existing VM or CT id is refused (create_and_lock_config, check_vmid_unused).
    let out = pve.qm(&["create", &vmid]);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        format!("unable to create VM {vmid} - VM {vmid} already exists on node 'testnode'\n")
    );
    std::fs::create_dir_all(pve.conf_dir()).unwrap();
    std::fs::write(pve.conf_dir().join("150.conf"), "hostname: ct\n").unwrap();
    let out = pve.qm(&["create", "150"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(255),
            "unable to create VM 150 - CT 150 already exists on node 'testnode'\n"
        )
    );
    assert!(!pve.qemu_dir().join("150.conf").exists());

    // kvm defaults to 1: without KVM the start fails before QEMU runs.
    pve.qm(&["create", "151"]).ok("qm create 151");
    let mut cmd = Command::new(pve_bin("qm"));
    cmd.args(["start", "151"])
        .envs(pve.envs())
        .env("PVE_STANDIN_KVM_DEVICE", pve.root().join("no-kvm"));
    let out = run_cmd(cmd);
    assert_eq!(out.code, Some(255));
    assert_eq!(
        out.stderr,
        "KVM virtualisation configured, but not available. Either disable in VM \
         configuration or enable in BIOS.\n"
    );
    assert_eq!(pve.qm_status("151"), "status: stopped\n");

    let out = pve.qm(&["stop", &vmid]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (Some(255), format!("VM {vmid} not running\n"))
    );
    let out = pve.qm(&["terminal", &vmid]);
    assert_eq!(out.code, Some(255));
    assert!(
        out.stderr.contains("not implemented by the PVE stand-in"),
        "{out:?}"
    );

    for id in [vmid.as_str(), "151"] {
        pve.qm(&["destroy", id, "--purge"]).ok("qm destroy");
        assert!(!pve.qemu_dir().join(format!("{id}.conf")).exists());
    }
    let out = pve.qm(&["list"]).ok("qm list");
    assert_eq!(out.stdout, "");
    // The CT config in the way was not touched.
    assert!(pve.conf_dir().join("150.conf").exists());
}

/// Two real boots under TCG: a kernel whose init prints a marker on serial0 and powers
/// off (qmeventd's job: `quit` and cleanup), then firmware only (no kernel: SeaBIOS
/// keeps retrying) for stop/destroy/wait.
#[test]
fn qm_boots_a_guest_and_cleans_up_after_poweroff() {
    let pve = Pve::new();
    let kernel = repo().join("bundles/vm-kernel/vmlinuz");
    assert!(
        kernel.exists(),
        "{} missing: run hack/vm/get-kernel.sh",
        kernel.display()
    );
    let marker = "nexcage-qm-marker-42";
    let initrd = marker_initrd(pve.root(), marker);
    let vmid = pve.nextid();
    let args = format!(
        "-kernel {} -initrd {} -append 'console=ttyS0 quiet panic=-1' -boot menu=off -no-reboot",
        kernel.display(),
        initrd.display()
    );
    pve.qm(&[
        "create",
        &vmid,
        "--kvm",
        "0",
        "--memory",
        "256",
        "--serial0",
        "socket",
        "--args",
        &args,
        "--name",
        "booter",
    ])
    .ok("qm create");

    let out = pve.qm(&["start", &vmid]).ok("qm start");
    assert_eq!(out.stderr, "", "{out:?}");
    let serial = pve.qemu_run_dir().join(format!("{vmid}.serial0"));
    let mut conn = std::os::unix::net::UnixStream::connect(&serial)
        .unwrap_or_else(|e| panic!("connect {}: {e}", serial.display()));
    let reader = std::thread::spawn(move || {
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = conn.read_to_end(&mut buf); // EOF when QEMU quits
        String::from_utf8_lossy(&buf).into_owned()
    });
    let pid = pve.qemu_pid(&vmid).expect("QEMU runs with our -pidfile");
    assert_ne!(
        ppid(pid),
        std::process::id(),
        "QEMU is not the caller's child"
    );
    let out = pve.qm(&["status", &vmid]).ok("qm status").stdout;
    assert!(
        out == "status: running\n" || out == "status: shutdown\n",
        "{out}"
    );
    let out = pve.qm(&["list"]).ok("qm list").stdout;
    let row = out.lines().nth(1).unwrap_or_default().to_string();
    if pve.qemu_pid(&vmid).is_some() {
        assert_eq!(
            row,
            qm_list_line(&vmid, "booter", "running", "256", &pid.to_string()),
            "{out}"
        );
    }

    // The guest powers off; QEMU (-no-shutdown) stays until qmeventd sends `quit`.
    let out = pve.qm(&["wait", &vmid, "--timeout", "60"]).ok("qm wait");
    assert!(
        out.stdout.is_empty()
            || out.stdout == format!("waiting until VM {vmid} stops (PID {pid})\n"),
        "{out:?}"
    );
    let console = reader.join().unwrap();
    assert!(console.contains(marker), "serial0: {console:?}");
    assert_eq!(pve.qm_status(&vmid), "status: stopped\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(pve.qemu_run_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers(), Vec::<String>::new(), "run files left");
    let out = pve.qm(&["list"]).ok("qm list").stdout;
    assert_eq!(
        out.lines().nth(1).unwrap(),
        qm_list_line(&vmid, "booter", "stopped", "256", "0")
    );

    // Second boot, firmware only: a VM that stays up.
    pve.qm(&[
        "set",
        &vmid,
        "--delete",
        "args,serial0",
        "--memory",
        "64",
        "--vga",
        "none",
    ])
    .ok("qm set");
    pve.qm(&["start", &vmid]).ok("qm start (firmware only)");
    let out = pve.qm(&["start", &vmid]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (Some(255), format!("VM {vmid} already running\n"))
    );
    assert_eq!(pve.qm_status(&vmid), "status: running\n");
    let out = pve.qm(&["destroy", &vmid]);
    assert_eq!(
        (out.code, out.stderr.clone()),
        (
            Some(255),
            format!("VM {vmid} is running - destroy failed\n")
        )
    );
    let out = pve.qm(&["wait", &vmid, "--timeout", "1"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(255), "wait failed - got timeout\n")
    );
    let pid = pve.qemu_pid(&vmid).unwrap();
    pve.qm(&["stop", &vmid]).ok("qm stop");
    assert_eq!(pve.qm_status(&vmid), "status: stopped\n");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || pve.qemu_pid(&vmid).is_none());
    pve.qm(&["destroy", &vmid, "--purge"]).ok("qm destroy");
    assert!(!pve.qemu_dir().join(format!("{vmid}.conf")).exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(leftovers(), Vec::<String>::new(), "run files left");
}
