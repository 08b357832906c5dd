//! The plain-LXC backend (`lxc`) on the real LXC tools: the runc lifecycle, a
//! foreground run, how the spec maps onto the container, seccomp, faults (kill -9 at
//! any point, then `delete --force`) and bad input. Every test also checks that
//! nothing is left: no record, runtime dir, LXC definition, running LXC container,
//! cgroup, or process.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Bundle, CRUN, Env, Out, pid_alive, rootfs, run_cmd, unique, write_script};

/// The default backend's name in the routing config, and so its directories' names.
const BACKEND: &str = "lxc";
/// A second `lxc` backend: unprivileged, with its own lxcpath; picked by annotation.
const UNPRIVILEGED: &str = "lxu";

/// An isolated nexcage root whose default backend is `lxc` (`lxu` and crun are
/// there too, to be picked by annotation); remembers the ids it handed out to check
/// and clean them.
struct Lxc {
    env: Env,
    /// Holds `lxu`'s lxcpath.
    scratch: tempfile::TempDir,
    ids: Mutex<Vec<String>>,
}

impl Lxc {
    fn new() -> Lxc {
        let scratch = tempfile::Builder::new()
            .prefix("nexcage-lxcpath-")
            .tempdir()
            .unwrap();
        Lxc {
            env: Env::with_config(&format!(
                r#"{{"default":"{BACKEND}",
                    "backends":{{"{BACKEND}":{{"type":"lxc"}},
                                 "{UNPRIVILEGED}":{{"type":"lxc","unprivileged":true,"lxcpath":"{}"}},
                                 "crun":{{"type":"oci","path":"{CRUN}"}}}},
                    "annotation_backends":["{BACKEND}","{UNPRIVILEGED}","crun"]}}"#,
                scratch.path().join("lxcpath").display()
            )),
            scratch,
            ids: Mutex::new(Vec::new()),
        }
    }

    fn id(&self, prefix: &str) -> String {
        let id = unique(prefix);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// The default backend's lxcpath: `<root>/lxc/<backend>`.
    fn lxcpath(&self) -> PathBuf {
        self.lxcpath_of(BACKEND)
    }

    fn lxcpath_of(&self, backend: &str) -> PathBuf {
        match backend {
            UNPRIVILEGED => self.scratch.path().join("lxcpath"),
            _ => self.env.root().join("lxc").join(backend),
        }
    }

    fn runtime_dir(&self, id: &str) -> PathBuf {
        self.env.root().join("backends").join(BACKEND).join(id)
    }

    /// `nexcage ARGS` with stdio in files and a deadline.
    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = self.env.cmd();
        cmd.args(args);
        run_cmd(cmd, None)
    }

    /// LXC's own view: RUNNING, FROZEN, STOPPED, or "" when not defined.
    fn lxc_state(&self, id: &str) -> String {
        self.lxc_state_in(BACKEND, id)
    }

    fn lxc_state_in(&self, backend: &str, id: &str) -> String {
        let out = Command::new("lxc-info")
            .arg("-P")
            .arg(self.lxcpath_of(backend))
            .args(["-n", id, "-s", "-H"])
            .stdin(Stdio::null())
            .output()
            .expect("lxc-info");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn wait_lxc_state(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.lxc_state(id);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: LXC says {got}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything of any container of this root that is still there.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let list = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path().display().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        left.extend(list(self.env.root().join("containers")));
        for backend in [BACKEND, UNPRIVILEGED] {
            left.extend(
                list(self.env.root().join("backends").join(backend))
                    .into_iter()
                    .filter(|p| !p.ends_with(".lock")),
            );
            // Definitions, whether or not LXC still knows them.
            left.extend(list(self.lxcpath_of(backend)));
            if let Ok(out) = Command::new("lxc-ls")
                .arg("-P")
                .arg(self.lxcpath_of(backend))
                .arg("--running")
                .output()
            {
                left.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(|n| format!("running LXC container {n}")),
                );
            }
        }
        for id in self.ids.lock().unwrap().iter() {
            left.extend(cgroups_of(id).iter().map(|p| p.display().to_string()));
        }
        left.extend(
            self.processes()
                .into_iter()
                .map(|(pid, cmd)| format!("process {pid}: {cmd}")),
        );
        left
    }

    /// Nothing left (LXC's monitor removes its cgroups just after the container
    /// stops, so this waits a little for them). `list` runs first: it sweeps the
    /// record temporaries of a creator killed before its record was in place.
    fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert_eq!(self.env.ok(&["list", "-q"]), "");
            let left = self.leftovers();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "left behind: {left:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.env.assert_clean();
    }

    /// `create` of a container whose stdout and stderr go to `log`; asserts success.
    fn create_logged(&self, bundle: &Bundle, id: &str, extra: &[&str], log: &Path) {
        let file = std::fs::File::create(log).unwrap();
        let status = self
            .env
            .cmd()
            .arg("create")
            .args(extra)
            .args(["--bundle", bundle.path(), id])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "create {id}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// Holders, LXC monitors and attach processes of this root's containers.
    fn processes(&self) -> Vec<(i32, String)> {
        let mut found = processes_mentioning(self.env.root());
        found.extend(processes_mentioning(self.scratch.path()));
        found
    }

    /// The ids `list -q` shows.
    fn listed(&self) -> Vec<String> {
        self.run(&["list", "-q"])
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The host pids `ps --format json` reports.
    fn ps(&self, id: &str) -> Vec<i64> {
        serde_json::from_str(&self.env.ok(&["ps", "--format", "json", id])).expect("ps JSON")
    }

    /// The host pid of the container's process whose argv is `argv`: looked up among
    /// the pids `ps` reports that really are in the container's cgroup (`ps` may
    /// report more, see `ps_lists_only_its_own_container`).
    fn find(&self, id: &str, argv: &[&str]) -> Option<i64> {
        self.ps(id)
            .into_iter()
            .find(|pid| in_cgroup_of(*pid, id) && cmdline(*pid) == argv)
    }
}

impl Drop for Lxc {
    /// Best effort, for a failed test: nexcage's delete, then LXC's own tools, then
    /// the processes and cgroups of this root's containers.
    fn drop(&mut self) {
        for id in self.listed() {
            let _ = self.env.run(&["delete", "--force", &id]);
        }
        for backend in [BACKEND, UNPRIVILEGED] {
            let lxcpath = self.lxcpath_of(backend);
            if let Ok(out) = Command::new("lxc-ls").arg("-P").arg(&lxcpath).output() {
                for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("lxc-stop")
                        .arg("-P")
                        .arg(&lxcpath)
                        .args(["-n", name, "--kill"])
                        .output();
                }
            }
        }
        for (pid, _) in self.processes() {
            // SAFETY: kill(2) on a holder or LXC monitor this test's root started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for id in self.ids.lock().unwrap().iter() {
            for dir in cgroups_of(id) {
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The cgroups LXC makes for a container (`nexcage/<id>`) and its monitor
/// (`nexcage.monitor/<id>`) that exist, in any hierarchy.
fn cgroups_of(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for top in ["nexcage", "nexcage.monitor"] {
            let dir = h.path().join(top).join(id);
            if dir.is_dir() {
                found.push(dir);
            }
        }
    }
    found
}

/// Live processes whose command line mentions `path` or a file under it (holders,
/// which have their creator's command line, LXC monitors, lxc-attach), never this
/// test process.
fn processes_mentioning(path: &Path) -> Vec<(i32, String)> {
    let path = path.display().to_string();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mentions = raw
                .split(|b| *b == 0)
                .map(String::from_utf8_lossy)
                .any(|arg| arg == path || arg.starts_with(&format!("{path}/")));
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            (mentions && pid_alive(pid as i64)).then_some((pid, cmd))
        })
        .collect()
}

/// Whether process `pid` is in the container's own memory cgroup (`nexcage/<id>`).
fn in_cgroup_of(pid: i64, id: &str) -> bool {
    let line = format!(":memory:/nexcage/{id}");
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.lines().any(|l| l.ends_with(&line)))
}

