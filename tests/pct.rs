//! The Proxmox backend against the pct/pvesh stand-in (hack/pve), which follows
//! pve-container's CLI and runs the containers with real LXC: nexcage directly,
//! podman and containerd on top, faults and bad input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pve::Pve;
use common::{Bundle, command, nexcage, pid_alive, repo, run_cmd, unique};

#[test]
fn lifecycle_through_nexcage() {
    let pve = Pve::new();
    let env = &pve.env;
    let id = unique("pve-life");
    let bundle = Bundle::with(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo started; sleep 1000 & wait",
        ],
        |s| {
            s.set_hostname(Some("Life_Host".into()));
        },
    );
    let pid_file = bundle.dir.path().join("holder.pid");
    let out_file = bundle.dir.path().join("out");
    let pid_path = pid_file.to_str().unwrap();
    env.detached_to(
        &[
            "create",
            "--bundle",
            bundle.path(),
            "--pid-file",
            pid_path,
            &id,
        ],
        &out_file,
    );
    let state = env.state(&id);
    assert_eq!(state["status"], "created");
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(state["pid"], pid);
    let vmid = pve.vmid(&id);
    // The Proxmox container runs from create on; only the workload waits for start,
    // and the engine's pid is in the container's namespaces.
    assert_eq!(pve.pct(&["status", &vmid]).stdout, "status: running\n");
    for ns in ["net", "mnt", "uts", "pid"] {
        let of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(of(&pid.to_string()), of("self"), "{ns}");
    }

    env.ok(&["start", &id]);
    assert_eq!(env.status(&id), "running");
    assert_eq!(pve.pct(&["status", &vmid]).stdout, "status: running\n");
    let list = pve.pct(&["list"]).stdout;
    assert!(
        list.lines().any(|l| l.starts_with(&vmid)
            && l.contains("running")
            && l.trim_end().ends_with("life-host")),
        "{list:?}"
    );

    // exec: output, status, and the container's env/cwd/user as defaults.
    let out = env.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo $HOME $(hostname) $PWD $(id -u); echo oops >&2; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(common::stdout(&out), "/root life-host / 0\n");
    assert_eq!(common::stderr(&out), "oops\n");
    let out = env.run(&[
        "exec",
        "--env",
        "X=1",
        "--cwd",
        "/tmp",
        "--user",
        "65534",
        &id,
        "sh",
        "-c",
        "echo $X $PWD $(id -u)",
    ]);
    assert_eq!(
        common::stdout(&out),
        "1 /tmp 65534\n",
        "{}",
        common::stderr(&out)
    );

    common::assert_detached_exec(env, bundle.dir.path(), &id);

    let pids: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.len() >= 3, "init, sh, sleep: {pids:?}");
    let table = env.ok(&["ps", &id]);
    assert!(table.contains("sleep 1000"), "{table}");

    let err = env.fails(&["delete", &id]);
    assert!(err.contains("is not stopped"), "{err}");
    // pause/resume: the container's cgroup freezer (pct suspend would be CRIU's).
    env.ok(&["pause", &id]);
    assert_eq!(env.status(&id), "paused");
    let err = env.fails(&["delete", &id]);
    assert!(err.contains("is not stopped: paused"), "{err}");
    env.ok(&["resume", &id]);
    assert_eq!(env.status(&id), "running");
    let err = env.fails(&["resume", &id]);
    assert!(err.contains("container not paused"), "{err}");
    // update: the Proxmox config (MiB) and the container's own cgroup (exact).
    env.ok(&["update", "--memory", "200m", &id]);
    let config = pve.pct(&["config", &vmid]).stdout;
    assert!(config.lines().any(|l| l == "memory: 200"), "{config}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap();
    let limit = format!("/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(limit).unwrap(),
        format!("{}\n", 200 << 20)
    );
    let event: serde_json::Value =
        serde_json::from_str(&env.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(
        event["data"]["memory"]["usage"]["limit"],
        200 << 20,
        "{event}"
    );
    // --tty without a console socket: the caller's own stdio is the terminal.
    let out = env.run(&["exec", "--tty", &id, "sh", "-c", "exit 6"]);
    assert_eq!(out.status.code(), Some(6), "{}", common::stderr(&out));

    // SIGTERM reaches the workload (not PID 1's default), which exits 7.
    env.ok(&["kill", &id, "TERM"]);
    env.wait_status(&id, "stopped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(pid), "holder still running");
    assert!(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .contains("started\ngot-term\n")
    );
    env.ok(&["delete", &id]);
    pve.assert_clean();
}

#[test]
fn unprivileged_container() {
    let pve = Pve::with_backend_extra(r#","unprivileged":true"#);
    let bundle = Bundle::new(&["sh", "-c", "echo uid $(id -u); exit 2"]);
    let id = unique("pve-unpriv");
    // A root others cannot search: refused clearly, nothing made.
    std::fs::set_permissions(pve.env.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = pve.env.fails(&["run", "--bundle", bundle.path(), &id]);
    assert!(err.contains("searchable by others"), "{err}");
    pve.assert_clean();
    std::fs::set_permissions(pve.env.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = pve.env.run(&["run", "--bundle", bundle.path(), &id]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "uid 0\n");
    pve.assert_clean();
}

#[test]
fn run_output_and_exit_status() {
    let pve = Pve::new();
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let out = pve
        .env
        .run(&["run", "--bundle", bundle.path(), &unique("pve-run")]);
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert_eq!(common::stdout(&out), "out\n");
    assert_eq!(common::stderr(&out), "err\n");
    // A workload that cannot be started fails the create with runc's words.
    let bundle = Bundle::new(&["/no/such/program"]);
    let out = pve
        .env
        .run(&["run", "--bundle", bundle.path(), &unique("pve-run")]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains(r#"exec: "/no/such/program": stat /no/such/program"#),
        "{}",
        common::stderr(&out)
    );
    pve.assert_clean();
}

/// hostname, env, cwd, user, memory, cpu and a bind mount, as Proxmox sees them.
#[test]
fn spec_maps_to_the_proxmox_config() {
    let pve = Pve::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("file"), "from-host\n").unwrap();
    let id = unique("pve-map");
    let bundle = Bundle::with(&["sleep", "1000"], |s| {
        use oci_spec::runtime::*;
        s.set_hostname(Some("mapped".into()));
        let p = s.process_mut().as_mut().unwrap();
        p.set_cwd("/tmp".into());
        p.set_env(Some(vec![
            "PATH=/bin:/usr/bin".into(),
            "GREETING=hello".into(),
        ]));
        p.set_user(
            UserBuilder::default()
                .uid(1000u32)
                .gid(1000u32)
                .build()
                .unwrap(),
        );
        let mut mounts = s.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source(data.path())
                .options(vec!["rbind".into(), "ro".into()])
                .build()
                .unwrap(),
        );
        s.set_mounts(Some(mounts));
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256 * 1024 * 1024i64)
                    .swap(384 * 1024 * 1024i64)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0-1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        s.linux_mut()
            .as_mut()
            .unwrap()
            .set_resources(Some(resources));
    });
    pve.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
    for line in [
        "hostname: mapped",
        "memory: 256",
        "swap: 128",
        "cpulimit: 0.5",
        "cores: 2",
        "ostype: unmanaged",
        "tags: nexcage",
        &format!("mp1: {},mp=/data,ro=1", data.path().display()),
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "{line:?} missing in:\n{config}"
        );
    }
    assert!(
        config.contains(&format!("description: nexcage container {id}")),
        "{config}"
    );
    pve.env.ok(&["start", &id]);
    let out = pve.env.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo $GREETING $PWD $(id -u):$(id -g); cat /data/file; touch /data/x",
    ]);
    assert_eq!(common::stdout(&out), "hello /tmp 1000:1000\nfrom-host\n");
    assert!(
        common::stderr(&out).contains("Read-only"),
        "{}",
        common::stderr(&out)
    );
    // The workload itself runs as the spec's user too.
    let table = pve.env.ok(&["ps", &id, "-eo", "pid,uid,args"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[1..] == ["1000", "sleep", "1000"]),
        "{table}"
    );
    pve.env.ok(&["delete", "--force", &id]);
    pve.assert_clean();
}

