//! Shared helpers for the integration tests: they drive the real nexcage binary
//! against the real crun/runc (and podman, containerd) installed by hack/setup.sh.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod pve;
pub mod qm;

use oci_spec::runtime::{RootBuilder, Spec};
use tempfile::TempDir;

pub const CRUN: &str = "/usr/bin/crun";
pub const RUNC: &str = "/usr/sbin/runc";

pub fn nexcage() -> &'static str {
    env!("CARGO_BIN_EXE_nexcage")
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shared read-only busybox rootfs that hack/setup.sh builds.
pub fn rootfs() -> PathBuf {
    let path = repo().join("bundles/rootfs");
    assert!(
        path.join("bin/busybox").exists(),
        "{} missing: run hack/setup.sh first",
        path.display()
    );
    path
}

/// A unique container id for this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bundle directory whose config.json is bundles/busybox/config.json with the
/// given process args, pointing at the shared rootfs.
pub struct Bundle {
    pub dir: TempDir,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        Bundle::with(args, |_| {})
    }

    pub fn with(args: &[&str], edit: impl FnOnce(&mut Spec)) -> Bundle {
        let mut spec =
            Spec::load(repo().join("bundles/busybox/config.json")).expect("example bundle");
        spec.set_root(Some(
            RootBuilder::default()
                .path(rootfs())
                .readonly(true)
                .build()
                .unwrap(),
        ));
        if let Some(p) = spec.process_mut() {
            p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        }
        edit(&mut spec);
        let dir = tempfile::Builder::new()
            .prefix("nexcage-bundle-")
            .tempdir()
            .unwrap();
        spec.save(dir.path().join("config.json")).unwrap();
        Bundle { dir }
    }

    /// A valid spec whose root.path does not exist.
    pub fn missing_rootfs() -> Bundle {
        Bundle::with(&["true"], |s| {
            s.set_root(Some(
                oci_spec::runtime::RootBuilder::default()
                    .path("/nonexistent/rootfs")
                    .build()
                    .unwrap(),
            ));
        })
    }

    pub fn annotated(args: &[&str], annotations: &[(&str, &str)]) -> Bundle {
        let map: HashMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Bundle::with(args, |s| {
            s.set_annotations(Some(map));
        })
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// An isolated nexcage root (and optional routing config) for one test.
pub struct Env {
    pub root: TempDir,
    pub config: Option<PathBuf>,
    _config_dir: Option<TempDir>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            root: tempfile::Builder::new()
                .prefix("nexcage-root-")
                .tempdir()
                .unwrap(),
            config: None,
            _config_dir: None,
        }
    }

    /// With a routing config file holding `json`.
    pub fn with_config(json: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nexcage.json");
        std::fs::write(&path, json).unwrap();
        let mut env = Env::new();
        env.config = Some(path);
        env._config_dir = Some(dir);
        env
    }

    /// A second root using this one's routing config (two nexcage installations
    /// with the same backends).
    pub fn sharing_config(&self) -> Env {
        let mut env = Env::new();
        env.config = self.config.clone();
        env
    }

    /// crun as default, runc by `r-*` ids; both selectable by annotation.
    pub fn two_backends() -> Env {
        Env::with_config(&format!(
            r#"{{"default":"crun",
                "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},
                             "runc":{{"type":"oci","path":"{RUNC}"}}}},
                "annotation_backends":["crun","runc"],
                "rules":[{{"backend":"runc","id":"r-*"}}]}}"#
        ))
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(nexcage());
        cmd.arg("--root").arg(self.root.path());
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run nexcage")
    }

    /// Runs with stdio in files and a deadline (for containers that hold their stdio).
    pub fn out(&self, args: &[&str]) -> Out {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_cmd(cmd, None)
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nexcage {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// For commands that leave a container holding the stdio they were given
    /// (`create`, `run -d`, `exec -d`): stdio goes to a file, not a pipe we would
    /// wait on forever. Asserts success.
    pub fn detached(&self, args: &[&str]) {
        let log = tempfile::NamedTempFile::new().unwrap();
        self.detached_to(args, log.path());
    }

    /// `detached`, with the container's stdio kept in `log` (to read what it says).
    pub fn detached_to(&self, args: &[&str], log: &Path) {
        let file = std::fs::File::create(log).unwrap();
        let status = self
            .cmd()
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .expect("run nexcage");
        assert!(
            status.success(),
            "nexcage {args:?} failed ({status}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "nexcage {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Polls `state` until the status is `want` (containers stop asynchronously).
    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.status(id);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: status {got}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Nothing of any container is left: no record, nothing in any backend root.
    pub fn assert_clean(&self) {
        let leftovers = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| d.map(|e| e.unwrap().path().display().to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            leftovers(self.root().join("containers")),
            Vec::<String>::new()
        );
        for backend in leftovers(self.root().join("backends")) {
            let inside: Vec<String> = leftovers(PathBuf::from(&backend))
                .into_iter()
                // A pct backend's empty archive for `pct create` is its own, not a
                // container's; so are a qm backend's initramfs and (empty) socket dir.
                .filter(|p| !p.ends_with(".lock") && !p.ends_with("/empty.tar"))
                .filter(|p| !p.contains("/initramfs-"))
                .filter(|p| {
                    !p.ends_with("/@sockets")
                        || std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
                })
                .collect();
            let within: Vec<String> = inside
                .iter()
                .flat_map(|p| leftovers(PathBuf::from(p)))
                .collect();
            assert_eq!(
                inside,
                Vec::<String>::new(),
                "backend root {backend}: {within:?}"
            );
        }
    }
}

impl Drop for Env {
    /// Best effort: never leave containers running behind a failed test.
    fn drop(&mut self) {
        let Ok(out) = self.cmd().args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.cmd().args(["delete", "--force", id]).output();
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What is wrong with `out` as a refusal, if anything: bad input must fail with
/// exactly one stderr line naming the problem (one of `needles`), and no panic.
pub fn refusal(out: &Output, needles: &[&str]) -> Option<String> {
    let err = stderr(out);
    if out.status.success() {
        Some("succeeded".into())
    } else if err.contains("panicked") || err.trim_end().lines().count() != 1 {
        Some(format!("one line expected: {err:?}"))
    } else if !needles.iter().any(|n| err.contains(n)) {
        Some(format!("{err:?} should say one of {needles:?}"))
    } else {
        None
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Per engine command (podman, ctr); a container start takes well under a second here.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished command: exit code (None if killed by a signal) and its output.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdout/stderr in files rather than pipes (a daemonised conmon must
/// not be able to make us wait for EOF forever) and a deadline.
pub fn run_cmd(mut cmd: Command, stdin: Option<&str>) -> Out {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    match stdin {
        Some(text) => {
            let mut input = tempfile::tempfile().unwrap();
            input.write_all(text.as_bytes()).unwrap();
            input.rewind().unwrap();
            cmd.stdin(input);
        }
        None => {
            cmd.stdin(Stdio::null());
        }
    }
    cmd.stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Out {
        code: status.code(),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// The HTTP status `url` answers with (curl, at most 2 s; "000" when nothing does).
pub fn http_status(url: &str) -> String {
    let curl = command(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "2",
        url,
    ]);
    run_cmd(curl, None).stdout
}

/// `argv[0] argv[1..]` as a command.
pub fn command(argv: &[&str]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// Writes an executable script (mode 0755).
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A live (not zombie) process.
pub fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `exec --detach --pid-file` of a sleeper: the pid file names a live process.
pub fn assert_detached_exec(env: &Env, scratch: &Path, id: &str) {
    let pid_file = scratch.join("exec.pid");
    env.detached(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
        "sleep",
        "1000",
    ]);
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(pid_alive(pid), "exec'd process {pid} is not running");
    // The pid is the process's own (as with runc), not a tool's in between.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"sleep\0"),
        "pid {pid} is {:?}",
        String::from_utf8_lossy(&cmdline)
    );
}

/// Runs `cmd`, asserts it succeeded, returns its stdout.
pub fn ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let out = run_cmd(cmd, None);
    assert_eq!(
        out.code,
        Some(0),
        "{what}: stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// A private containerd; stopped (tasks, containers, shims, mounts) when dropped.
pub struct Containerd {
    pub dir: PathBuf,
    pub sock: String,
}

impl Containerd {
    /// `config`: a containerd config file, else hack/containerd/config.toml.
    pub fn start(config: Option<&Path>) -> Containerd {
        // Short: the socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("nxc-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let mut d = Containerd {
            dir,
            sock: String::new(),
        };
        let mut cmd = Command::new(repo().join("hack/containerd/start.sh"));
        cmd.arg(&d.dir).args(config);
        d.sock = ok(cmd).trim().to_string();
        d
    }

    /// Copies the podman image (and for k8s.io the pause image) into `namespace`.
    pub fn import(&self, namespace: &str) {
        let mut cmd = Command::new(repo().join("hack/containerd/import-images.sh"));
        cmd.args([&self.sock, namespace]);
        ok(cmd);
    }

    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock).args(args);
        cmd
    }

    pub fn fifo_dir(&self) -> String {
        self.dir.join("fifo").display().to_string()
    }

    /// `ctr task ls` status of `id` ("" if it has no task).
    pub fn task_status(&self, id: &str) -> String {
        ok(self.ctr(&["task", "ls"]))
            .lines()
            .find_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
            })
            .unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("hack/containerd/stop.sh"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        // Never recurse into something still mounted (a container's rootfs).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = format!("{}/", self.dir.display());
        if mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| m.starts_with(&prefix))
        {
            eprintln!("{}: still has mounts, left in place", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A named network namespace (`ip netns`) with `addr` on its loopback, deleted on
/// drop: one an engine would have made for a container to join.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str, addr: &str) -> Netns {
        let ns = Netns {
            name: format!("{prefix}-{}", std::process::id()),
        };
        for args in [
            vec!["netns", "add", &ns.name],
            vec!["-n", &ns.name, "link", "set", "lo", "up"],
            vec!["-n", &ns.name, "addr", "add", addr, "dev", "lo"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}