fn cmdline(pid: i64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A field of /proc/PID/status, e.g. `CapEff`.
fn status_field(pid: i64, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A bundle from bundles/busybox/config.json (as `Bundle::new`) with `edit` applied
/// to its JSON, for fields oci-spec's types would fill in or normalise.
fn json_bundle(args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
    let bundle = Bundle::new(args);
    let path = bundle.dir.path().join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

fn assert_out(out: &Out, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(code), stdout, stderr)
    );
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// create (the container exists: state.pid is in its namespaces and cgroups) ->
/// start (that pid becomes the workload) -> exec -> exec -d -> ps -> pause -> resume
/// -> kill TERM -> delete, each step checked against runc's behaviour and LXC's own
/// view of the container.
#[test]
fn lifecycle() {
    let lx = Lxc::new();
    let id = lx.id("lxc-life");
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 42' TERM; echo started; while true; do sleep 0.1; done",
    ]);
    let pid_file = bundle.dir.path().join("holder.pid");
    let log = bundle.dir.path().join("out");
    lx.create_logged(
        &bundle,
        &id,
        &["--pid-file", pid_file.to_str().unwrap()],
        &log,
    );

    let state = lx.env.state(&id);
    assert!(
        state["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{state}"
    );
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "created");
    assert_eq!(state["bundle"], bundle.path());
    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    let holder: i64 = pid_text.parse().expect("pid file: a bare number");
    assert_eq!(state["pid"], holder);
    assert!(pid_alive(holder), "holder {holder} not running");
    let comm = std::fs::read_to_string(format!("/proc/{holder}/comm")).unwrap();
    assert_eq!(comm, "nexcage-holder\n");
    // Defined in the default lxcpath and running: after create the container exists,
    // only the workload waits for start.
    assert!(lx.lxcpath().join(&id).join("config").is_file());
    assert!(lx.runtime_dir(&id).is_dir());
    assert_eq!(lx.lxc_state(&id), "RUNNING");
    let init = lx
        .find(
            &id,
            &["/dev/.nexcage/nexcage", "init", "--dir", "/dev/.nexcage"],
        )
        .expect("init in ps");
    // The engine's pid is in the container: the namespaces hooks and CNI configure,
    // and the cgroups stats are read from, are the container's.
    for ns in ["net", "mnt", "uts", "ipc", "pid", "cgroup"] {
        let of = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_eq!(of(holder), of(init), "{ns}");
        assert_ne!(of(holder), host, "{ns}");
    }
    assert!(
        in_cgroup_of(holder, &id),
        "holder not in the container's cgroup"
    );
    assert!(std::fs::read_to_string(&log).unwrap().is_empty());

    lx.env.ok(&["start", &id]);
    assert_eq!(lx.env.status(&id), "running");
    assert_eq!(lx.lxc_state(&id), "RUNNING");
    wait_for("the workload's output", || {
        std::fs::read_to_string(&log).unwrap() == "started\n"
    });
    let err = lx.env.fails(&["start", &id]);
    assert!(
        err.contains("cannot start an already running container"),
        "{err}"
    );

    // init is nexcage's, and the engine's pid is now the workload itself.
    assert!(pid_alive(init));
    assert_eq!(lx.env.state(&id)["pid"], holder);
    assert_eq!(cmdline(holder).first().map(String::as_str), Some("sh"));
    assert!(lx.ps(&id).contains(&holder), "the workload is not in ps");

    // nexcage's binary is the host's, read-only inside, also through init's
    // /proc/PID/exe (CVE-2019-5736's way in).
    let out = lx.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo x >> /dev/.nexcage/nexcage || echo ro; echo x >> /proc/1/exe || echo ro",
    ]);
    assert_eq!(out.stdout, "ro\nro\n", "{}", out.stderr);

    // Foreground exec: separate stdout and stderr, exact exit status.
    let out = lx.run(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_out(&out, 5, "out\n", "err\n");

    // Detached exec with a pid file; ps shows it (table and JSON).
    common::assert_detached_exec(&lx.env, bundle.dir.path(), &id);
    // (exec -d returns once lxc-attach runs, maybe before the process does.)
    let mut sleeper = None;
    wait_for("the exec'd process in ps", || {
        sleeper = lx.find(&id, &["sleep", "1000"]);
        sleeper.is_some()
    });
    let sleeper = sleeper.unwrap();
    let table = lx.env.ok(&["ps", &id]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.split_whitespace().any(|c| c == "PID"), "{table}");
    assert!(table.lines().any(|l| l.ends_with("sleep 1000")), "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&sleeper.to_string())),
        "{table}"
    );

    // pause: frozen by LXC's freezer; exec and delete refused meanwhile.
    lx.env.ok(&["pause", &id]);
    assert_eq!(lx.env.status(&id), "paused");
    assert_eq!(lx.lxc_state(&id), "FROZEN");
    let freezer = format!("/sys/fs/cgroup/freezer/nexcage/{id}/freezer.state");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    let out = lx.run(&["exec", &id, "true"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("cannot exec in a paused container"),
        "{}",
        out.stderr
    );
    let err = lx.env.fails(&["delete", &id]);
    assert!(
        err.contains(&format!(
            "cannot delete container {id} that is not stopped: paused"
        )),
        "{err}"
    );
    lx.env.ok(&["resume", &id]);
    assert_eq!(lx.env.status(&id), "running");
    assert_eq!(lx.lxc_state(&id), "RUNNING");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "THAWED");
    let err = lx.env.fails(&["resume", &id]);
    assert!(err.contains("container not paused"), "{err}");
    assert_eq!(lx.env.ok(&["exec", &id, "echo", "again"]), "again\n");

    let err = lx.env.fails(&["delete", &id]);
    assert!(
        err.contains(&format!(
            "cannot delete container {id} that is not stopped: running"
        )),
        "{err}"
    );

    // SIGTERM reaches the workload (which traps it), not just PID 1.
    lx.env.ok(&["kill", &id, "TERM"]);
    lx.env.wait_status(&id, "stopped");
    assert_eq!(lx.env.state(&id)["pid"], 0);
    wait_for("the holder to exit", || !pid_alive(holder));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "started\ngot-term\n"
    );
    lx.wait_lxc_state(&id, "STOPPED");
    let err = lx.env.fails(&["exec", &id, "true"]);
    assert!(err.contains("cannot exec in a stopped container"), "{err}");

    lx.env.ok(&["delete", &id]);
    let err = lx.env.fails(&["state", &id]);
    assert!(
        err.contains(&format!("container \"{id}\" does not exist")),
        "{err}"
    );
    assert_eq!(lx.lxc_state(&id), "");
    lx.assert_clean();
}

