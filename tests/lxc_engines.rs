//! The `lxc` backend under real engines: podman (through conmon, `--runtime <built
//! nexcage> --runtime-flag config=FILE`) and containerd 1.6's runc v2 shim (`ctr run
//! --runc-binary <wrapper adding --config>`).
//!
//! Every workload first prints its PID 1's command line: on this backend that is
//! `nexcage init`, never the workload itself (as with crun), which proves the container
//! really ran on LXC. While a container runs, `lxc-ls` lists it; once the engine has
//! removed it, nothing of it is left: no nexcage record, no runtime directory, no LXC
//! definition, no cgroup.
//!
//! podman passes no `--root`, so its containers live under nexcage's default root
//! /run/nexcage (LXC definitions in /run/nexcage/lxc/lxc); containerd's shim passes
//! `--root /run/containerd/runc/<namespace>`. Both roots are shared with other tests,
//! so every check names this test's own containers, which have unique names and ids
//! and guards that remove them (`podman rm -f`, hack/containerd/stop.sh) pass or fail.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serial_test::serial;

use common::{CRUN, Containerd, Out, nexcage, ok, run_cmd, unique};

const IMAGE: &str = "localhost/nexcage-busybox:latest";
/// nexcage's root when the caller passes no --root (podman never does).
const PODMAN_ROOT: &str = "/run/nexcage";
/// containerd's shim passes `--root /run/containerd/runc/<namespace>`.
const CTR_ROOT: &str = "/run/containerd/runc/default";
/// Selects the lxc backend through `annotation_backends`.
const ON_LXC: &str = "org.nexcage.backend=lxc";
/// Selects the lxc backend through the config's rule.
const BY_RULE: &str = "nx.test/lxc=yes";
/// Prepended to every workload: PID 1's command line, NULs as spaces, on a line.
const SHOW_PID1: &str = "tr '\\0' ' ' </proc/1/cmdline; echo; ";
/// What SHOW_PID1 prints on the lxc backend (podman's spec mounts /dev, so the
/// runtime directory appears under it).
const NEXCAGE_INIT: &str = "/dev/.nexcage/nexcage init --dir /dev/.nexcage ";
/// Exits 0 on SIGTERM, so a stop that works is quick and leaves exit code 0.
const SERVE: &str = "trap 'exit 0' TERM; echo started; sleep 1000 & wait";

/// crun by default; lxc by `org.nexcage.backend=lxc` or by the rule on `nx.test/lxc`.
fn config_json(default: &str) -> String {
    format!(
        r#"{{"default":"{default}",
            "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},"lxc":{{"type":"lxc"}}}},
            "annotation_backends":["lxc","crun"],
            "rules":[{{"backend":"lxc","annotations":{{"nx.test/lxc":"yes"}}}}]}}"#
    )
}

/// `sh -c SCRIPT` preceded by SHOW_PID1.
fn shown(script: &str) -> String {
    format!("{SHOW_PID1}{script}")
}

