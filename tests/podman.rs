//! nexcage as podman's OCI runtime: `podman --runtime <built nexcage>`, driven through
//! conmon exactly as a user's podman would. The binary's basename is `nexcage`, which
//! hack/podman/50-nexcage.conf lists in runtime_supports_json, so podman also passes
//! `--log-format=json --log FILE`. podman passes no `--root`: containers live under
//! nexcage's default root, /run/nexcage.
//!
//! Every container gets a unique name and a guard that removes it (`podman rm -f`),
//! so a failing test leaves nothing behind; the shared image is never touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Out, nexcage, run_cmd, unique};

const IMAGE: &str = "localhost/nexcage-busybox:latest";
/// nexcage's root when the caller passes no --root (podman never does).
const DEFAULT_ROOT: &str = "/run/nexcage";
/// PID 1 ignores SIGTERM unless it traps it: this one exits 0 on SIGTERM, so a
/// stop that works is quick and leaves exit code 0 (143/137 otherwise).
const SERVE: &str = "trap 'exit 0' TERM; echo started; sleep 1000 & wait";

/// podman with nexcage as its runtime, plus optional extra environment and global flags.
#[derive(Default)]
struct Podman {
    env: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--runtime").arg(nexcage());
        cmd.args(&self.flags).args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        run_cmd(self.cmd(args), None)
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