/// Foreground `run`: the workload's stdout, stderr and exit status, as the spec's
/// user with its env, cwd, hostname and rlimits, under nexcage's init in LXC.
#[test]
fn run_foreground() {
    let lx = Lxc::new();
    let bundle = json_bundle(
        &[
            "sh",
            "-c",
            "echo \"$GREETING|$PWD|$(id -u):$(id -g)|$(id -G)|$(hostname)|$(ulimit -n)|$(cat /proc/1/comm)\"; \
             echo err >&2; exit 7",
        ],
        |s| {
            s["hostname"] = json!("lxc-run-host");
            let p = &mut s["process"];
            p["env"] = json!(["PATH=/bin:/usr/bin:/sbin", "GREETING=hello world"]);
            p["cwd"] = json!("/tmp");
            p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]});
            p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 777}]);
        },
    );
    let id = lx.id("lxc-run");
    let out = lx.run(&["run", "--bundle", bundle.path(), &id]);
    assert_out(
        &out,
        7,
        "hello world|/tmp|1000:1000|1000 2000|lxc-run-host|777|nexcage\n",
        "err\n",
    );
    lx.assert_clean();

    // A workload that cannot be started fails the create, with runc's words (which
    // engines turn into 127).
    let bundle = Bundle::new(&["/no/such/program"]);
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-run")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            r#"exec: "/no/such/program": stat /no/such/program: no such file or directory"#
        ),
        "{}",
        out.stderr
    );
    // Killed by a signal: 128 + signal, as a shell says.
    let bundle = Bundle::new(&["sh", "-c", "kill -KILL $$"]);
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-run")]);
    assert_eq!(out.code, Some(137), "{}", out.stderr);
    lx.assert_clean();
}

/// Resources, a read-only root, masked and read-only paths, a bind mount,
/// capabilities, no_new_privs and sysctls, checked inside (workload and exec) and on
/// the host.
#[test]
fn spec_maps_to_the_container() {
    let lx = Lxc::new();
    // A private rootfs: the bind mount's mount point is made in it.
    let scratch = tempfile::Builder::new()
        .prefix("nexcage-lxc-")
        .tempdir()
        .unwrap();
    let private_rootfs = scratch.path().join("rootfs");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(rootfs())
        .arg(&private_rootfs)
        .status()
        .unwrap();
    assert!(cp.success());
    // The shared rootfs may have it already: other backends make mount points in it.
    std::fs::create_dir_all(private_rootfs.join("data")).unwrap();
    let data = scratch.path().join("data");
    for dir in ["rw", "ro", "secretdir"] {
        std::fs::create_dir_all(data.join(dir)).unwrap();
    }
    std::fs::write(data.join("secret.txt"), "secret\n").unwrap();
    std::fs::write(data.join("secretdir/inside"), "secret\n").unwrap();
    std::fs::write(data.join("ro/file"), "read me\n").unwrap();

    let host_sysctl = |name: &str| std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap();
    let host_before = (
        host_sysctl("net/ipv4/ip_forward"),
        host_sysctl("net/ipv4/ip_unprivileged_port_start"),
    );

    let bundle = json_bundle(&["sleep", "1000"], |s| {
        s["root"] = json!({"path": private_rootfs, "readonly": true});
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]
        }));
        let linux = &mut s["linux"];
        linux["maskedPaths"]
            .as_array_mut()
            .unwrap()
            .extend([json!("/data/secret.txt"), json!("/data/secretdir")]);
        linux["readonlyPaths"]
            .as_array_mut()
            .unwrap()
            .push(json!("/data/ro"));
        linux["resources"]["memory"] = json!({"limit": 64 * 1024 * 1024});
        linux["resources"]["pids"] = json!({"limit": 42});
        linux["sysctl"] = json!({
            "net.ipv4.ip_forward": "1",
            "net.ipv4.ip_unprivileged_port_start": "345"
        });
        let p = &mut s["process"];
        p["capabilities"] = json!({
            "bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []
        });
        p["noNewPrivileges"] = json!(true);
    });
    let id = lx.id("lxc-map");
    lx.env.detached(&["create", "--bundle", bundle.path(), &id]);
    lx.env.ok(&["start", &id]);
    let exec = |script: &str| lx.run(&["exec", &id, "sh", "-c", script]);

    // Resources: the container's own cgroup, as seen inside and on the host.
    let out = exec("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max");
    assert_out(&out, 0, "67108864\n42\n", "");
    let host_cg = |c: &str, f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{c}/nexcage/{id}/{f}")).unwrap()
    };
    assert_eq!(host_cg("memory", "memory.limit_in_bytes"), "67108864\n");
    assert_eq!(host_cg("pids", "pids.max"), "42\n");
    // The spec denies all devices but runc's defaults.
    let devices = host_cg("devices", "devices.list");
    assert!(
        !devices.contains("a *:* rwm") && devices.contains("c 1:3 rwm"),
        "{devices}"
    );

    // Read-only root; the bind mount writable except its read-only path.
    let out = exec("touch /rootfile");
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert_out(
        &exec("echo hi > /data/rw/x && cat /data/rw/x"),
        0,
        "hi\n",
        "",
    );
    assert_eq!(std::fs::read_to_string(data.join("rw/x")).unwrap(), "hi\n");
    let out = exec("cat /data/ro/file; touch /data/ro/new");
    assert_eq!((out.code, out.stdout.as_str()), (Some(1), "read me\n"));
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert!(!data.join("ro/new").exists());
    // The default readonlyPaths (/proc/sys) too.
    let out = exec("echo 0 > /proc/sys/net/ipv4/ip_forward");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );

    // Masked: a file reads empty, a directory is empty; the default ones too.
    assert_out(
        &exec(
            "cat /data/secret.txt; ls -A /data/secretdir; cat /proc/timer_list /proc/keys | wc -c",
        ),
        0,
        "0\n",
        "",
    );
    assert_eq!(
        std::fs::read_to_string(data.join("secret.txt")).unwrap(),
        "secret\n"
    );

    // No capabilities and no_new_privs, for exec'd processes and the workload.
    assert_out(
        &exec("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status"),
        0,
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
         CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n",
        "",
    );
    let workload = lx.find(&id, &["sleep", "1000"]).expect("workload in ps");
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(workload, field), "0000000000000000", "{field}");
    }
    assert_eq!(status_field(workload, "NoNewPrivs"), "1");

    // sysctls in the container's network namespace, not the host's.
    assert_out(
        &exec("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/ip_unprivileged_port_start"),
        0,
        "1\n345\n",
        "",
    );
    assert_eq!(
        host_before,
        (
            host_sysctl("net/ipv4/ip_forward"),
            host_sysctl("net/ipv4/ip_unprivileged_port_start"),
        )
    );

    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();
    // The rootfs is the bundle's: used in place, never changed or removed.
    assert!(private_rootfs.join("bin/busybox").exists());
    assert!(!private_rootfs.join("rootfile").exists());
}

/// A network namespace the spec names by path is joined, not replaced.
#[test]
fn joins_a_network_namespace_by_path() {
    let lx = Lxc::new();
    let ns = common::Netns::new("nxlx-test", "10.213.77.1/32");
    let path = ns.path();
    let bundle = json_bundle(&["sh", "-c", "ip -o -4 addr show dev lo"], |s| {
        for n in s["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "network" {
                n["path"] = json!(path);
            }
        }
    });
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-netns")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("inet 10.213.77.1/32"), "{}", out.stdout);
    // The namespace outlives the container.
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "-4", "addr"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.213.77.1/32"));
    lx.assert_clean();
}