/// The output after SHOW_PID1's line, which must name nexcage init.
fn after_init(out: &Out, newline: &str) -> String {
    let expected = format!("{NEXCAGE_INIT}{newline}");
    assert!(
        out.stdout.starts_with(&expected),
        "PID 1 is not nexcage init: code {:?} stdout {:?} stderr {:?}",
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout[expected.len()..].to_string()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `lxc-ls` of the lxc backend's lxcpath under nexcage root `root`.
fn lxc_ls(root: &str, running: bool) -> Vec<String> {
    let mut cmd = Command::new("lxc-ls");
    cmd.arg("-P").arg(Path::new(root).join("lxc/lxc")).arg("-1");
    if running {
        cmd.arg("--running");
    }
    let out = run_cmd(cmd, None);
    assert_eq!(out.code, Some(0), "lxc-ls: {}", out.stderr);
    out.stdout.split_whitespace().map(str::to_string).collect()
}

fn recorded_backend(root: &str, id: &str) -> String {
    let path = Path::new(root).join("containers").join(id);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["backend"].as_str().unwrap().to_string()
}

/// The container runs on the lxc backend: recorded so, and LXC runs it.
fn assert_running_on_lxc(root: &str, id: &str) {
    assert_eq!(recorded_backend(root, id), "lxc");
    assert!(
        Path::new(root).join("backends/lxc").join(id).is_dir(),
        "no runtime directory for {id}"
    );
    let running = lxc_ls(root, true);
    assert!(running.contains(&id.to_string()), "lxc-ls: {running:?}");
}

/// The cgroup `rel` in every hierarchy (cgroup v1 controllers, or v2's one).
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join(rel)];
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        dirs.push(e.path().join(rel));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// What is left of container `id` under nexcage root `root`: record, runtime dir,
/// LXC definition, `lxc-ls` entry, LXC monitor cgroup, the container's `cgroup`.
/// Leftover cgroups (empty once the container is gone) are reported and removed, so a
/// failing test still leaves the machine clean.
fn leftovers(root: &str, id: &str, cgroup: &str) -> Vec<String> {
    let root_path = Path::new(root);
    let mut left: Vec<String> = [
        root_path.join("containers").join(id),
        root_path.join("backends/lxc").join(id),
        root_path.join("lxc/lxc").join(id),
    ]
    .into_iter()
    .filter(|d| d.exists())
    .map(|d| d.display().to_string())
    .collect();
    if lxc_ls(root, false).contains(&id.to_string()) {
        left.push(format!("lxc-ls -P {root}/lxc/lxc lists {id}"));
    }
    let mut state = Command::new(nexcage());
    state.args(["--root", root, "state", id]);
    let state = run_cmd(state, None);
    if !state.stderr.contains("does not exist") {
        left.push(format!("nexcage state {id}: {:?}", state.stdout));
    }
    // The engine and LXC remove cgroups asynchronously: give them a moment.
    let monitor = format!("nexcage.monitor/{id}");
    let cgroups = || -> Vec<PathBuf> {
        cgroup_dirs(cgroup)
            .into_iter()
            .chain(cgroup_dirs(&monitor))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroups().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for dir in cgroups() {
        left.push(format!("cgroup {}", dir.display()));
        let _ = std::fs::remove_dir(&dir);
    }
    left
}

fn assert_gone(root: &str, id: &str, cgroup: &str) {
    let left = leftovers(root, id, cgroup);
    assert!(left.is_empty(), "{id} left behind: {left:#?}");
}

/// podman's cgroup (cgroupfs manager) for a container.
fn podman_cgroup(id: &str) -> String {
    format!("libpod_parent/libpod-{id}")
}

/// podman with nexcage as its runtime and this file's routing config.
struct Podman {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("nexcage-lxc-engines-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("nexcage.json");
        std::fs::write(&config, config_json("crun")).unwrap();
        Podman { _dir: dir, config }
    }

    fn line(&self) -> String {
        format!(
            "podman --runtime '{}' --runtime-flag 'config={}'",
            nexcage(),
            self.config.display()
        )
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--runtime")
            .arg(nexcage())
            .arg("--runtime-flag")
            .arg(format!("config={}", self.config.display()))
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        run_cmd(self.cmd(args), None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Out {
        run_cmd(self.cmd(args), Some(stdin))
    }

    /// Runs and asserts exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code,
            Some(0),
            "podman {args:?}: stdout {:?} stderr {:?}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// `podman ARGS` (a shell-quoted string) inside script(1), which gives it a
    /// terminal (for -it) and feeds it `stdin`; script -e returns podman's status.
    fn in_terminal(&self, args: &str, stdin: &str) -> Out {
        let line = format!("{} {args}", self.line());
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        run_cmd(cmd, Some(stdin))
    }

    /// `run --rm --name NAME --cidfile F FLAGS IMAGE sh -c SCRIPT`; returns the
    /// output and the container's id.
    fn run_rm(&self, flags: &[&str], script: &str, stdin: Option<&str>) -> (Out, String) {
        let name = unique("nxl-rm");
        let _guard = Container::new(&name);
        let tmp = tempfile::tempdir().unwrap();
        let cidfile = tmp.path().join("cid");
        let mut args = vec![
            "run",
            "--rm",
            "--name",
            &name,
            "--cidfile",
            cidfile.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        args.extend([IMAGE, "sh", "-c", script]);
        let out = match stdin {
            Some(text) => self.run_with_stdin(&args, text),
            None => self.run(&args),
        };
        let id = std::fs::read_to_string(&cidfile)
            .unwrap_or_else(|e| panic!("cidfile: {e}; stderr {:?}", out.stderr));
        (out, id.trim().to_string())
    }

    /// `run --rm` on the lxc backend by annotation: asserts PID 1 was nexcage init
    /// and that the container is gone afterwards; returns exit code and the rest of
    /// stdout.
    fn run_rm_on_lxc(&self, flags: &[&str], script: &str) -> (Option<i32>, String) {
        let mut all = vec!["--annotation", ON_LXC];
        all.extend_from_slice(flags);
        let (out, id) = self.run_rm(&all, &shown(script), None);
        let left = leftovers(PODMAN_ROOT, &id, &podman_cgroup(&id));
        let rest = after_init(&out, "\n");
        assert!(left.is_empty(), "{id} left behind: {left:#?}");
        (out.code, rest)
    }

    /// `run -d --name NAME ARGS...`: the started container, removed when dropped.
    fn detach(&self, name: &str, args: &[&str]) -> Container {
        let mut guard = Container::new(name);
        let mut argv = vec!["run", "-d", "--name", name];
        argv.extend_from_slice(args);
        guard.id = self.ok(&argv).trim().to_string();
        assert_eq!(guard.id.len(), 64, "container id {:?}", guard.id);
        guard
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
            .trim()
            .to_string()
    }
}

/// A podman container by unique name; `podman rm -f` when dropped, pass or fail.
struct Container {
    name: String,
    id: String,
}

impl Container {
    fn new(name: &str) -> Container {
        Container {
            name: name.to_string(),
            id: String::new(),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // nexcage deletes by the record, which holds the backend and its config.
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `run --rm`: exact stdout, stderr and exit status on the lxc backend, chosen by the
/// backend annotation and by the config's rule; without either it is crun's.
#[test]
#[serial(podman)]
fn podman_run_rm_routed_to_lxc() {
    let podman = Podman::new();
    for annotation in [ON_LXC, BY_RULE] {
        let (out, id) = podman.run_rm(
            &["--annotation", annotation],
            &shown("echo hi; echo err >&2; exit 3"),
            None,
        );
        assert_eq!(out.code, Some(3), "{annotation}: {}", out.stderr);
        assert_eq!(after_init(&out, "\n"), "hi\n", "{annotation}");
        assert_eq!(out.stderr, "err\n", "{annotation}");
        assert_gone(PODMAN_ROOT, &id, &podman_cgroup(&id));
    }
    // The control: on crun the workload is PID 1 itself.
    let (out, _) = podman.run_rm(&[], &shown("exit 4"), None);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stdout.starts_with("sh -c "), "{:?}", out.stdout);

    // stdin through -i, no terminal.
    let flags = ["-i", "--annotation", ON_LXC];
    let script = shown("test -t 0 || echo no-tty; read x; echo got:$x");
    let (out, id) = podman.run_rm(&flags, &script, Some("piped\n"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(after_init(&out, "\n"), "no-tty\ngot:piped\n");
    assert_gone(PODMAN_ROOT, &id, &podman_cgroup(&id));
}

/// `-d`, `ps`, `logs`, `exec` (plain and -t), `stop` by SIGTERM, a restart, `rm`.
#[test]
#[serial(podman)]
fn podman_detached_lifecycle() {
    let podman = Podman::new();
    let name = unique("nxl-d");
    let c = podman.detach(&name, &["--annotation", ON_LXC, IMAGE, "sh", "-c", SERVE]);
    assert_running_on_lxc(PODMAN_ROOT, &c.id);

    // The pid nexcage reports is the one conmon watches.
    let mut state = Command::new(nexcage());
    state.args(["state", &c.id]);
    let state = run_cmd(state, None);
    assert_eq!(state.code, Some(0), "{}", state.stderr);
    let state: serde_json::Value = serde_json::from_str(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");
    assert_eq!(
        state["pid"].as_i64().unwrap().to_string(),
        podman.inspect(&name, "{{.State.Pid}}")
    );
    let ps = podman.ok(&[
        "ps",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.ID}} {{.Status}}",
    ]);
    assert!(ps.starts_with(&format!("{} Up ", &c.id[..12])), "{ps:?}");

    wait_until("podman logs", Duration::from_secs(10), || {
        let logs = podman.ok(&["logs", &name]);
        (logs == "started\n").then_some(()).ok_or(logs)
    });

    let out = podman.run(&["exec", &name, "sh", "-c", &shown("echo in-exec; exit 5")]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert_eq!(after_init(&out, "\n"), "in-exec\n");
    let out = podman.run(&[
        "exec",
        "-e",
        "X=42",
        "-w",
        "/tmp",
        "--user",
        "1000",
        &name,
        "sh",
        "-c",
        "echo $X $PWD $(id -u)",
    ]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "42 /tmp 1000\n"));
    let out = podman.run(&[
        "exec",
        "-t",
        &name,
        "sh",
        "-c",
        "test -t 0 && echo exec-tty; exit 6",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(6), "exec-tty\r\n"),
        "{}",
        out.stderr
    );

    // SIGTERM reaches the trap: exit 0, long before the 10 s timeout.
    let started = Instant::now();
    podman.ok(&["stop", "--time", "10", &name]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop needed SIGKILL"
    );
    assert_eq!(podman.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(podman.inspect(&name, "{{.State.ExitCode}}"), "0");
    // podman's cleanup deleted it from nexcage and LXC.
    wait_until("stopped container deleted", Duration::from_secs(10), || {
        let listed = lxc_ls(PODMAN_ROOT, false);
        let record = Path::new(PODMAN_ROOT).join("containers").join(&c.id);
        (!listed.contains(&c.id) && !record.exists())
            .then_some(())
            .ok_or_else(|| format!("lxc-ls {listed:?}, record {}", record.exists()))
    });

    // A restart creates the same id on LXC again.
    podman.ok(&["start", &name]);
    assert_running_on_lxc(PODMAN_ROOT, &c.id);
    wait_until("logs after restart", Duration::from_secs(10), || {
        let logs = podman.ok(&["logs", &name]);
        (logs == "started\nstarted\n").then_some(()).ok_or(logs)
    });
    podman.ok(&["stop", "--time", "10", &name]);
    assert_eq!(podman.inspect(&name, "{{.State.ExitCode}}"), "0");
    podman.ok(&["rm", &name]);
    let all = podman.ok(&["ps", "--all", "--format", "{{.Names}}"]);
    assert!(!all.lines().any(|l| l == name), "{all}");
    assert_gone(PODMAN_ROOT, &c.id, &podman_cgroup(&c.id));

    // PID 1 is nexcage init, so a workload that does not trap SIGTERM is not shielded
    // from it as a PID 1 would be: the stop is just as prompt, status 128+15.
    let name = unique("nxl-d");
    let c = podman.detach(&name, &["--annotation", ON_LXC, IMAGE, "sleep", "1000"]);
    let started = Instant::now();
    podman.ok(&["stop", "--time", "10", &name]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop needed SIGKILL"
    );
    assert_eq!(podman.inspect(&name, "{{.State.ExitCode}}"), "143");
    podman.ok(&["rm", &name]);
    assert_gone(PODMAN_ROOT, &c.id, &podman_cgroup(&c.id));
}

/// `run -it` and `exec -it` with script(1) as the terminal.
#[test]
#[serial(podman)]
fn podman_interactive_terminal() {
    let podman = Podman::new();
    let name = unique("nxl-it");
    let _guard = Container::new(&name);
    let args = format!(
        "run --rm -it --name {name} --annotation {ON_LXC} {IMAGE} sh -c \"{}\"",
        shown("test -t 0 && echo tty; read x; echo got:$x; exit 4").replace('$', "\\$")
    );
    let out = podman.in_terminal(&args, "typed\n");
    assert_eq!(out.code, Some(4), "{:?} {:?}", out.stdout, out.stderr);
    // The terminals (script's and the container's) echo the input, anywhere in the
    // workload's output, even mid-line: take the echoes out first.
    let shown = out
        .stdout
        .replace("got:typed", "GOT")
        .replace("typed\r\n", "")
        .replace("GOT", "got:typed");
    assert!(
        shown.contains(&format!("{NEXCAGE_INIT}\r\n"))
            && shown.contains("tty\r\n")
            && shown.contains("got:typed\r\n"),
        "{:?}",
        out.stdout
    );

    let name = unique("nxl-it");
    let c = podman.detach(&name, &["--annotation", ON_LXC, IMAGE, "sleep", "1000"]);
    let args =
        format!("exec -it {name} sh -c 'test -t 0 && echo tty; read a; echo got:$a; exit 2'");
    let out = podman.in_terminal(&args, "xyz\n");
    assert_eq!(out.code, Some(2), "{:?} {:?}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("tty\r\n") && out.stdout.contains("got:xyz\r\n"),
        "{:?}",
        out.stdout
    );
    podman.ok(&["rm", "--force", "--time", "0", &name]);
    assert_gone(PODMAN_ROOT, &c.id, &podman_cgroup(&c.id));
}

/// `-e`, `-w` and `--user` reach the workload.
#[test]
#[serial(podman)]
fn podman_env_workdir_user() {
    let podman = Podman::new();
    let (code, out) = podman.run_rm_on_lxc(
        &["-e", "FOO=bar", "-w", "/tmp", "--user", "1000:1000"],
        "echo $FOO; pwd; id -u; id -g",
    );
    assert_eq!((code, out.as_str()), (Some(0), "bar\n/tmp\n1000\n1000\n"));
}

/// A port published with `-p` reaches busybox httpd in the container from the host.
#[test]
#[serial(podman)]
fn podman_published_port() {
    let podman = Podman::new();
    // 18080 unless something holds it; then whatever the kernel hands out.
    let port = std::net::TcpListener::bind("0.0.0.0:18080")
        .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = unique("nxl-http");
    let publish = format!("{port}:80");
    let c = podman.detach(
        &name,
        &[
            "--annotation",
            ON_LXC,
            "-p",
            &publish,
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-lxc >/www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    assert_running_on_lxc(PODMAN_ROOT, &c.id);
    let url = format!("http://127.0.0.1:{port}/");
    let curl = || {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "2", &url]);
        run_cmd(cmd, None)
    };
    wait_until(
        "httpd through the published port",
        Duration::from_secs(15),
        || {
            let out = curl();
            (out.code == Some(0) && out.stdout == "hello-from-lxc\n")
                .then_some(())
                .ok_or_else(|| format!("curl {:?}: {:?} {:?}", out.code, out.stdout, out.stderr))
        },
    );
    podman.ok(&["stop", "--time", "10", &name]);
    podman.ok(&["rm", &name]);
    assert_gone(PODMAN_ROOT, &c.id, &podman_cgroup(&c.id));
    let out = curl();
    assert_ne!(out.code, Some(0), "still served: {:?}", out.stdout);
}

/// `--memory`, `--pids-limit` and `--cpus` are the container's cgroup limits.
#[test]
#[serial(podman)]
fn podman_resource_limits() {
    let podman = Podman::new();
    let (code, out) = podman.run_rm_on_lxc(
        &["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"],
        // cgroup v1 paths, else v2's.
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max;
         cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max;
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
    );
    assert_eq!((code, out.as_str()), (Some(0), "67108864\n50\n50000\n"));
}

/// `--read-only`: the root cannot be written, podman's /tmp tmpfs can.
#[test]
#[serial(podman)]
fn podman_read_only_root() {
    let podman = Podman::new();
    let (code, out) = podman.run_rm_on_lxc(
        &["--read-only"],
        "if touch /probe 2>/dev/null; then echo root-writable; else echo root-ro; fi;
         touch /tmp/probe && echo tmp-rw",
    );
    assert_eq!((code, out.as_str()), (Some(0), "root-ro\ntmp-rw\n"));
}

/// A container LXC fails to start (an unknown sysctl) leaves nothing behind either.
/// Tried several times: after a failed start LXC's monitor removes its own cgroup
/// (`nexcage.monitor/<id>`) only sometimes, so nexcage has to.
#[test]
#[serial(podman)]
fn podman_failed_start_leaves_nothing() {
    let podman = Podman::new();
    for _ in 0..8 {
        let sysctl = "net.ipv4.nexcage_no_such_key=1";
        let flags = ["--annotation", ON_LXC, "--sysctl", sysctl];
        let (out, id) = podman.run_rm(&flags, "echo ran", None);
        assert_ne!(out.code, Some(0), "{:?}", out.stdout);
        assert_eq!(out.stdout, "");
        assert!(
            out.stderr.contains("lxc-start") && out.stderr.contains("net.ipv4.nexcage_no_such_key"),
            "{}",
            out.stderr
        );
        assert_gone(PODMAN_ROOT, &id, &podman_cgroup(&id));
    }
}

/// `--privileged` (every host device, all capabilities) works as on crun.
#[test]
#[serial(podman)]
fn podman_privileged() {
    let podman = Podman::new();
    let (code, out) = podman.run_rm_on_lxc(&["--privileged"], "echo ran; exit 3");
    assert_eq!((code, out.as_str()), (Some(3), "ran\n"));
}

/// podman enters a container's namespaces through the pid it got from nexcage:
/// `--uts/--ipc/--network container:NAME`, `podman cp`. Those must be the container's
/// namespaces, never the host's (the holder joins them once init calls in).
#[test]
#[serial(podman)]
fn podman_joins_the_containers_namespaces() {
    let podman = Podman::new();
    let name = unique("nxl-ns");
    let c = podman.detach(
        &name,
        &[
            "--annotation",
            ON_LXC,
            "--hostname",
            "inside-lxc",
            IMAGE,
            "sleep",
            "1000",
        ],
    );
    assert_running_on_lxc(PODMAN_ROOT, &c.id);
    assert_eq!(podman.ok(&["exec", &name, "hostname"]), "inside-lxc\n");

    let mut wrong = Vec::new();
    let pid = podman.inspect(&name, "{{.State.Pid}}");
    let ns = |pid: &str, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    for kind in ["mnt", "uts", "ipc", "net", "cgroup", "pid"] {
        if ns(&pid, kind) == ns("self", kind) {
            wrong.push(format!(
                ".State.Pid {pid} is in the host's {kind} namespace"
            ));
        }
    }
    // A crun container sharing the UTS namespace sees the container's hostname.
    let uts = format!("container:{name}");
    let out = podman.run(&["run", "--rm", "--uts", &uts, IMAGE, "hostname"]);
    if out.stdout != "inside-lxc\n" {
        wrong.push(format!(
            "--uts {uts}: hostname {:?} {:?}",
            out.stdout, out.stderr
        ));
    }
    // A crun container sharing the pid namespace sees the container's processes.
    let pid_ns = format!("container:{name}");
    let out = podman.run(&["run", "--rm", "--pid", &pid_ns, IMAGE, "ps", "-o", "args"]);
    if !out.stdout.contains("sleep 1000") || !out.stdout.contains("nexcage init") {
        wrong.push(format!("--pid {pid_ns}: {:?} {:?}", out.stdout, out.stderr));
    }
    // podman top lists the container's processes; nsenter -t PID -a enters it all.
    let top = podman.run(&["top", &name]);
    if !top.stdout.contains("sleep 1000") {
        wrong.push(format!("podman top: {:?} {:?}", top.stdout, top.stderr));
    }
    let out = run_cmd(
        {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid, "-a", "hostname"]);
            c
        },
        None,
    );
    if out.stdout != "inside-lxc\n" {
        wrong.push(format!("nsenter -a: {:?} {:?}", out.stdout, out.stderr));
    }
    // podman cp reads the container's files, not the host's.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("hostname");
    let from = format!("{name}:/etc/hostname");
    let out = podman.run(&["cp", &from, copy.to_str().unwrap()]);
    let text = std::fs::read_to_string(&copy).unwrap_or_default();
    if text.trim_end() != "inside-lxc" {
        wrong.push(format!("podman cp {from}: {text:?} {:?}", out.stderr));
    }
    podman.ok(&["rm", "--force", "--time", "0", &name]);
    assert_gone(PODMAN_ROOT, &c.id, &podman_cgroup(&c.id));
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn containerd_ctr_on_lxc() {
    let containerd = Containerd::start(None);
    containerd.import("default");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("nexcage.json");
    std::fs::write(&config, config_json("lxc")).unwrap();
    // ctr takes a binary, not flags: a wrapper adds the config.
    let wrapper = tmp.path().join("nexcage-lxc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' --config '{}' \"$@\"\n",
            nexcage(),
            config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = wrapper.to_str().unwrap();

    let id = unique("nxl-ctr");
    let script = shown("echo hi; echo err >&2; exit 3");
    let out = run_cmd(
        containerd.ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            wrapper,
            IMAGE,
            &id,
            "sh",
            "-c",
            &script,
        ]),
        None,
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(after_init(&out, "\n"), "hi\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(ok(containerd.ctr(&["container", "ls", "-q"])), "");
    assert_gone(CTR_ROOT, &id, &format!("default/{id}"));

    let id = unique("nxl-ctr");
    let fifo = containerd.dir.join("fifo").display().to_string();
    ok(containerd.ctr(&[
        "run",
        "-d",
        "--fifo-dir",
        &fifo,
        "--runc-binary",
        wrapper,
        IMAGE,
        &id,
        "sh",
        "-c",
        "trap 'exit 0' TERM; sleep 1000 & wait",
    ]));
    assert_eq!(containerd.task_status(&id), "RUNNING");
    assert_running_on_lxc(CTR_ROOT, &id);
    let out = run_cmd(
        containerd.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            &shown("echo in-exec; exit 5"),
        ]),
        None,
    );
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert_eq!(after_init(&out, "\n"), "in-exec\n");
    ok(containerd.ctr(&["task", "kill", &id]));
    wait_until("task stopped", Duration::from_secs(10), || {
        let status = containerd.task_status(&id);
        (status == "STOPPED").then_some(()).ok_or(status)
    });
    let out = run_cmd(containerd.ctr(&["task", "delete", &id]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // ctr warns about a non-zero exit code; SIGTERM hit the trap, so there is none.
    assert!(!out.stderr.contains("exit code"), "{}", out.stderr);
    ok(containerd.ctr(&["container", "rm", &id]));
    assert_eq!(ok(containerd.ctr(&["container", "ls", "-q"])), "");
    assert_gone(CTR_ROOT, &id, &format!("default/{id}"));
}