/// The container's root is the bundle's rootfs itself: what the workload writes is in
/// the bundle, what the engine puts there after create is seen inside, nothing is
/// packed or copied, and delete leaves the rootfs.
#[test]
fn rootfs_is_used_in_place() {
    for unprivileged in [false, true] {
        let pve = if unprivileged {
            Pve::with_backend_extra(r#","unprivileged":true"#)
        } else {
            Pve::new()
        };
        if unprivileged {
            std::fs::set_permissions(pve.env.root(), std::fs::Permissions::from_mode(0o711))
                .unwrap();
        }
        let root = tempfile::Builder::new()
            .prefix("nexcage-rootfs-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", common::rootfs().display()))
            .arg(root.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let rootfs = root.path().to_path_buf();
        let bundle = Bundle::with(
            &[
                "sh",
                "-c",
                "cat /from-engine; echo from-inside > /from-inside; id -u",
            ],
            |s| {
                s.set_root(Some(
                    oci_spec::runtime::RootBuilder::default()
                        .path(rootfs.clone())
                        .readonly(false)
                        .build()
                        .unwrap(),
                ));
            },
        );
        let id = unique("pve-place");
        let log = bundle.dir.path().join("log");
        pve.env
            .detached_to(&["create", "--bundle", bundle.path(), &id], &log);
        // After create, as an engine's `cp` would.
        std::fs::write(root.path().join("from-engine"), "from-engine\n").unwrap();
        let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
        let want = format!("rootfs: {}", root.path().display());
        assert!(config.lines().any(|l| l.starts_with(&want)), "{config}");
        pve.env.ok(&["start", &id]);
        pve.env.wait_status(&id, "stopped");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "from-engine\n0\n",
            "unprivileged: {unprivileged}"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("from-inside")).unwrap(),
            "from-inside\n"
        );
        pve.env.ok(&["delete", &id]);
        assert!(
            root.path().join("bin/busybox").exists(),
            "delete took the rootfs"
        );
        pve.assert_clean();
    }
}

fn podman(pve: &Pve) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--runtime")
        .arg(nexcage())
        .arg("--runtime-flag")
        .arg(format!(
            "config={}",
            pve.env.config.as_ref().unwrap().display()
        ));
    cmd
}

/// Removes a podman container even when the test fails.
struct PodmanName(String);

impl Drop for PodmanName {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.0])
            .output();
    }
}

const IMAGE: &str = "localhost/nexcage-busybox:latest";

/// Routes a podman container to the pct backend by annotation.
const ON_PVE: &str = "org.nexcage.backend=pve";