/// The profile is LXC's filter: mkdir(2) fails with EPERM in the workload and in
/// exec'd processes; everything else works.
#[test]
fn seccomp_profile_is_enforced() {
    let lx = Lxc::new();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    let script = "mkdir /tmp/x; echo mkdir=$?; touch /tmp/y && ls /tmp";
    let bundle = json_bundle(&["sh", "-c", script], |s| {
        s["linux"]["seccomp"] = profile.clone();
    });
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-sec")]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "mkdir=1\ny\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.stderr
    );

    let bundle = json_bundle(&["sleep", "1000"], |s| {
        s["linux"]["seccomp"] = profile.clone();
    });
    let id = lx.id("lxc-sec");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let out = lx.run(&["exec", &id, "sh", "-c", script]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "mkdir=1\ny\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.stderr
    );
    let workload = lx.find(&id, &["sleep", "1000"]).expect("workload in ps");
    assert_eq!(status_field(workload, "Seccomp"), "2", "filter mode");
    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();
}

/// kill -9 of the holder (before and after start) or of the container's init: the
/// container is stopped and deletable; nothing is left.
#[test]
fn killed_holder_or_init() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);

    // The holder of a running container: the LXC container must not outlive delete.
    let id = lx.id("lxc-k9");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let holder = lx.env.state(&id)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    lx.env.wait_status(&id, "stopped");
    lx.env.ok(&["delete", &id]);
    lx.assert_clean();

    // The holder before start: stopped, cannot be started, cleanable.
    let id = lx.id("lxc-k9h");
    lx.env.detached(&["create", "--bundle", bundle.path(), &id]);
    let holder = lx.env.state(&id)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    lx.env.wait_status(&id, "stopped");
    let err = lx.env.fails(&["start", &id]);
    assert!(
        err.contains("cannot start a container that has stopped"),
        "{err}"
    );
    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();

    // The container's init, from the host.
    let id = lx.id("lxc-k9i");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let init = lx
        .find(
            &id,
            &["/dev/.nexcage/nexcage", "init", "--dir", "/dev/.nexcage"],
        )
        .expect("init in ps");
    // SAFETY: kill(2) on the container's init.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    lx.env.wait_status(&id, "stopped");
    lx.wait_lxc_state(&id, "STOPPED");
    lx.env.ok(&["delete", &id]);
    lx.assert_clean();
}

/// `nexcage gc` removes what no record owns: a container whose record was removed
/// (holder, LXC container, cgroups, runtime dir), and in nexcage's own lxcpath a
/// definition whose runtime dir is gone; a container with a record is left running.
#[test]
fn gc_removes_what_no_record_owns() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let unrecorded = lx.id("lxc-gc-rec");
    let owned = lx.id("lxc-gc-own");
    let stray = lx.id("lxc-gc-def");
    for id in [&unrecorded, &owned, &stray] {
        lx.env
            .detached(&["run", "-d", "--bundle", bundle.path(), id]);
    }
    let holder = lx.env.state(&unrecorded)["pid"].as_i64().unwrap();
    std::fs::remove_file(lx.env.root().join("containers").join(&unrecorded)).unwrap();
    // The stray: its holder killed, its record and runtime dir removed.
    let stray_holder = lx.env.state(&stray)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(stray_holder as i32, libc::SIGKILL) };
    std::fs::remove_file(lx.env.root().join("containers").join(&stray)).unwrap();
    std::fs::remove_dir_all(lx.runtime_dir(&stray)).unwrap();
    let out = lx.env.ok(&["gc"]);
    assert!(
        out.contains(&format!(
            "{BACKEND}: container {unrecorded}, which no record owns"
        )) && out.contains(&format!(
            "{BACKEND}: LXC container {stray} without a runtime directory"
        )),
        "{out}"
    );
    assert!(!pid_alive(holder), "the unowned holder still runs");
    for id in [&unrecorded, &stray] {
        assert_eq!(lx.lxc_state(id), "", "{id} is still defined");
    }
    assert_eq!(lx.lxc_state(&owned), "RUNNING");
    assert_eq!(lx.env.ok(&["gc"]), "", "a second gc found more");
    lx.env.ok(&["delete", "--force", &owned]);
    lx.assert_clean();
}

/// A foreground `run` killed while its container runs: still listed, cleanable.
#[test]
fn killed_foreground_run() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = lx.id("lxc-k9r");
    let mut run = lx
        .env
        .cmd()
        .args(["run", "--bundle", bundle.path(), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the container to run", || {
        lx.listed().contains(&id) && lx.env.status(&id) == "running"
    });
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(lx.listed(), std::slice::from_ref(&id));
    assert_eq!(lx.env.status(&id), "running");
    assert_eq!(lx.lxc_state(&id), "RUNNING");
    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();
}