    /// `run -d --name NAME ARGS...`: the started container, removed when dropped.
    fn detach(&self, name: &str, args: &[&str]) -> Container {
        let mut guard = Container::new(name);
        let mut argv = vec!["run", "-d", "--name", name];
        argv.extend_from_slice(args);
        guard.id = self.ok(&argv).trim().to_string();
        assert_eq!(guard.id.len(), 64, "container id {:?}", guard.id);
        guard
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
        // podman pinned the runtime (our binary) at create; no --runtime needed.
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn record_path(id: &str) -> PathBuf {
    Path::new(DEFAULT_ROOT).join("containers").join(id)
}

/// The backend nexcage recorded for a container it created under the default root.
fn recorded_backend(id: &str) -> String {
    let path = record_path(id);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["backend"].as_str().unwrap().to_string()
}

/// `nexcage state ID` in the default root, as podman itself would call it.
fn nexcage_state(id: &str) -> Out {
    let mut cmd = Command::new(nexcage());
    cmd.args(["state", id]);
    run_cmd(cmd, None)
}

fn inspect(name: &str, format: &str) -> String {
    Podman::default()
        .ok(&["inspect", "--format", format, name])
        .trim()
        .to_string()
}

fn wait_for(what: &str, mut done: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = match done() {
            None => return,
            Some(last) => last,
        };
        assert!(Instant::now() < deadline, "{what}: last seen {last:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts nexcage has let go of a container: no record, no backend state.
fn assert_forgotten(id: &str) {
    assert!(!record_path(id).exists(), "record of {id} left behind");
    for backend in ["crun", "runc"] {
        let dir = Path::new(DEFAULT_ROOT)
            .join("backends")
            .join(backend)
            .join(id);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let state = nexcage_state(id);
    assert_ne!(state.code, Some(0), "state of a removed container");
    assert!(state.stderr.contains("does not exist"), "{}", state.stderr);
}

#[test]
fn foreground_run_output_and_exit_code() {
    let podman = Podman::default();
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("nxc-pm-fg");
    let _guard = Container::new(&name);
    let cidfile = tmp.path().join("cid");
    let out = podman.run(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--cidfile",
        cidfile.to_str().unwrap(),
        IMAGE,
        "echo",
        "hello",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello\n");
    // --rm: podman deleted it through nexcage, which forgot it.
    assert_forgotten(std::fs::read_to_string(&cidfile).unwrap().trim());

    let name = unique("nxc-pm-fg");
    let _guard = Container::new(&name);
    let out = podman.run(&[
        "run",
        "--rm",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]);
    assert_eq!(out.code, Some(42), "{}", out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err\n"), "{:?}", out.stderr);
}

#[test]
fn detached_ps_logs_exec_stop_restart_rm() {
    let podman = Podman::default();
    let name = unique("nxc-pm-d");
    let c = podman.detach(&name, &[IMAGE, "sh", "-c", SERVE]);

    // nexcage holds it under its default root, on the default backend.
    assert_eq!(recorded_backend(&c.id), "crun");
    assert!(
        Path::new(DEFAULT_ROOT)
            .join("backends/crun")
            .join(&c.id)
            .exists()
    );
    // The pid nexcage reports is the one conmon watches.
    let state = nexcage_state(&c.id);
    assert_eq!(state.code, Some(0), "{}", state.stderr);
    let state: serde_json::Value = serde_json::from_str(&state.stdout).unwrap();
    assert_eq!(state["status"], "running");
    assert_eq!(
        state["pid"].as_i64().unwrap().to_string(),
        inspect(&name, "{{.State.Pid}}")
    );

    let ps = podman.ok(&[
        "ps",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.ID}} {{.Status}}",
    ]);
    assert!(ps.starts_with(&c.id[..12]), "{ps:?}");
    assert!(ps.contains("Up"), "{ps:?}");

    wait_for("podman logs", || {
        let logs = podman.ok(&["logs", &name]);
        (logs != "started\n").then_some(logs)
    });

    let out = podman.run(&["exec", &name, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert_eq!(out.stdout, "in-exec\n");
    let out = podman.run(&[
        "exec",
        "-e",
        "X=42",
        "-w",
        "/tmp",
        &name,
        "sh",
        "-c",
        "echo $X $PWD",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "42 /tmp\n");

    // SIGTERM reaches the trap: exit 0, long before the 10 s timeout.
    let started = Instant::now();
    podman.ok(&["stop", "--time", "10", &name]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stop needed SIGKILL"
    );
    assert_eq!(inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");

    // A restart creates the same id again through nexcage.
    podman.ok(&["start", &name]);
    assert_eq!(inspect(&name, "{{.State.Status}}"), "running");
    assert_eq!(recorded_backend(&c.id), "crun");
    wait_for("podman logs after restart", || {
        let logs = podman.ok(&["logs", &name]);
        (logs != "started\nstarted\n").then_some(logs)
    });
    podman.ok(&["stop", "--time", "10", &name]);
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");

    podman.ok(&["rm", &name]);
    let all = podman.ok(&["ps", "--all", "--format", "{{.Names}}"]);
    assert!(!all.lines().any(|l| l == name), "{all}");
    assert_forgotten(&c.id);
}

#[test]
fn tty() {
    let podman = Podman::default();
    // -t without -i needs no terminal on our side: conmon owns the pty master.
    let name = unique("nxc-pm-t");
    let _guard = Container::new(&name);
    let out = podman.run(&[
        "run",
        "-t",
        "--rm",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "tty; echo x; exit 7",
    ]);
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("/dev/pts/") && out.stdout.ends_with("\r\nx\r\n"),
        "{:?}",
        out.stdout
    );

    // -it needs a terminal on stdin: script(1) provides one and feeds it our input.
    let name = unique("nxc-pm-t");
    let _guard = Container::new(&name);
    let inner = format!(
        "podman --runtime '{}' run -it --rm --name {name} {IMAGE} sh -c 'read l; echo got:$l; exit 4'",
        nexcage()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &inner, "/dev/null"]);
    let out = run_cmd(cmd, Some("abc\n"));
    assert_eq!(out.code, Some(4), "{:?} {:?}", out.stdout, out.stderr);
    assert!(out.stdout.contains("got:abc\r\n"), "{:?}", out.stdout);
}

/// crun by default; runc by the backend annotation (crun may not be picked that way),
/// and by a rule on a test annotation that only this file's config knows.
fn routing_config(dir: &Path) -> PathBuf {
    let path = dir.join("nexcage.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"default":"crun",
                "backends":{{"crun":{{"type":"oci","path":"{}"}},
                             "runc":{{"type":"oci","path":"{}"}}}},
                "annotation_backends":["runc"],
                "rules":[{{"backend":"runc","annotations":{{"org.nexcage.test.tier":"gold-*"}}}}]}}"#,
            common::CRUN,
            common::RUNC
        ),
    )
    .unwrap();
    path
}

/// Runs a container with `annotations` and asserts nexcage put it on `backend`.
fn assert_routed(podman: &Podman, annotations: &[&str], backend: &str) {
    let name = unique("nxc-pm-r");
    let mut args = Vec::new();
    for a in annotations {
        args.extend(["--annotation", a]);
    }
    args.extend([IMAGE, "sleep", "1000"]);
    let c = podman.detach(&name, &args);
    assert_eq!(recorded_backend(&c.id), backend, "{annotations:?}");
    let state = Path::new(DEFAULT_ROOT)
        .join("backends")
        .join(backend)
        .join(&c.id);
    assert!(state.exists(), "{} missing", state.display());
    podman.ok(&["rm", "--force", "--time", "0", &name]);
    assert_forgotten(&c.id);
}

/// podman hands conmon (which runs `nexcage create`) only a fixed environment: a
/// NEXCAGE_CONFIG set for podman itself never arrives. containers.conf's
/// `conmon_env_vars` is how it gets there.
#[test]
fn routing_config_from_nexcage_config_via_conmon_env() {
    let tmp = tempfile::tempdir().unwrap();
    let config = routing_config(tmp.path());
    // CONTAINERS_CONF replaces every containers.conf podman would read, so it starts
    // from the drop-in hack/setup.sh installs (rlimits, cgroupfs, JSON logging).
    let dropin = std::fs::read_to_string(common::repo().join("hack/podman/50-nexcage.conf"))
        .unwrap()
        .replacen(
            "[engine]\n",
            &format!(
                "[engine]\nconmon_env_vars = [\"NEXCAGE_CONFIG={}\"]\n",
                config.display()
            ),
            1,
        );
    assert!(dropin.contains("conmon_env_vars"));
    let conf = tmp.path().join("containers.conf");
    std::fs::write(&conf, dropin).unwrap();
    let podman = Podman {
        env: vec![("CONTAINERS_CONF".into(), conf.display().to_string())],
        ..Podman::default()
    };

    assert_routed(&podman, &[], "crun");
    assert_routed(&podman, &["org.nexcage.backend=runc"], "runc");
    assert_routed(&podman, &["org.nexcage.test.tier=gold-1"], "runc");
    assert_routed(&podman, &["org.nexcage.test.tier=silver"], "crun");

    // Refused by this config (the built-in one would allow it): podman reports
    // nexcage's error and keeps nothing.
    let name = unique("nxc-pm-r");
    let _guard = Container::new(&name);
    let out = podman.run(&[
        "run",
        "--rm",
        "--name",
        &name,
        "--annotation",
        "org.nexcage.backend=crun",
        IMAGE,
        "true",
    ]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("backend \"crun\" may not be selected by annotation"),
        "{}",
        out.stderr
    );
}

/// `podman --runtime-flag config=FILE` makes podman pass `--config=FILE` to nexcage.
#[test]
fn routing_config_from_runtime_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let config = routing_config(tmp.path());
    let podman = Podman {
        flags: vec![
            "--runtime-flag".into(),
            format!("config={}", config.display()),
        ],
        ..Podman::default()
    };
    assert_routed(&podman, &["org.nexcage.test.tier=gold-2"], "runc");
    assert_routed(&podman, &[], "crun");
}