/// `podman run FLAGS --name NAME --annotation ANNOTATION IMAGE ARGV` on nexcage.
fn podman_run(
    pve: &Pve,
    flags: &[&str],
    name: &str,
    annotation: &str,
    argv: &[&str],
    stdin: Option<&str>,
) -> common::Out {
    let mut cmd = podman(pve);
    cmd.arg("run")
        .args(flags)
        .args(["--name", name, "--annotation", annotation, IMAGE])
        .args(argv);
    run_cmd(cmd, stdin)
}

/// `podman ARGS` on nexcage inside `script`, which gives it a terminal (for -it).
fn podman_in_terminal(pve: &Pve, args: &str, stdin: &str) -> common::Out {
    let line = format!(
        "podman --runtime {} --runtime-flag config={} {args}",
        nexcage(),
        pve.env.config.as_ref().unwrap().display()
    );
    run_cmd(
        command(&["script", "-qec", &line, "/dev/null"]),
        Some(stdin),
    )
}

#[test]
fn podman_on_pct() {
    let pve = Pve::new();
    // Routed by annotation.
    let name = PodmanName(unique("nxc-pct"));
    let argv = ["sh", "-c", "echo hi; echo err >&2; exit 3"];
    let out = podman_run(&pve, &["--rm"], &name.0, ON_PVE, &argv, None);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(pve.pct(&["list"]).stdout, "");

    // -d, logs, exec, stop, rm; routed by a rule on an annotation (the ids podman
    // picks never match the `pve-*` rule).
    let name = PodmanName(unique("nxc-pct-d"));
    let serve = [
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo started; sleep 1000 & wait",
    ];
    let out = podman_run(
        &pve,
        &["-d"],
        &name.0,
        "org.nexcage.test.place=proxmox",
        &serve,
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(pve.pct(&["list"]).stdout.contains("running"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = run_cmd(command(&["podman", "logs", &name.0]), None).stdout;
        if logs == "started\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = podman(&pve);
    cmd.args(["exec", &name.0, "sh", "-c", "echo in-exec; exit 5"]);
    let out = run_cmd(cmd, None);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(5), "in-exec\n"),
        "{}",
        out.stderr
    );
    let out = run_cmd(command(&["podman", "stop", "--time", "10", &name.0]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let format = [
        "podman",
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &name.0,
    ];
    assert_eq!(run_cmd(command(&format), None).stdout.trim(), "0");
    let out = run_cmd(command(&["podman", "rm", &name.0]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // exec with a terminal: -t (pty by console socket) and -it.
    let name = PodmanName(unique("nxc-pct-x"));
    let out = podman_run(&pve, &["-d"], &name.0, ON_PVE, &["sleep", "1000"], None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut cmd = podman(&pve);
    cmd.args([
        "exec",
        "-t",
        &name.0,
        "sh",
        "-c",
        "test -t 0 && echo exec-tty; exit 3",
    ]);
    let out = run_cmd(cmd, None);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(3), "exec-tty\r\n"),
        "{}",
        out.stderr
    );
    let args = format!("exec -it {} sh -c 'read a; echo got:$a; exit 2'", name.0);
    let out = podman_in_terminal(&pve, &args, "xyz\n");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.contains("got:xyz"), "{:?}", out.stdout);
    // podman cp both ways: the container's root is the engine's rootfs.
    let files = tempfile::tempdir().unwrap();
    let into = files.path().join("into");
    std::fs::write(&into, "copied in\n").unwrap();
    let cp = |from: &str, to: &str| {
        let out = run_cmd(command(&["podman", "cp", from, to]), None);
        assert_eq!(out.code, Some(0), "podman cp {from} {to}: {}", out.stderr);
    };
    cp(into.to_str().unwrap(), &format!("{}:/tmp/into", name.0));
    let mut cmd = podman(&pve);
    cmd.args([
        "exec",
        &name.0,
        "sh",
        "-c",
        "cat /tmp/into; echo inside > /tmp/out",
    ]);
    assert_eq!(run_cmd(cmd, None).stdout, "copied in\n");
    let out = files.path().join("out");
    cp(&format!("{}:/tmp/out", name.0), out.to_str().unwrap());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    drop(name);

    // -p HOST:80 reaches busybox httpd in the CT (the holder joined podman's netns).
    let name = PodmanName(unique("nxc-pct-web"));
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let publish = format!("{port}:80");
    let out = podman_run(
        &pve,
        &["-d", "-p", &publish],
        &name.0,
        ON_PVE,
        &["httpd", "-f", "-p", "80"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let code = common::http_status(&url);
        if code == "404" {
            break;
        }
        assert!(Instant::now() < deadline, "httpd not reached: {code:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(name);

    // stdin through -i, and a terminal with -it.
    let name = PodmanName(unique("nxc-pct-i"));
    let argv = ["sh", "-c", "read x; echo got:$x"];
    let out = podman_run(
        &pve,
        &["--rm", "-i"],
        &name.0,
        ON_PVE,
        &argv,
        Some("piped\n"),
    );
    assert_eq!(out.stdout, "got:piped\n", "{}", out.stderr);
    let name = PodmanName(unique("nxc-pct-t"));
    let args = format!(
        "run --rm -it --name {} --annotation {ON_PVE} {IMAGE} sh -c 'test -t 0 && echo tty; read x; echo got:$x; exit 4'",
        name.0
    );
    let out = podman_in_terminal(&pve, &args, "typed\n");
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stdout.contains("tty\r\n") && out.stdout.contains("got:typed"),
        "{:?}",
        out.stdout
    );
    pve.assert_clean();
}

#[test]
fn containerd_on_pct() {
    let pve = Pve::new();
    let dir = tempfile::Builder::new()
        .prefix("nxp")
        .tempdir_in("/tmp")
        .unwrap();
    let start = run_cmd(
        command(&[
            repo().join("hack/containerd/start.sh").to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(start.code, Some(0), "{}", start.stderr);
    let sock = start.stdout.trim().to_string();
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(repo().join("hack/containerd/stop.sh"))
                .arg(&self.0)
                .output();
        }
    }
    let _stop = Stop(dir.path().to_path_buf());
    let import = run_cmd(
        command(&[
            repo()
                .join("hack/containerd/import-images.sh")
                .to_str()
                .unwrap(),
            &sock,
        ]),
        None,
    );
    assert_eq!(import.code, Some(0), "{}", import.stderr);
    // ctr takes a binary, not flags: a wrapper adds the config.
    let wrapper = pve.dir.path().join("nexcage-pve");
    common::write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec '{}' --config '{}' \"$@\"\n",
            nexcage(),
            pve.env.config.as_ref().unwrap().display()
        ),
    );
    let id = unique("pve-ctr");
    let out = run_cmd(
        command(&[
            "ctr",
            "--address",
            &sock,
            "run",
            "--rm",
            "--runc-binary",
            wrapper.to_str().unwrap(),
            IMAGE,
            &id,
            "sh",
            "-c",
            "echo hi; exit 9",
        ]),
        None,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(9), "hi\n"),
        "{}",
        out.stderr
    );
    assert_eq!(pve.pct(&["list"]).stdout, "");
}

/// kill -9 of the holder while the container runs, and of nexcage during create:
/// `delete --force` then leaves nothing.
#[test]
fn killed_holder_or_creator_then_forced_delete() {
    let pve = Pve::new();
    let id = unique("pve-k9");
    let bundle = Bundle::new(&["sleep", "1000"]);
    pve.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let holder = pve.env.state(&id)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pve.env.status(&id) != "stopped" {
        assert!(Instant::now() < deadline, "holder death not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    pve.env.ok(&["delete", "--force", &id]);
    pve.assert_clean();

    // The holder killed before start: the container is stopped, and cleanable.
    let id = unique("pve-k9h");
    pve.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let holder = pve.env.state(&id)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pve.env.status(&id) != "stopped" {
        assert!(Instant::now() < deadline, "holder death not seen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = pve.env.fails(&["start", &id]);
    assert!(
        err.contains("cannot start a container that has stopped"),
        "{err}"
    );
    pve.env.ok(&["delete", "--force", &id]);
    pve.assert_clean();

    // A foreground `run` killed while its container runs: still listed, cleanable.
    let id = unique("pve-k9r");
    let mut run = pve
        .env
        .cmd()
        .args(["run", "--bundle", bundle.path(), &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pve.env.ok(&["list", "-q"]).contains(&id) || pve.env.status(&id) != "running" {
        assert!(Instant::now() < deadline, "container never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(pve.env.ok(&["list", "-q"]), format!("{id}\n"));
    pve.env.ok(&["delete", "--force", &id]);
    pve.assert_clean();

    // Kill nexcage at several points of a create; each must be cleanable.
    for delay_ms in [5u64, 50, 150, 400, 800] {
        let id = unique("pve-k9c");
        let mut create = pve
            .env
            .cmd()
            .args(["create", "--bundle", bundle.path(), &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = create.kill();
        let _ = create.wait();
        pve.env.ok(&["delete", "--force", &id]);
        pve.assert_clean();
    }
}

/// pct failing: a clear error and no half-made container; an id someone else holds
/// is never touched.
#[test]
fn pct_failures_leave_nothing() {
    // A bridge the node does not have: pct create takes it, pct start fails.
    let pve = Pve::with_backend_extra(r#","net0":"name=eth0,bridge=nosuchbr0""#);
    let bundle = Bundle::new(&["true"]);
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-br")]);
    assert!(err.contains("pct start") && err.contains("failed"), "{err}");
    pve.assert_clean();

    // pvesh keeps offering an id that is taken (a VM/CT created elsewhere).
    let pve = Pve::new();
    let taken = pve.pct(&[
        "create",
        "100",
        &format!("local:vztmpl/{}", "missing.tar.zst"),
    ]);
    assert_ne!(taken.code, Some(0));
    let foreign = pve.node().join("etc/pve/lxc/100.conf");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    std::fs::write(
        &foreign,
        "hostname: someone-else\nmemory: 512\nostype: unmanaged\n",
    )
    .unwrap();
    std::fs::write(pve.dir.path().join("pvesh"), "#!/bin/sh\necho 100\n").unwrap();
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-taken")]);
    assert!(err.contains("already exists"), "{err}");
    assert!(foreign.exists(), "the foreign container was touched");
    std::fs::remove_file(&foreign).unwrap();
    pve.assert_clean();
}

#[test]
fn bad_input_for_pct() {
    let pve = Pve::new();
    let bundle = Bundle::annotated(&["true"], &[("org.nexcage.pct.vmid", "4242")]);
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-ann")]);
    assert!(
        err.contains("annotation org.nexcage.pct.vmid is not allowed"),
        "{err}"
    );
    let bundle = Bundle::missing_rootfs();
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-nofs")]);
    assert!(err.contains("/nonexistent/rootfs"), "{err}");
    pve.assert_clean();
}

/// `org.nexcage.pct.*` overrides: only keys the backend allows, values validated.
#[test]
fn annotation_overrides() {
    let pve = Pve::with_backend_extra(r#","allowed_annotations":["vmid"]"#);
    let id = unique("pve-fixed");
    let bundle = Bundle::annotated(&["true"], &[("org.nexcage.pct.vmid", "4242")]);
    pve.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    assert_eq!(pve.vmid(&id), "4242");
    // The fixed id is taken now: a clear error, the first container untouched.
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-fixed")]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(pve.pct(&["status", "4242"]).stdout, "status: running\n");
    pve.env.ok(&["delete", &id]);
    for (key, value, needle) in [
        ("org.nexcage.pct.vmid", "12", "a vmid is 100 to 999999999"),
        ("org.nexcage.pct.vmid", "abc", "not a number"),
        ("org.nexcage.pct.rootfs_size", "2", "unknown annotation"),
        ("org.nexcage.pct.storage", "local", "unknown annotation"),
        ("org.nexcage.pct.hookscript", "x", "unknown annotation"),
    ] {
        let bundle = Bundle::annotated(&["true"], &[(key, value)]);
        let err = pve
            .env
            .fails(&["create", "--bundle", bundle.path(), &unique("pve-bad")]);
        assert!(err.contains(needle), "{key}={value}: {err}");
    }
    pve.assert_clean();
}

/// When nexcage's state is wiped (a reboot clears /run, an engine wipes its runtime
/// root) the Proxmox containers it made are found by their description and destroyed
/// at the next create; another root's containers are left alone.
#[test]
fn orphans_of_a_wiped_state_are_collected() {
    let pve = Pve::new();
    let other = pve.env.sharing_config();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let lost = unique("pve-lost");
    pve.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &lost]);
    let lost_vmid = pve.vmid(&lost);
    let kept = unique("pve-kept");
    other.detached(&["run", "-d", "--bundle", bundle.path(), &kept]);
    let kept_vmid =
        std::fs::read_to_string(other.root().join("backends/pve").join(&kept).join("vmid"))
            .unwrap();
    // The wipe: the state goes, the containers stay.
    for dir in ["containers", "backends"] {
        std::fs::remove_dir_all(pve.env.root().join(dir)).unwrap();
    }
    assert_eq!(pve.pct(&["status", &lost_vmid]).stdout, "status: running\n");
    let quick = Bundle::new(&["true"]);
    pve.env
        .ok(&["run", "--bundle", quick.path(), &unique("pve-next")]);
    let gone = pve.pct(&["status", &lost_vmid]);
    assert_ne!(
        gone.code,
        Some(0),
        "the orphan is still there: {}",
        gone.stdout
    );
    assert_eq!(pve.pct(&["status", &kept_vmid]).stdout, "status: running\n");
    other.ok(&["delete", "--force", &kept]);
    other.assert_clean();
    pve.assert_clean();
}

/// The engine's network namespace (podman's, CNI's) is the workload's and exec's:
/// Proxmox gives the CT a network of its own, so the holder joins the spec's; a spec
/// with no network namespace (`--network host`) gets the host's, as with runc.
#[test]
fn joins_the_engines_network_namespace() {
    let ns = common::Netns::new("nxpct-test", "10.213.78.1/32");
    let path = ns.path();
    let pve = Pve::new();
    let bundle = Bundle::with(&["sleep", "1000"], |s| {
        let mut linux = s.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        for n in namespaces.iter_mut() {
            if n.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                n.set_path(Some(path.clone().into()));
            }
        }
        linux.set_namespaces(Some(namespaces));
        // A sysctl of that namespace: written there, not in Proxmox's, not the host's.
        linux.set_sysctl(Some(
            [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "1000".to_string(),
            )]
            .into(),
        ));
        s.set_linux(Some(linux));
    });
    let host_value =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let id = unique("pve-netns");
    pve.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let pid = pve.env.state(&id)["pid"].as_i64().unwrap();
    let ino = |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(ino(&format!("/proc/{pid}/ns/net")), ino(&path));
    let out = pve
        .env
        .out(&["exec", &id, "ip", "-o", "-4", "addr", "show", "dev", "lo"]);
    assert!(
        out.stdout.contains("inet 10.213.78.1/32"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = pve.env.out(&[
        "exec",
        &id,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert_eq!(out.stdout, "1000\n", "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_value
    );
    pve.env.ok(&["delete", "--force", &id]);

    let host_net = Bundle::with(&["readlink", "/proc/self/ns/net"], |s| {
        let mut linux = s.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        namespaces.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        linux.set_namespaces(Some(namespaces));
        s.set_linux(Some(linux));
    });
    let out = pve
        .env
        .out(&["run", "--bundle", host_net.path(), &unique("pve-hostnet")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(out.stdout.trim(), ours.to_str().unwrap());
    pve.assert_clean();
}

/// The spec's file binds (an engine's /etc/hosts, Docker's docker-init) and
/// filesystems Proxmox has no mount point for (a tmpfs on /scratch) are mounted, as raw
/// `lxc.mount.entry` lines in the CT's config.
#[test]
fn file_binds_and_tmpfs_are_mounted() {
    let pve = Pve::new();
    let host_file = pve.dir.path().join("hosts");
    std::fs::write(&host_file, "10.1.2.3 from-the-engine\n").unwrap();
    let source = host_file.clone();
    let bundle = Bundle::with(
        &[
            "sh",
            "-c",
            "cat /etc/engine-hosts; grep -c ' /scratch tmpfs ' /proc/self/mounts",
        ],
        move |s| {
            let mut mounts = s.mounts().clone().unwrap();
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination("/etc/engine-hosts")
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_string(), "ro".to_string()])
                    .build()
                    .unwrap(),
            );
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination("/scratch")
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(vec!["nosuid".to_string(), "size=1m".to_string()])
                    .build()
                    .unwrap(),
            );
            s.set_mounts(Some(mounts));
        },
    );
    let id = unique("pve-raw");
    let log = bundle.dir.path().join("log");
    pve.env
        .detached_to(&["create", "--bundle", bundle.path(), &id], &log);
    let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
    assert!(
        config.contains("lxc.mount.entry: ") && config.contains("etc/engine-hosts none"),
        "{config}"
    );
    pve.env.ok(&["start", &id]);
    pve.env.wait_status(&id, "stopped");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "10.1.2.3 from-the-engine\n1\n"
    );
    pve.env.ok(&["delete", &id]);
    pve.assert_clean();
}

/// A directory bind's options become the Proxmox mount point's (`ro=1`,
/// `mountoptions`); one Proxmox cannot express is refused by name, not dropped.
#[test]
fn bind_mount_options_are_kept_or_refused() {
    let pve = Pve::new();
    let data = tempfile::tempdir().unwrap();
    let source = data.path().to_path_buf();
    let bind = |options: &[&str]| {
        let source = source.clone();
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        Bundle::with(&["true"], move |s| {
            let mut mounts = s.mounts().clone().unwrap();
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination("/data")
                    .typ("bind")
                    .source(source)
                    .options(options)
                    .build()
                    .unwrap(),
            );
            s.set_mounts(Some(mounts));
        })
    };
    let bundle = bind(&["rbind", "rprivate", "nosuid", "nodev", "ro"]);
    let id = unique("pve-mpopts");
    pve.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
    assert!(
        config.contains(",mountoptions=nosuid;nodev") && config.contains(",ro=1"),
        "{config}"
    );
    pve.env.ok(&["delete", "--force", &id]);
    let bundle = bind(&["rbind", "rshared"]);
    let err = pve
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("pve-shared")]);
    assert!(
        err.contains(r#"bind mount option "rshared" is not supported by the pct backend"#),
        "{err}"
    );
    pve.assert_clean();
}

/// `nexcage gc` destroys what no record owns: a container whose record was removed
/// (its holder still running), and one whose whole state was wiped (holder killed,
/// runtime dir gone); a container with a record, and another root's container with
/// the same id, are left running. The ids are free again afterwards.
#[test]
fn gc_destroys_what_no_record_owns() {
    let pve = Pve::new();
    let other = pve.env.sharing_config();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let run = |env: &common::Env, id: &str| {
        env.detached(&["run", "-d", "--bundle", bundle.path(), id]);
    };
    let unrecorded = unique("pve-gc-rec");
    run(&pve.env, &unrecorded);
    let unrecorded_vmid = pve.vmid(&unrecorded);
    let holder = pve.env.state(&unrecorded)["pid"].as_i64().unwrap();
    run(&other, &unrecorded);
    let twin_vmid = std::fs::read_to_string(
        other
            .root()
            .join("backends/pve")
            .join(&unrecorded)
            .join("vmid"),
    )
    .unwrap();
    let lost = unique("pve-gc-lost");
    run(&pve.env, &lost);
    let lost_vmid = pve.vmid(&lost);
    let lost_holder = pve.env.state(&lost)["pid"].as_i64().unwrap();
    let owned = unique("pve-gc-own");
    run(&pve.env, &owned);
    let owned_vmid = pve.vmid(&owned);

    std::fs::remove_file(pve.env.root().join("containers").join(&unrecorded)).unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(lost_holder as i32, libc::SIGKILL) };
    std::fs::remove_file(pve.env.root().join("containers").join(&lost)).unwrap();
    std::fs::remove_dir_all(pve.env.root().join("backends/pve").join(&lost)).unwrap();
    let out = pve.env.ok(&["gc"]);
    assert!(
        out.contains(&format!(
            "pve: container {unrecorded}, which no record owns"
        )) && out.contains(&format!("pve: Proxmox CT {lost_vmid} of container {lost}")),
        "{out}"
    );
    for vmid in [&unrecorded_vmid, &lost_vmid] {
        let status = pve.pct(&["status", vmid]);
        assert_ne!(status.code, Some(0), "CT {vmid} is left: {}", status.stdout);
    }
    assert!(!pid_alive(holder), "the unowned holder still runs");
    for vmid in [&owned_vmid, &twin_vmid] {
        assert_eq!(pve.pct(&["status", vmid]).stdout, "status: running\n");
    }
    assert_eq!(pve.env.status(&owned), "running");
    assert_eq!(other.status(&unrecorded), "running");
    assert_eq!(pve.env.ok(&["gc"]), "", "a second gc found more");
    assert_eq!(pve.env.ok(&["list", "-q"]), format!("{owned}\n"));
    // Both ids can be used again.
    run(&pve.env, &unrecorded);
    for id in [&unrecorded, &owned] {
        pve.env.ok(&["delete", "--force", id]);
    }
    other.ok(&["delete", "--force", &unrecorded]);
    other.assert_clean();
    pve.assert_clean();
}

/// A rootfs of the test's own (a copy of the busybox one), 0755 so that mapped ids
/// reach it.
fn private_rootfs() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("nexcage-rootfs-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", common::rootfs().display()))
        .arg(root.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    root
}

/// A bundle on `rootfs`, its spec edited as JSON.
fn json_bundle(
    args: &[&str],
    rootfs: &std::path::Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Bundle {
    Bundle::with(args, |s| {
        s.set_root(Some(
            oci_spec::runtime::RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .unwrap(),
        ));
        let mut v = serde_json::to_value(&*s).unwrap();
        edit(&mut v);
        *s = serde_json::from_value(v).unwrap();
    })
}

/// What init and the holder apply on pct, as on lxc: seccomp (mkdir denied),
/// capabilities (no CAP_CHOWN), masked and read-only paths, oomScoreAdj; and what goes
/// to raw keys of the CT config: the spec's device rules (deny all: LXC's own list
/// allows fuse, the spec's does not) and device nodes (a bind of the host's), its
/// exact memory limit, visible in the container's cgroup; the spec's `/dev/shm` and
/// `/dev/mqueue` (mounted by init: Proxmox's tmpfs has no size, and it mounts no
/// mqueue) and its restricting options on Proxmox's `/dev`.
#[test]
fn spec_is_applied_inside_the_ct() {
    let pve = Pve::new();
    let root = private_rootfs();
    std::fs::create_dir_all(root.path().join("srv/masked")).unwrap();
    std::fs::write(root.path().join("srv/masked/secret"), "secret\n").unwrap();
    let script = "mkdir /tmp/x 2>/dev/null; echo mkdir=$?; \
        echo > /tmp/f; chown 1:1 /tmp/f 2>/dev/null; echo chown=$?; \
        head -c1 /proc/version | wc -c; ls /srv/masked | wc -l; \
        touch /etc/x 2>/dev/null; echo etc=$?; touch /x && echo root-rw; \
        cat /proc/self/oom_score_adj; ulimit -n; ulimit -Hn; \
        (exec 3<>/dev/loop-control) && echo listed-device; \
        mknod /tmp/fuse c 10 229 && (exec 3<>/tmp/fuse) 2>/dev/null; echo fuse=$?; \
        cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
        awk '$5 == \"/dev/mqueue\" {print $9} $5 == \"/dev/shm\" {s = $11} \
             $5 == \"/dev\" {print $6} END {print s}' /proc/self/mountinfo";
    let bundle = json_bundle(&["sh", "-c", script], root.path(), |s| {
        s["process"]["oomScoreAdj"] = 123.into();
        s["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]);
        let caps: Vec<&str> = vec![
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_SETUID",
            "CAP_SETGID",
        ];
        for set in ["bounding", "effective", "permitted"] {
            s["process"]["capabilities"][set] = serde_json::json!(caps);
        }
        s["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        s["linux"]["maskedPaths"] = serde_json::json!(["/proc/version", "/srv/masked"]);
        s["linux"]["readonlyPaths"] = serde_json::json!(["/etc"]);
        s["linux"]["devices"] = serde_json::json!([
            {"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237, "fileMode": 384}
        ]);
        s["linux"]["resources"] = serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 100_000_000i64}
        });
        let mounts = s["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev/shm" {
                m["options"] = serde_json::json!(["nosuid", "noexec", "nodev", "size=1m"]);
            }
        }
    });
    let out = pve
        .env
        .run(&["run", "--bundle", bundle.path(), &unique("pve-spec")]);
    assert_eq!(
        common::stdout(&out),
        "mkdir=1\nchown=1\n0\n0\netc=1\nroot-rw\n123\n321\n654\nlisted-device\nfuse=1\n99999744\n\
         rw,nosuid,relatime\nmqueue\nrw,size=1024k\n",
        "{}",
        common::stderr(&out)
    );
    pve.assert_clean();
}

/// The spec's uid/gid mappings on an unprivileged backend are the CT's, exactly (raw
/// `lxc.idmap` keys; the rootfs is then a plain bind, its files the mapped ids on
/// disk); a user namespace to join, or mappings that leave root unmapped, are refused.
#[test]
fn uid_mappings_of_the_spec() {
    let pve = Pve::with_backend_extra(r#","unprivileged":true"#);
    std::fs::set_permissions(pve.env.root(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = private_rootfs();
    let data = root.path().join("mapped");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(110_000), Some(110_000)).unwrap();
    let maps = |s: &mut serde_json::Value, host: u32| {
        let map = serde_json::json!([{"containerID": 0, "hostID": host, "size": 40000}]);
        s["linux"]["uidMappings"] = map.clone();
        s["linux"]["gidMappings"] = map;
        s["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
    };
    let script = "id -u; stat -c %u /bin/busybox; touch /mapped/w";
    let bundle = json_bundle(&["sh", "-c", script], root.path(), |s| maps(s, 110_000));
    let id = unique("pve-maps");
    pve.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
    for line in [
        "lxc.idmap: u 0 110000 40000",
        "lxc.idmap: g 0 110000 40000",
        &format!("rootfs: {}", root.path().display()),
    ] {
        assert!(config.lines().any(|l| l == line), "{line:?} in\n{config}");
    }
    pve.env.ok(&["delete", "--force", &id]);
    let out = pve.env.run(&["run", "--bundle", bundle.path(), &id]);
    // Files of host uid 0 are nobody's inside.
    assert_eq!(
        common::stdout(&out),
        "0\n65534\n",
        "{}",
        common::stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(data.join("w")).unwrap().uid(), 110_000);

    let joining = json_bundle(&["true"], root.path(), |s| {
        maps(s, 110_000);
        let ns = s["linux"]["namespaces"].as_array_mut().unwrap();
        ns.last_mut().unwrap()["path"] = "/proc/self/ns/user".into();
    });
    let err = pve
        .env
        .fails(&["run", "--bundle", joining.path(), &unique("pve-maps")]);
    assert!(err.contains("joining a user namespace"), "{err}");
    let rootless = json_bundle(&["true"], root.path(), |s| {
        maps(s, 110_000);
        s["linux"]["uidMappings"][0]["containerID"] = 1.into();
    });
    let err = pve
        .env
        .fails(&["run", "--bundle", rootless.path(), &unique("pve-maps")]);
    assert!(err.contains("leave uid 0 unmapped"), "{err}");
    pve.assert_clean();
}

/// The spec's order holds between Proxmox mount points (directory binds, which PVE
/// mounts first) and raw entries: a directory bind below an earlier tmpfs is a raw
/// entry after it, and stays visible; one above a later tmpfs stays a mount point.
#[test]
fn mounts_keep_the_specs_order() {
    let pve = Pve::new();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("file"), "from-host\n").unwrap();
    let root = private_rootfs();
    let script = "cat /srv/o/sub/file; cat /srv/p/file; ls /srv/p/t | wc -l";
    let bundle = json_bundle(&["sh", "-c", script], root.path(), |s| {
        let src = data.path().display().to_string();
        let mounts = s["mounts"].as_array_mut().unwrap();
        for m in [
            serde_json::json!({"destination": "/srv/o", "type": "tmpfs", "source": "tmpfs"}),
            serde_json::json!({"destination": "/srv/o/sub", "type": "bind", "source": src, "options": ["rbind"]}),
            serde_json::json!({"destination": "/srv/p", "type": "bind", "source": src, "options": ["rbind"]}),
            serde_json::json!({"destination": "/srv/p/t", "type": "tmpfs", "source": "tmpfs"}),
        ] {
            mounts.push(m);
        }
    });
    let id = unique("pve-order");
    let log = bundle.dir.path().join("log");
    pve.env
        .detached_to(&["create", "--bundle", bundle.path(), &id], &log);
    let config = pve.pct(&["config", &pve.vmid(&id)]).stdout;
    let mps: Vec<&str> = config
        .lines()
        .filter(|l| l.starts_with("mp") && !l.contains("mp=/.nexcage"))
        .collect();
    assert_eq!(
        mps,
        [format!("mp1: {},mp=/srv/p", data.path().display())],
        "{config}"
    );
    pve.env.ok(&["start", &id]);
    pve.env.wait_status(&id, "stopped");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "from-host\nfrom-host\n0\n"
    );
    pve.env.ok(&["delete", &id]);
    pve.assert_clean();
}

/// An engine's own `/dev/shm` (podman binds one of its own, Docker with
/// `--ipc=shareable`) is the container's, over the tmpfs Proxmox mounts there, with the
/// spec's restricting options.
#[test]
fn engines_shm_is_the_containers() {
    let pve = Pve::new();
    let shm = tempfile::tempdir().unwrap();
    std::fs::write(shm.path().join("seg"), "shared\n").unwrap();
    let root = private_rootfs();
    let script =
        "cat /dev/shm/seg; awk '$5 == \"/dev/shm\" {o = $6} END {print o}' /proc/self/mountinfo";
    let bundle = json_bundle(&["sh", "-c", script], root.path(), |s| {
        for m in s["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev/shm" {
                *m = serde_json::json!({"destination": "/dev/shm", "type": "bind",
                    "source": shm.path(), "options": ["rbind", "nosuid", "noexec", "nodev"]});
            }
        }
    });
    let out = pve
        .env
        .run(&["run", "--bundle", bundle.path(), &unique("pve-shm")]);
    assert_eq!(
        common::stdout(&out),
        "shared\nrw,nosuid,nodev,noexec,relatime\n",
        "{}",
        common::stderr(&out)
    );
    pve.assert_clean();
}

/// `podman stats` and `podman top` see the container (its cgroup is Proxmox's
/// `lxc/<vmid>`, found from the pid, whatever the spec's cgroupsPath says).
#[test]
fn podman_stats_and_top() {
    let pve = Pve::new();
    let name = PodmanName(unique("nxc-pct-st"));
    let argv = ["sleep", "1000"];
    let out = podman_run(
        &pve,
        &["-d", "--memory", "64m"],
        &name.0,
        ON_PVE,
        &argv,
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let format = "{{.MemUsage}}|{{.PIDs}}";
    let stats = run_cmd(
        command(&[
            "podman",
            "stats",
            "--no-stream",
            "--format",
            format,
            &name.0,
        ]),
        None,
    );
    let (mem, pids) = stats.stdout.trim().split_once('|').unwrap_or_default();
    assert!(
        mem.ends_with("/ 67.11MB"),
        "{} {}",
        stats.stdout,
        stats.stderr
    );
    assert!(
        pids.parse::<u32>().is_ok_and(|n| n >= 2),
        "{}",
        stats.stdout
    );
    let top = run_cmd(command(&["podman", "top", &name.0]), None).stdout;
    assert!(top.contains("sleep 1000"), "{top}");
    drop(name);
    pve.assert_clean();
}