/// kill -9 of `nexcage create` at each step (runtime dir made, LXC definition
/// written, lxc-start running, holder started) and at fixed delays: `delete --force`, twice, leaves
/// nothing.
#[test]
fn killed_create() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    type Milestone = Box<dyn Fn(&Lxc, &str) -> bool>;
    let milestones: Vec<(&str, Milestone)> = vec![
        (
            "runtime dir",
            Box::new(|lx, id| lx.runtime_dir(id).exists()),
        ),
        (
            "LXC definition",
            Box::new(|lx, id| lx.lxcpath().join(id).exists()),
        ),
        // lxc-start daemonizes and outlives the creator: delete waits for it.
        (
            "lxc-start at work",
            Box::new(|lx, id| {
                processes_mentioning(&lx.lxcpath())
                    .iter()
                    .any(|(_, cmd)| cmd.contains("lxc-start") && cmd.contains(id))
            }),
        ),
        (
            "holder pid note",
            Box::new(|lx, id| lx.runtime_dir(id).join("holder.pid").exists()),
        ),
    ];
    for (what, reached) in &milestones {
        let id = lx.id("lxc-k9c");
        let mut create = lx
            .env
            .cmd()
            .args(["create", "--bundle", bundle.path(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Until the step is reached, or create is done (having passed it, or not).
        while !reached(&lx, &id) {
            assert!(Instant::now() < deadline, "{what} never appeared");
            if create.try_wait().unwrap().is_some() {
                assert!(reached(&lx, &id), "create ended before {what}");
                break;
            }
            std::hint::spin_loop();
        }
        let _ = create.kill();
        let _ = create.wait();
        lx.env.ok(&["delete", "--force", &id]);
        lx.env.ok(&["delete", "--force", &id]);
        lx.assert_clean();
    }
    for delay_ms in [0u64, 10, 30, 80] {
        let id = lx.id("lxc-k9c");
        let mut create = lx
            .env
            .cmd()
            .args(["create", "--bundle", bundle.path(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = create.kill();
        let _ = create.wait();
        lx.env.ok(&["delete", "--force", &id]);
        lx.assert_clean();
    }
}

/// runc's delete rules: refused without --force while running; --force from any
/// state, and again (idempotent); unknown ids.
#[test]
fn delete_rules() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = lx.id("lxc-del");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let out = lx.run(&["delete", &id]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.trim_end(),
        format!("nexcage: cannot delete container {id} that is not stopped: running")
    );
    assert_eq!(lx.lxc_state(&id), "RUNNING");
    lx.env.ok(&["delete", "--force", &id]);
    lx.env.ok(&["delete", "--force", &id]);
    let err = lx.env.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
    lx.assert_clean();

    // A paused container too.
    let id = lx.id("lxc-del");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    lx.env.ok(&["pause", &id]);
    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();
}

/// Security-relevant fields LXC cannot honour are refused at create, with one line
/// naming the field, and nothing made; so are broken bundles and routing.
#[test]
fn bad_input_is_refused() {
    let lx = Lxc::new();
    let refused = |lx: &Lxc, bundle: &Bundle, needle: &str| {
        let id = lx.id("lxc-bad");
        for command in ["create", "run"] {
            let out = lx.run(&[command, "--bundle", bundle.path(), &id]);
            assert_eq!(out.code, Some(1), "{command} {needle}: {}", out.stderr);
            assert_eq!(out.stdout, "");
            assert_eq!(
                out.stderr.trim_end().lines().count(),
                1,
                "one line: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains(needle),
                "{:?} should name {needle:?}",
                out.stderr
            );
            lx.assert_clean();
        }
    };
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit)] = &[
        // A failing create hook aborts the create and leaves nothing.
        ("createRuntime hook /bin/false: exit status 1", |s| {
            s["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
        }),
        ("prestart hook /bin/sh: exit status 3: no", |s| {
            s["hooks"] = json!({"prestart": [
                {"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 3"]}]});
        }),
        (
            r#"exec: "no-such-program": executable file not found in $PATH"#,
            |s| {
                s["process"]["args"] = json!(["no-such-program"]);
            },
        ),
        ("SCMP_ACT_NOTIFY", |s| {
            s["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
            });
        }),
        ("mount namespace", |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "mount");
        }),
        ("/proc/self/ns/uts is not a network namespace", |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "network", "path": "/proc/self/ns/uts"}));
        }),
        ("linux.cgroupsPath \"system.slice:nx:abc\"", |s| {
            s["linux"]["cgroupsPath"] = json!("system.slice:nx:abc");
        }),
        ("process.selinuxLabel", |s| {
            s["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0:c1,c2");
        }),
        ("device \"/dev/null\" 99:99", |s| {
            s["linux"]["devices"] =
                json!([{"path": "/dev/null", "type": "c", "major": 99, "minor": 99}]);
        }),
        // A value must not smuggle in LXC config keys.
        ("line break", |s| {
            s["hostname"] = json!("x\nlxc.init.cmd = /bin/sh");
        }),
        ("linux.sysctl", |s| {
            s["linux"]["sysctl"] = json!({"net.ipv4.ip_forward\nlxc.apparmor.profile": "1"});
        }),
    ];
    for (needle, edit) in cases {
        refused(&lx, &json_bundle(&["true"], *edit), needle);
    }

    let broken = Bundle::new(&["true"]);
    std::fs::write(broken.dir.path().join("config.json"), "{\"ociVersion\": ").unwrap();
    refused(&lx, &broken, "not a valid OCI spec");
    // Wrong only where create's outline does not look: the backend's whole parse
    // refuses it, after the claim, and takes the claim back.
    refused(
        &lx,
        &json_bundle(&["true"], |s| s["mounts"] = json!(5)),
        "not a valid OCI spec",
    );
    refused(&lx, &Bundle::missing_rootfs(), "/nonexistent/rootfs");
    refused(
        &lx,
        &Bundle::annotated(&["true"], &[("org.nexcage.backend", "nosuch")]),
        "unknown backend \"nosuch\"",
    );

    // A routing config naming a backend it does not define.
    let env = Env::with_config(r#"{"default":"nosuch","backends":{"lxc":{"type":"lxc"}}}"#);
    let bundle = Bundle::new(&["true"]);
    let err = env.fails(&["create", "--bundle", bundle.path(), &unique("lxc-bad")]);
    assert!(err.contains("unknown backend \"nosuch\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    env.assert_clean();
    assert!(!env.root().join("lxc").exists(), "nothing of LXC made");
}

/// A container of the same name already defined in the lxcpath (made by someone
/// else) is refused, and never stopped or removed.
#[test]
fn foreign_lxc_definition_is_left_alone() {
    let lx = Lxc::new();
    let id = lx.id("lxc-foreign");
    let foreign = lx.lxcpath().join(&id);
    std::fs::create_dir_all(&foreign).unwrap();
    let config = "lxc.uts.name = someone-else\n";
    std::fs::write(foreign.join("config"), config).unwrap();
    let bundle = Bundle::new(&["true"]);
    let out = lx.run(&["create", "--bundle", bundle.path(), &id]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("is already defined"), "{}", out.stderr);
    let left = std::fs::read_to_string(foreign.join("config"));
    assert_eq!(
        left.as_deref().ok(),
        Some(config),
        "the foreign LXC definition {} was removed",
        foreign.display()
    );
    std::fs::remove_dir_all(&foreign).unwrap();
    lx.assert_clean();
}

/// `ps` lists the container's own processes, not those of its neighbours (LXC puts
/// init straight into `nexcage/<id>`, not into a child of it).
#[test]
fn ps_lists_only_its_own_container() {
    let lx = Lxc::new();
    let mine = lx.id("lxc-ps");
    let other = lx.id("lxc-ps");
    for (id, secs) in [(&mine, "1001"), (&other, "1002")] {
        let bundle = Bundle::new(&["sleep", secs]);
        lx.env
            .detached(&["run", "-d", "--bundle", bundle.path(), id]);
    }
    let foreign: Vec<(i64, Vec<String>)> = lx
        .ps(&mine)
        .into_iter()
        .filter(|p| !in_cgroup_of(*p, &mine))
        .map(|p| (p, cmdline(p)))
        .collect();
    lx.env.ok(&["delete", "--force", &mine]);
    lx.env.ok(&["delete", "--force", &other]);
    lx.assert_clean();
    assert_eq!(foreign, [], "ps {mine} lists processes of other containers");
}

/// A second `lxc` backend picked by annotation: unprivileged (the container's root
/// is host uid 100000, the rootfs an id-mapped mount) in the lxcpath its config names.
#[test]
fn unprivileged_backend_with_its_own_lxcpath() {
    use std::os::unix::fs::PermissionsExt;
    let lx = Lxc::new();
    let bundle = Bundle::annotated(&["sleep", "1000"], &[("org.nexcage.backend", UNPRIVILEGED)]);
    // A root the mapped root cannot search: refused clearly, nothing made.
    std::fs::set_permissions(lx.env.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = lx.run(&["run", "-d", "--bundle", bundle.path(), &lx.id("lxc-unpriv")]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("searchable by others"),
        "{}",
        out.stderr
    );
    lx.assert_clean();
    std::fs::set_permissions(lx.env.root(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let id = lx.id("lxc-unpriv");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    assert!(
        lx.lxcpath_of(UNPRIVILEGED)
            .join(&id)
            .join("config")
            .is_file()
    );
    assert!(!lx.lxcpath().join(&id).exists());
    assert!(
        lx.env
            .root()
            .join("backends")
            .join(UNPRIVILEGED)
            .join(&id)
            .is_dir()
    );
    assert_eq!(lx.lxc_state_in(UNPRIVILEGED, &id), "RUNNING");
    let out = lx.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "id -u; stat -c %u /bin/busybox; cat /proc/self/uid_map",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "0", "100000", "65536"], "{}", out.stdout);
    let workload = lx.find(&id, &["sleep", "1000"]).expect("workload in ps");
    assert_eq!(
        status_field(workload, "Uid"),
        "100000\t100000\t100000\t100000"
    );
    lx.env.ok(&["delete", "--force", &id]);
    assert_eq!(lx.lxc_state_in(UNPRIVILEGED, &id), "");
    lx.assert_clean();
}

/// kill -9 of `nexcage create` while it spawns the holder (the child forked, its
/// pid not yet noted): `delete --force` must still leave no holder behind.
#[test]
fn killed_create_while_spawning_the_holder() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let mut hits = 0;
    for _ in 0..10 {
        let id = lx.id("lxc-k9s");
        let mut create = lx
            .env
            .cmd()
            .args(["create", "--bundle", bundle.path(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // create's first child is the holder; a busy machine may let create finish
        // before this sees it: then that attempt did not hit the window.
        let children = format!("/proc/{0}/task/{0}/children", create.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "create never forked");
            if create.try_wait().unwrap().is_some() {
                break;
            }
            if std::fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty()) {
                let _ = create.kill();
                hits += 1;
                break;
            }
            std::hint::spin_loop();
        }
        let _ = create.wait();
        lx.env.ok(&["delete", "--force", &id]);
        lx.assert_clean();
        if hits == 3 {
            break;
        }
    }
    assert!(hits > 0, "never killed create while it spawned the holder");
}

/// Workloads that end at once, many at a time (`podman run --rm IMAGE true`): each
/// `run` reports the workload's own status, never a failure of the start machinery.
#[test]
fn short_workloads_in_parallel() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sh", "-c", "exit 3"]);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                for _ in 0..8 {
                    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-short")]);
                    assert_eq!((out.code, out.stderr.as_str()), (Some(3), ""));
                }
            });
        }
    });
    lx.assert_clean();
}

