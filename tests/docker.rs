//! Docker 20.10 (Debian's docker.io) on the crun, runc, lxc, pct and qm backends. Each test runs a
//! private dockerd and containerd (hack/docker/start.sh: own roots, sockets, bridge
//! and cgroup parent; never the system ones) with nexcage registered in daemon.json
//! `runtimes`, one runtime per backend through `runtimeArgs: ["--config", FILE]`, as
//! an operator sets it up: Docker 20.10 has no `--annotation`. dockerd passes every
//! runtime `--root DIR/exec/runtime-runc/moby` and 64-hex ids, so the runtime
//! directories are deep (socket paths past sun_path's 108 bytes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pve::Pve;
use common::{Out, nexcage, repo, run_cmd, unique};
use serial_test::serial;

const IMAGE: &str = "nexcage-busybox";
const DOCKER: &str = "/usr/bin/docker";

/// A private dockerd with runtime `nx` routed to one backend.
struct Docker {
    dir: PathBuf,
    sock: String,
    /// Holds the nexcage config the runtime uses (and the stand-in for pct).
    _config: tempfile::TempDir,
}

impl Docker {
    fn start(config_json: &str) -> Docker {
        Docker::with_runtimes(&[("nx", config_json)])
    }

    /// One runtime per (name, nexcage config), each `runtimeArgs: ["--config", FILE]`.
    fn with_runtimes(runtimes: &[(&str, &str)]) -> Docker {
        let config = tempfile::Builder::new()
            .prefix("nexcage-docker-cfg-")
            .tempdir()
            .unwrap();
        let mut pairs = Vec::new();
        for (name, json) in runtimes {
            let path = config.path().join(format!("{name}.json"));
            std::fs::write(&path, json).unwrap();
            pairs.push(format!("{name}={}", path.display()));
        }
        // Short: containerd's socket lives in it (sun_path).
        let dir = PathBuf::from(format!("/tmp/nxd-{}", std::process::id()));
        let out = run_cmd(
            {
                let mut cmd = Command::new("bash");
                cmd.arg(repo().join("hack/docker/start.sh"))
                    .arg(&dir)
                    .args(&pairs)
                    .env("NEXCAGE_BIN", nexcage());
                cmd
            },
            None,
        );
        assert_eq!(out.code, Some(0), "start.sh: {}", out.stderr);
        Docker {
            dir,
            sock: out.stdout.trim().to_string(),
            _config: config,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock))
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        run_cmd(self.cmd(args), None)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, Some(0), "docker {args:?}: {}", out.stderr);
        out.stdout
    }

    /// nexcage's root as dockerd hands it to every runtime.
    fn nexcage_root(&self) -> PathBuf {
        self.dir.join("exec/runtime-runc/moby")
    }

    /// `docker ARGS` in a terminal (script(1) gives it one).
    fn in_terminal(&self, args: &str) -> Out {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{DOCKER} -H unix://{} {args}", self.sock),
            "/dev/null",
        ]);
        run_cmd(cmd, None)
    }

    /// No container left in dockerd or in nexcage's records.
    fn assert_clean(&self) {
        assert_eq!(self.ok(&["ps", "-aq"]), "");
        let records: Vec<_> = std::fs::read_dir(self.nexcage_root().join("containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(records.is_empty(), "{records:?}");
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("hack/docker/stop.sh"))
            .arg(&self.dir)
            .output();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What Docker users do with a container, on runtime `nx`; `backend` is the one the
/// config routes to, whose records say so.
fn scenarios(d: &Docker, backend: &str) {
    let rt = "--runtime=nx";
    // Output and exit status, stderr apart.
    let out = d.run(&[
        "run",
        "--rm",
        rt,
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(3), "out\n", "err\n")
    );
    // -e -w -u --hostname
    let out = d.ok(&[
        "run",
        "--rm",
        rt,
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--hostname",
        "dockhost",
        IMAGE,
        "sh",
        "-c",
        "echo $FOO $PWD $(id -u):$(id -g) $(hostname)",
    ]);
    assert_eq!(out, "bar /tmp 1000:1000 dockhost\n");
    // -i
    let mut cmd = d.cmd(&["run", "--rm", "-i", rt, IMAGE, "cat"]);
    cmd.env_remove("DOCKER_HOST");
    assert_eq!(run_cmd(cmd, Some("piped\n")).stdout, "piped\n");
    // -t: a pty of the container's own devpts.
    let out = d.in_terminal(&format!(
        "run --rm -t {rt} {IMAGE} sh -c 'tty; test -t 0 && echo isatty; exit 5'"
    ));
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("/dev/pts/") && out.stdout.contains("isatty"),
        "{:?}",
        out.stdout
    );
    // A missing command: 127 and runc's words.
    let out = d.run(&["run", "--rm", rt, IMAGE, "nosuchcmd"]);
    assert_eq!(out.code, Some(127), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
        "{}",
        out.stderr
    );
    // --read-only
    let out = d.run(&[
        "run",
        "--rm",
        rt,
        "--read-only",
        IMAGE,
        "sh",
        "-c",
        "touch /x",
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );

    // Detached: ps, logs, exec, top, stats, pause, update, restart, kill, rm.
    let name = unique("nxdock");
    let id = d
        .ok(&[
            "run",
            "-d",
            rt,
            "--name",
            &name,
            "--memory",
            "64m",
            IMAGE,
            "sh",
            "-c",
            "echo started; while :; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    let record = std::fs::read_to_string(d.nexcage_root().join("containers").join(&id)).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["backend"], backend);
    wait_for("the log", || d.ok(&["logs", &name]).contains("started"));
    assert!(
        d.ok(&["ps", "--format", "{{.Names}} {{.Status}}"])
            .contains(&format!("{name} Up"))
    );
    let out = d.run(&["exec", &name, "sh", "-c", "echo inside; exit 4"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(4), "inside\n"));
    let top = d.ok(&["top", &name]);
    assert!(top.contains("sleep") || top.contains("while"), "{top}");
    // stats are the container's cgroup's: its limit and its processes.
    let stats = d.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.PIDs}}",
        &name,
    ]);
    let (mem, pids) = stats.trim().split_once('|').unwrap();
    assert!(mem.ends_with("/ 64MiB"), "{stats}");
    assert!(pids.parse::<u32>().unwrap() >= 2, "{stats}");
    d.ok(&["pause", &name]);
    assert!(
        d.ok(&[
            "ps",
            "--format",
            "{{.Status}}",
            "-f",
            &format!("name={name}")
        ])
        .contains("Paused")
    );
    d.ok(&["unpause", &name]);
    d.ok(&["update", "--memory", "100m", "--memory-swap", "200m", &name]);
    let stats = d.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &name]);
    assert!(stats.trim().ends_with("/ 100MiB"), "{stats}");
    d.ok(&["restart", "-t", "1", &name]);
    wait_for("the restarted container's log", || {
        d.ok(&["logs", &name]).matches("started").count() == 2
    });
    d.ok(&["kill", &name]);
    assert_eq!(d.ok(&["wait", &name]), "137\n");
    d.ok(&["rm", &name]);
    d.assert_clean();
}