/// Every hook kind runs once, in order, with the container's state on stdin: the
/// runtime-namespace ones (prestart, createRuntime, poststart, poststop) on the
/// host; createContainer in the container's namespaces but, as with runc and crun,
/// with the host's root (its interpreter is the host's, never the image's) and the
/// container's root as its working directory; startContainer inside the container
/// (its path is the container's, and it writes where /hooks is bound); the state's
/// pid is the container's process.
#[test]
fn hooks_of_every_kind() {
    let lx = Lxc::new();
    let scratch = tempfile::tempdir().unwrap();
    let host_out = scratch.path().join("host");
    let inside_out = scratch.path().join("inside");
    std::fs::create_dir_all(&host_out).unwrap();
    std::fs::create_dir_all(&inside_out).unwrap();
    let hook = scratch.path().join("hook.sh");
    // $1: where to write, $2: the kind; a line per call also goes to order.log.
    write_script(
        &hook,
        "#!/bin/sh\ncat > \"$1/$2.json\"\necho \"$2\" >> \"$1/order.log\"\n",
    );
    std::fs::copy(&hook, inside_out.join("hook.sh")).unwrap();
    let entry = |dir: &Path, kind: &str| json!({"path": hook, "args": ["hook.sh", dir, kind], "timeout": 10});
    // Where createContainer runs: its root (whose programs it finds), mount namespace
    // and cwd. (/proc is the host's: the hook's own pid is not the one it sees there.)
    let probe = scratch.path().join("probe.sh");
    write_script(
        &probe,
        "#!/bin/sh\n{ readlink /proc/self/exe; readlink /proc/self/ns/mnt; ls -a; } > \"$1\"\n",
    );
    let probed = scratch.path().join("probe.txt");
    let h = host_out.as_path();
    let hooks = json!({
        "prestart": [entry(h, "prestart")],
        "createRuntime": [entry(h, "createRuntime")],
        "createContainer": [entry(h, "createContainer"), {"path": probe, "args": ["probe.sh", probed]}],
        // Its path is the container's (runtime spec): the copy under /hooks.
        "startContainer": [{"path": "/hooks/hook.sh", "args": ["hook.sh", "/hooks", "startContainer"]}],
        "poststart": [entry(h, "poststart")],
        "poststop": [entry(h, "poststop")],
    });
    let bundle = json_bundle(&["sleep", "1000"], |s| {
        s["hooks"] = hooks.clone();
        s["annotations"] = json!({"org.test.hooks": "yes"});
        s["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/hooks", "type": "bind", "source": inside_out,
            "options": ["rbind", "rw"]}));
    });
    let id = lx.id("lxc-hooks");
    let pid_file = scratch.path().join("pid");
    // (The container keeps its stdio: a log file, not a pipe to wait on.)
    let log = scratch.path().join("out");
    lx.create_logged(
        &bundle,
        &id,
        &["--pid-file", pid_file.to_str().unwrap()],
        &log,
    );
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let read = |dir: &Path, kind: &str| -> Value {
        let text = std::fs::read_to_string(dir.join(format!("{kind}.json")))
            .unwrap_or_else(|e| panic!("{kind} hook did not run: {e}"));
        serde_json::from_str(&text).unwrap()
    };
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let state = read(h, kind);
        assert_eq!(state["id"], id.as_str(), "{kind}");
        assert_eq!(state["status"], "creating", "{kind}");
        assert_eq!(state["pid"], pid, "{kind}");
        assert_eq!(state["bundle"], bundle.path(), "{kind}");
        assert_eq!(state["annotations"]["org.test.hooks"], "yes", "{kind}");
        assert!(state["ociVersion"].is_string(), "{kind}");
    }
    let probe = std::fs::read_to_string(&probed).unwrap();
    let lines: Vec<&str> = probe.lines().collect();
    // The host's readlink (the image's would be busybox), from the host's root.
    let host_readlink = std::fs::canonicalize("/usr/bin/readlink").unwrap();
    assert_eq!(lines[0], host_readlink.to_str().unwrap(), "{probe}");
    let container_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_eq!(lines[1], container_mnt.to_str().unwrap(), "{probe}");
    assert!(
        lines[2..].contains(&"hooks"),
        "cwd not the container's root: {probe}"
    );
    assert!(!inside_out.join("startContainer.json").exists());
    lx.env.ok(&["start", &id]);
    assert_eq!(read(&inside_out, "startContainer")["status"], "created");
    let poststart = read(h, "poststart");
    assert_eq!(poststart["status"], "running");
    assert_eq!(poststart["pid"], pid);
    assert!(!host_out.join("poststop.json").exists());
    lx.env.ok(&["kill", &id, "KILL"]);
    lx.env.wait_status(&id, "stopped");
    lx.env.ok(&["delete", &id]);
    assert_eq!(read(h, "poststop")["status"], "stopped");
    assert_eq!(
        std::fs::read_to_string(host_out.join("order.log")).unwrap(),
        "prestart\ncreateRuntime\ncreateContainer\npoststart\npoststop\n"
    );
    assert_eq!(
        std::fs::read_to_string(inside_out.join("order.log")).unwrap(),
        "startContainer\n"
    );
    lx.assert_clean();
}

/// A profile that denies mount(2) (as Docker's does without CAP_SYS_ADMIN) is loaded
/// after the mounts, masks and read-only paths are done: the container starts, the
/// masks hold, and mount fails inside with the profile's errno.
#[test]
fn seccomp_last_after_masks_and_readonly_paths() {
    let lx = Lxc::new();
    let script = "cat /proc/kcore 2>/dev/null | wc -c; \
                  touch /proc/sysrq-trigger 2>/dev/null || echo ro; \
                  mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied";
    let bundle = json_bundle(&["sh", "-c", script], |s| {
        s["linux"]["maskedPaths"] = json!(["/proc/kcore", "/proc/acpi"]);
        s["linux"]["readonlyPaths"] = json!(["/proc/sysrq-trigger", "/proc/sys"]);
        s["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount", "umount2"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}]
        });
        // root with CAP_SYS_ADMIN: only the filter stands in the way of mount.
        let caps = json!(["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"]);
        for set in ["bounding", "effective", "permitted"] {
            s["process"]["capabilities"][set] = caps.clone();
        }
    });
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-seclast")]);
    assert_out(&out, 0, "0\nro\nmount-denied\n", "");
    lx.assert_clean();
}

/// The engines' default seccomp profiles, as they send them (podman's from a
/// container it created; Docker 20.10's as dockerd sent it, hack/docker/
/// example-config.json), give every syscall the same result under nexcage's filter as
/// under runc's and crun's, with the same capabilities (tests/probe/syscalls.c calls
/// each one).
#[test]
fn default_profiles_give_crun_results() {
    let lx = Lxc::new();
    let scratch = tempfile::tempdir().unwrap();
    let probe = scratch.path().join("probe");
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&probe)
        .arg(common::repo().join("tests/probe/syscalls.c"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let docker: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("hack/docker/example-config.json")).unwrap(),
    )
    .unwrap();
    let podman = {
        let id = common::ok({
            let mut c = Command::new("podman");
            c.args([
                "create",
                "--runtime",
                "crun",
                "localhost/nexcage-busybox:latest",
                "true",
            ]);
            c
        });
        let id = id.trim().to_string();
        common::ok({
            let mut c = Command::new("podman");
            c.args(["init", &id]);
            c
        });
        let path = common::ok({
            let mut c = Command::new("podman");
            c.args(["inspect", "--format", "{{.OCIConfigPath}}", &id]);
            c
        });
        let spec: Value = serde_json::from_slice(&std::fs::read(path.trim()).unwrap()).unwrap();
        let _ = Command::new("podman").args(["rm", "-f", &id]).output();
        spec
    };
    for (engine, spec) in [("podman", &podman), ("docker", &docker)] {
        let seccomp = spec["linux"]["seccomp"].clone();
        assert!(seccomp["syscalls"].is_array(), "{engine}: no profile");
        let caps = spec["process"]["capabilities"].clone();
        let bundle = json_bundle(&["/probe"], |s| {
            s["linux"]["seccomp"] = seccomp;
            s["process"]["capabilities"] = caps;
            s["process"]["noNewPrivileges"] = json!(true);
            s["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/probe", "type": "bind", "source": probe,
                "options": ["rbind", "ro"]}));
        });
        let direct_root = tempfile::tempdir().unwrap();
        let root = direct_root.path().to_str().unwrap();
        let direct = |runtime: &str, id: &str| {
            let out = run_cmd(
                common::command(&[
                    runtime,
                    "--root",
                    root,
                    "run",
                    "--bundle",
                    bundle.path(),
                    id,
                ]),
                None,
            );
            assert_eq!(out.code, Some(0), "{engine} {runtime}: {}", out.stderr);
            out
        };
        let crun = direct(common::CRUN, &unique("probe-crun"));
        let runc = direct(common::RUNC, &unique("probe-runc"));
        let ours = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-probe")]);
        assert_eq!(ours.code, Some(0), "{engine} nexcage: {}", ours.stderr);
        assert!(crun.stdout.lines().count() > 300, "{}", crun.stdout);
        // runc's filter exactly (its -ENOSYS stub included); crun's but where that
        // stub answers ENOSYS for a syscall newer than the profile knows (crun 1.8
        // gives those the default action).
        assert_eq!(ours.stdout, runc.stdout, "{engine}: nexcage vs runc");
        let differ: Vec<String> = crun
            .stdout
            .lines()
            .zip(ours.stdout.lines())
            .filter(|(a, b)| a != b && !b.ends_with(" 38"))
            .map(|(a, b)| format!("crun {a} / nexcage {b}"))
            .collect();
        assert!(differ.is_empty(), "{engine}: {differ:#?}");
        assert_eq!(crun.stdout.lines().count(), ours.stdout.lines().count());
    }
    lx.assert_clean();
}