/// The memory limit visible inside, `--init`, `-p` reaching a server inside, `exec -t`
/// and `stop`.
fn more_scenarios(d: &Docker) {
    let rt = "--runtime=nx";
    // The memory limit is visible inside, and --init's tini runs (and can reap).
    let out = d.run(&[
        "run",
        "--rm",
        rt,
        "--memory",
        "64m",
        "--init",
        IMAGE,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "67108864\n", "")
    );
    // -p HOST:80 reaches busybox httpd in the container from the host.
    let port = 18_000 + (std::process::id() % 1000) as u16;
    let name = unique("nxweb");
    d.ok(&[
        "run",
        "-d",
        rt,
        "--name",
        &name,
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
    ]);
    let url = format!("http://127.0.0.1:{port}/");
    wait_for("httpd", || common::http_status(&url) == "404");
    d.ok(&["rm", "-f", &name]);
    // exec -t, and stop.
    let name = unique("nxstop");
    d.ok(&["run", "-d", rt, "--name", &name, IMAGE, "sleep", "1000"]);
    let out = d.in_terminal(&format!("exec -t {name} sh -c 'tty; exit 6'"));
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(out.stdout.starts_with("/dev/pts/"), "{:?}", out.stdout);
    // docker cp both ways: the container's root is the engine's rootfs.
    let files = tempfile::tempdir().unwrap();
    let into = files.path().join("into");
    std::fs::write(&into, "copied in\n").unwrap();
    d.ok(&["cp", into.to_str().unwrap(), &format!("{name}:/tmp/into")]);
    assert_eq!(d.ok(&["exec", &name, "cat", "/tmp/into"]), "copied in\n");
    d.ok(&["exec", &name, "sh", "-c", "echo written inside > /tmp/out"]);
    let out = files.path().join("out");
    d.ok(&["cp", &format!("{name}:/tmp/out"), out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "written inside\n");
    d.ok(&["stop", "-t", "1", &name]);
    d.ok(&["rm", &name]);
    d.assert_clean();
}

/// Docker's own delegates through nexcage: a runtime per backend (crun, runc), each
/// with `runtimeArgs: ["--config", FILE]` naming a config whose default it is.
#[test]
#[serial(docker)]
fn docker_on_crun_and_runc() {
    let config = |backend: &str, path: &str| {
        format!(
            r#"{{"default":"{backend}","backends":{{"{backend}":{{"type":"oci","path":"{path}"}}}}}}"#
        )
    };
    let crun = config("crun", common::CRUN);
    let runc = config("runc", common::RUNC);
    let d = Docker::with_runtimes(&[("nx-crun", &crun), ("nx-runc", &runc)]);
    for (rt, backend) in [("--runtime=nx-crun", "crun"), ("--runtime=nx-runc", "runc")] {
        let out = d.run(&[
            "run",
            "--rm",
            rt,
            IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n"),
            "{backend}"
        );
        let name = unique(&format!("nx{backend}"));
        d.ok(&["run", "-d", rt, "--name", &name, IMAGE, "sleep", "1000"]);
        let record = d.nexcage_root().join("containers");
        let routed = std::fs::read_dir(&record)
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .any(|r| r.contains(&format!("\"backend\":\"{backend}\"")));
        assert!(routed, "no record routed to {backend}");
        let out = d.run(&["exec", &name, "sh", "-c", "echo in; exit 4"]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (Some(4), "in\n"),
            "{backend}"
        );
        d.ok(&["rm", "-f", &name]);
    }
    d.assert_clean();
}

fn lxc_config() -> String {
    r#"{"default":"lxc","backends":{"lxc":{"type":"lxc"}}}"#.to_string()
}

#[test]
#[serial(docker)]
fn docker_on_lxc() {
    let d = Docker::start(&lxc_config());
    scenarios(&d, "lxc");
    more_scenarios(&d);
    let lxcpath = d.nexcage_root().join("lxc/lxc");
    let defined: Vec<_> = std::fs::read_dir(&lxcpath)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(defined.is_empty(), "{defined:?}");
}

#[test]
#[serial(docker)]
fn docker_on_pct() {
    let pve = Pve::configured("", "pve");
    let config = std::fs::read_to_string(pve.env.config.as_ref().unwrap()).unwrap();
    let d = Docker::start(&config);
    scenarios(&d, "pve");
    more_scenarios(&d);
    assert_eq!(pve.pct(&["list"]).stdout, "", "pct list");
    assert_no_runtime_dirs(&d.nexcage_root().join("backends/pve"));
}

fn assert_no_runtime_dirs(dir: &Path) {
    // pct's empty archive for `pct create` is the backend's, not a container's.
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.path())
                .filter(|p| !p.ends_with("empty.tar"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Docker on the VM backend (Docker cannot annotate: `vm` is the default): its
/// prestart hook, binds and seccomp profile; output and exit status, `-d`, `exec`,
/// `stop`, `rm`; no VM left.
#[test]
#[serial(docker)]
fn docker_on_qm() {
    let node = common::qm::Node::with_default("vm");
    let config = std::fs::read_to_string(node.env.config.as_ref().unwrap()).unwrap();
    let d = Docker::start(&config);
    let rt = "--runtime=nx";
    let out = d.run(&[
        "run",
        "--rm",
        rt,
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; cat /sys/class/dmi/id/sys_vendor; exit 3",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(3), "out\nQEMU\n", "err\n")
    );
    // -d with -p: Docker's network (made by its prestart hook) is the VM's.
    let name = unique("nxvm");
    let port = 18_000 + (std::process::id() % 1000) as u16;
    d.ok(&[
        "run",
        "-d",
        rt,
        "--name",
        &name,
        "-p",
        &format!("{port}:80"),
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; httpd -p 80; echo started; sleep 1000 & wait",
    ]);
    wait_for("the log", || d.ok(&["logs", &name]).contains("started"));
    let url = format!("http://127.0.0.1:{port}/");
    wait_for("httpd in the VM", || common::http_status(&url) == "404");
    let ip = d.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &name,
    ]);
    let out = d.run(&["exec", &name, "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        out.stdout.contains(&format!(" {}/", ip.trim())),
        "{ip:?} {out:?}"
    );
    let out = d.run(&["exec", &name, "sh", "-c", "echo inside; exit 4"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(4), "inside\n"),
        "{}",
        out.stderr
    );
    let out = d.in_terminal(&format!("exec -t {name} sh -c 'tty; exit 6'"));
    assert_eq!(out.code, Some(6), "{}", out.stderr);
    assert!(out.stdout.starts_with("/dev/pts/"), "{:?}", out.stdout);
    d.ok(&["stop", "-t", "10", &name]);
    d.ok(&["rm", &name]);
    d.assert_clean();
    assert_eq!(node.qm(&["list"]).stdout, "", "qm list");
}