/// `update` (flags, and `--resources -` as the shims send it) changes the container's
/// cgroups; `events --stats` reports them in runc's format; `kill --all` reaches every
/// process of the container.
#[test]
fn update_events_and_kill_all() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    let id = lx.id("lxc-upd");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    lx.env
        .ok(&["update", "--memory", "50m", "--pids-limit", "20", &id]);
    let stats = |lx: &Lxc| -> Value {
        let out = lx.env.ok(&["events", "--stats", &id]);
        assert_eq!(out.lines().count(), 1, "{out}");
        let event: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(event["type"], "stats");
        assert_eq!(event["id"], id.as_str());
        event["data"].clone()
    };
    let data = stats(&lx);
    assert_eq!(data["memory"]["usage"]["limit"], 50 << 20, "{data}");
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{data}"
    );
    assert_eq!(data["pids"]["limit"], 20, "{data}");
    assert!(data["pids"]["current"].as_u64().unwrap() >= 3, "{data}");
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap() > 0,
        "{data}"
    );

    let mut cmd = lx.env.cmd();
    cmd.args(["update", "--resources", "-", &id]);
    let out = run_cmd(
        cmd,
        Some(r#"{"memory": {"limit": 62914560}, "cpu": {"shares": 0}, "blockIO": {"weight": 0}}"#),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(stats(&lx)["memory"]["usage"]["limit"], 60 << 20);
    let err = lx.env.fails(&["update", "--kernel-memory", "1m", &id]);
    assert!(err.contains("kernel-memory"), "{err}");

    // Every process, not just the container's own: the sleeps die too.
    let sleeps = || {
        lx.ps(&id)
            .into_iter()
            .filter(|p| cmdline(*p).first().map(String::as_str) == Some("sleep"))
            .count()
    };
    assert_eq!(sleeps(), 2);
    lx.env.ok(&["kill", "--all", &id, "KILL"]);
    lx.env.wait_status(&id, "stopped");
    lx.env.ok(&["delete", &id]);
    lx.assert_clean();
}

/// The spec's mounts are made in the spec's order (a bind into a tmpfs the spec
/// mounted just before it lands in that tmpfs), and /dev is runc's: /dev/ptmx a
/// symlink to the container's own devpts.
#[test]
fn mounts_in_the_specs_order() {
    let lx = Lxc::new();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("marker"), "bound\n").unwrap();
    let bundle = json_bundle(
        &[
            "sh",
            "-c",
            "cut -d' ' -f5 /proc/self/mountinfo; readlink /dev/ptmx; cat /mnt/t/in/marker",
        ],
        |s| {
            let mounts = s["mounts"].as_array_mut().unwrap();
            mounts.push(
                json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev"]}),
            );
            mounts.push(json!({"destination": "/mnt/t/in", "type": "bind",
                               "source": scratch.path(), "options": ["rbind", "ro"]}));
        },
    );
    let wanted: Vec<String> = serde_json::from_slice::<Value>(
        &std::fs::read(bundle.dir.path().join("config.json")).unwrap(),
    )
    .unwrap()["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect();
    let out = lx.run(&["run", "--bundle", bundle.path(), &lx.id("lxc-order")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["pts/ptmx", "bound"],
        "{}",
        out.stdout
    );
    let mut last = 0;
    for dest in &wanted {
        let at = lines
            .iter()
            .position(|l| l == dest)
            .unwrap_or_else(|| panic!("{dest} not mounted: {}", out.stdout));
        assert!(at >= last, "{dest} out of the spec's order: {}", out.stdout);
        last = at;
    }
    lx.assert_clean();
}

/// `--pid-file` never writes through something planted under its temporary name
/// (runc opens it O_EXCL): the create fails, the target is untouched, nothing is left.
#[test]
fn pid_file_refuses_a_planted_link() {
    let lx = Lxc::new();
    let scratch = tempfile::tempdir().unwrap();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, scratch.path().join(".pid")).unwrap();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let pid_file = scratch.path().join("pid");
    let out = lx.run(&[
        "create",
        "--bundle",
        bundle.path(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &lx.id("lxc-pidlink"),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains(".pid"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!pid_file.exists());
    lx.assert_clean();
}

/// `exec` of what cannot be run fails with runc's words, before returning; what it
/// cannot honour is refused; rlimits, `--pidfd-socket` and the fds the caller hands on
/// with `--preserve-fds` reach the process.
#[test]
fn exec_errors_and_preserved_fds() {
    let lx = Lxc::new();
    let bundle = json_bundle(&["sleep", "1000"], |s| {
        s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 777}]);
        s["process"]["user"]["additionalGids"] = json!([2000]);
    });
    let id = lx.id("lxc-exec");
    lx.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    for detach in [false, true] {
        let mut args = vec!["exec"];
        if detach {
            args.push("--detach");
        }
        args.extend([id.as_str(), "nosuchcmd"]);
        let out = lx.run(&args);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(
            out.stderr
                .contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
            "{}",
            out.stderr
        );
    }
    // What exec cannot honour is refused by name, never dropped.
    for (flags, needle) in [
        (
            &["--process-label", "system_u:system_r:container_t:s0"][..],
            "SELinux",
        ),
        (&["--cgroup", "sub"], "--cgroup"),
        (&["--apparmor", "some-profile"], "AppArmor"),
    ] {
        let mut args = vec!["exec"];
        args.extend(flags);
        args.extend([id.as_str(), "true"]);
        let out = lx.run(&args);
        assert_eq!(out.code, Some(1), "{flags:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{flags:?}: {}", out.stderr);
    }
    // --additional-gids adds to the process's groups, as runc's.
    assert_eq!(
        lx.env
            .ok(&["exec", "--additional-gids", "55", &id, "id", "-G"]),
        "0 55 2000\n"
    );
    // The process's rlimits apply (runc's exec takes them from the container's).
    assert_eq!(lx.env.ok(&["exec", &id, "sh", "-c", "ulimit -n"]), "777\n");
    // --pidfd-socket receives a pidfd of the exec'd process.
    let scratch = tempfile::tempdir().unwrap();
    let socket = scratch.path().join("pidfd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    lx.env.detached(&[
        "exec",
        "--detach",
        "--pidfd-socket",
        socket.to_str().unwrap(),
        &id,
        "sleep",
        "1000",
    ]);
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 8];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&conn),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let fds: Vec<_> = msg
        .cmsgs()
        .unwrap()
        .flat_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds,
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(fds.len(), 1, "one pidfd");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fds[0])).unwrap();
    assert_eq!(link.to_string_lossy(), "anon_inode:[pidfd]");
    let passed = scratch.path().join("fd3");
    std::fs::write(&passed, "through fd 3\n").unwrap();
    let file = std::fs::File::open(&passed).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut cmd = lx.env.cmd();
    cmd.args([
        "exec",
        "--preserve-fds",
        "1",
        &id,
        "sh",
        "-c",
        "cat <&3; ls /proc/self/fd",
    ]);
    hand_on_as_fd3(&mut cmd, raw);
    let out = run_cmd(cmd, None);
    // fd 3, and nothing past it but ls's own directory fd.
    assert_eq!(
        out.stdout, "through fd 3\n0\n1\n2\n3\n4\n",
        "{}",
        out.stderr
    );
    lx.env.ok(&["delete", "--force", &id]);
    lx.assert_clean();
}

/// `cmd` gets `fd` as its fd 3, inheritable, and nothing at fd 4.
fn hand_on_as_fd3(cmd: &mut Command, fd: i32) {
    // SAFETY: dup2, fcntl and close between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            // (dup2 onto itself would keep close-on-exec.)
            if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(4);
            Ok(())
        });
    }
}

/// `create --preserve-fds 2` with only fd 3 open: the workload gets fd 3 and nothing
/// of nexcage's that landed in the gap at fd 4; `state` and `start` work as usual.
#[test]
fn preserved_fds_with_a_gap() {
    let lx = Lxc::new();
    let bundle = Bundle::new(&["sh", "-c", "cat <&3; ls /proc/self/fd"]);
    let id = lx.id("lxc-gap");
    let scratch = tempfile::tempdir().unwrap();
    let passed = scratch.path().join("fd3");
    std::fs::write(&passed, "through fd 3\n").unwrap();
    let file = std::fs::File::open(&passed).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let log = scratch.path().join("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = lx.env.cmd();
    cmd.args([
        "create",
        "--preserve-fds",
        "2",
        "--bundle",
        bundle.path(),
        &id,
    ])
    .stdout(out.try_clone().unwrap())
    .stderr(out);
    hand_on_as_fd3(&mut cmd, raw);
    let status = cmd.status().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let state = lx.run(&["state", &id]);
    assert_eq!(state.code, Some(0), "{}", state.stderr);
    let start = lx.run(&["start", &id]);
    assert_eq!(start.code, Some(0), "{}", start.stderr);
    lx.env.wait_status(&id, "stopped");
    // fd 3, and past it only ls's own directory fd.
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "through fd 3\n0\n1\n2\n3\n4\n"
    );
    lx.env.ok(&["delete", &id]);
    lx.assert_clean();
}

/// As runc: the workload and exec'd processes get a new session keyring
/// (`_ses.<id>`), not the caller's, unless `--no-new-keyring`; `--no-pivot`, which
/// LXC cannot honour, is refused.
#[test]
fn session_keyring_and_no_pivot() {
    let lx = Lxc::new();
    let bundle = json_bundle(&["sh", "-c", "cat /proc/keys; sleep 1000"], |s| {
        let masked = s["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.retain(|p| p != "/proc/keys");
    });
    let id = lx.id("lxc-keys");
    let log = bundle.dir.path().join("log");
    lx.env
        .detached_to(&["run", "-d", "--bundle", bundle.path(), &id], &log);
    let deadline = Instant::now() + Duration::from_secs(10);
    let ring = format!("_ses.{id}");
    while !std::fs::read_to_string(&log).unwrap().contains(&ring) {
        assert!(
            Instant::now() < deadline,
            "no {ring} in {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = lx.run(&["exec", &id, "cat", "/proc/keys"]);
    assert!(out.stdout.contains(&ring), "exec: {}", out.stdout);
    lx.env.ok(&["delete", "--force", &id]);

    let id2 = lx.id("lxc-nokeys");
    let once = json_bundle(&["cat", "/proc/keys"], |s| {
        let masked = s["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.retain(|p| p != "/proc/keys");
    });
    let out = lx.run(&["run", "--no-new-keyring", "--bundle", once.path(), &id2]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // (Other containers' keyrings of uid 0 are listed too: only this one's matters.)
    assert!(
        !out.stdout.contains(&format!("_ses.{id2}")),
        "{}",
        out.stdout
    );

    let out = lx.run(&[
        "create",
        "--no-pivot",
        "--bundle",
        once.path(),
        &lx.id("lxc-pivot"),
    ]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr
            .contains("--no-pivot is not supported by backend"),
        "{}",
        out.stderr
    );
    lx.assert_clean();
}
