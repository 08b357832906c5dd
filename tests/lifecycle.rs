//! The runc lifecycle through nexcage, on real crun and real runc.

mod common;

use common::{Bundle, Env, stderr, stdout, unique};

/// ids starting `r-` go to runc under `Env::two_backends`, the rest to crun.
fn id_for(backend: &str) -> String {
    match backend {
        "runc" => unique("r-life"),
        _ => unique("life"),
    }
}

fn full_lifecycle(backend: &str) {
    let env = Env::two_backends();
    let id = id_for(backend);
    let bundle = Bundle::new(&["sleep", "1000"]);
    let pid_file = bundle.dir.path().join("init.pid");

    env.detached(&[
        "create",
        "--bundle",
        bundle.path(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    assert!(
        env.root().join("backends").join(backend).join(&id).exists(),
        "routed to {backend}"
    );
    let state = env.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle.path());
    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!pid_text.ends_with('\n'), "pid file must have no newline");
    assert_eq!(
        pid_text.parse::<i64>().unwrap(),
        state["pid"].as_i64().unwrap()
    );

    env.ok(&["start", &id]);
    assert_eq!(env.status(&id), "running");

    let ps: Vec<i64> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&state["pid"].as_i64().unwrap()), "ps {ps:?}");

    // Foreground exec: output and exit status of the command.
    assert_eq!(env.ok(&["exec", &id, "echo", "hi"]), "hi\n");
    let out = env.run(&[
        "exec",
        "--env",
        "X=42",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $X $PWD; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "42 /tmp\n");

    // Detached exec leaves a pid file naming a live process.
    common::assert_detached_exec(&env, bundle.dir.path(), &id);

    env.ok(&["pause", &id]);
    assert_eq!(env.status(&id), "paused");
    env.ok(&["resume", &id]);
    assert_eq!(env.status(&id), "running");

    let table = env.ok(&["list"]);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{table}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "running");

    let stop = env.run(&["delete", &id]);
    assert!(
        !stop.status.success(),
        "delete of a running container must fail"
    );

    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    assert_eq!(env.state(&id)["pid"], 0);
    env.ok(&["delete", &id]);
    let gone = env.fails(&["state", &id]);
    assert!(gone.contains("does not exist"), "{gone}");
    assert_eq!(env.ok(&["list", "--format", "json"]), "null\n");
    env.assert_clean();
}

#[test]
fn lifecycle_on_crun() {
    full_lifecycle("crun");
}

#[test]
fn lifecycle_on_runc() {
    full_lifecycle("runc");
}

fn run_foreground(backend: &str) {
    let env = Env::two_backends();
    let id = id_for(backend);
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let out = env.run(&["run", "--bundle", bundle.path(), &id]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // The container is gone with its process, as with runc.
    assert!(env.fails(&["state", &id]).contains("does not exist"));
    assert_eq!(env.ok(&["list", "-q"]), "");
    // And its id is free again.
    let again = Bundle::new(&["true"]);
    env.ok(&["run", "--bundle", again.path(), &id]);
    env.ok(&["list"]);
    env.assert_clean();
}

#[test]
fn run_on_crun() {
    run_foreground("crun");
}

#[test]
fn run_on_runc() {
    run_foreground("runc");
}

fn run_detached_and_force_delete(backend: &str) {
    let env = Env::two_backends();
    let id = id_for(backend);
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["run", "--detach", "--bundle", bundle.path(), &id]);
    assert_eq!(env.status(&id), "running");
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    env.ok(&["delete", "--force", &id]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists() || {
            // A zombie until its reaper (here: init) collects it.
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("zombie")
        }
    );
    // Idempotent, quiet, as runc.
    let again = env.run(&["delete", "--force", &id]);
    assert!(again.status.success());
    assert_eq!(stderr(&again), "");
    env.assert_clean();
}

#[test]
fn detached_run_and_forced_delete_on_crun() {
    run_detached_and_force_delete("crun");
}

#[test]
fn detached_run_and_forced_delete_on_runc() {
    run_detached_and_force_delete("runc");
}

/// containerd deletes a container that never started without --force.
fn delete_created(backend: &str) {
    let env = Env::two_backends();
    let id = id_for(backend);
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["create", "--bundle", bundle.path(), &id]);
    env.ok(&["delete", &id]);
    env.assert_clean();
}

#[test]
fn delete_created_on_crun() {
    delete_created("crun");
}

#[test]
fn delete_created_on_runc() {
    delete_created("runc");
}

#[test]
fn kill_accepts_runc_signal_spellings() {
    let env = Env::two_backends();
    for (i, signal) in ["9", "KILL", "SIGKILL", "sigkill"].iter().enumerate() {
        let id = unique(&format!("sig{i}"));
        let bundle = Bundle::new(&["sleep", "1000"]);
        env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
        env.ok(&["kill", &id, signal]);
        env.wait_status(&id, "stopped");
        env.ok(&["delete", &id]);
    }
    let id = unique("sigbad");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let err = env.fails(&["kill", &id, "NOPE"]);
    assert!(err.contains("unknown signal \"NOPE\""), "{err}");
    env.ok(&["delete", "--force", &id]);
    env.assert_clean();
}

/// `run` killed with SIGKILL: the container outlives it and is neither lost nor
/// leaked: it is listed, and `delete --force` removes everything.
fn killed_foreground_run(backend: &str) {
    let env = Env::two_backends();
    let id = id_for(backend);
    let bundle = Bundle::new(&["sleep", "1000"]);
    let log = bundle.dir.path().join("run.log");
    let mut run = env
        .cmd()
        .args(["run", "--bundle", bundle.path(), &id])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until the container runs, then kill the runtime process under it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !env.ok(&["list", "-q"]).contains(&id) || env.status(&id) != "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "container never ran: {} {:?}",
            String::from_utf8_lossy(&env.run(&["list"]).stdout),
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(env.ok(&["list", "-q"]), format!("{id}\n"));
    assert_eq!(env.status(&id), "running");
    env.ok(&["delete", "--force", &id]);
    assert_eq!(env.ok(&["list", "-q"]), "");
    env.assert_clean();
}

#[test]
fn killed_foreground_run_on_crun() {
    killed_foreground_run("crun");
}

#[test]
fn killed_foreground_run_on_runc() {
    killed_foreground_run("runc");
}

/// `run --keep` (runc) leaves the stopped container for `state` and `delete`;
/// crun has no `--keep` and says so before anything is made.
#[test]
fn run_keep() {
    let env = Env::two_backends();
    let id = unique("r-keep");
    let bundle = Bundle::new(&["sh", "-c", "exit 4"]);
    let out = env.run(&["run", "--keep", "--bundle", bundle.path(), &id]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(env.status(&id), "stopped");
    assert_eq!(env.ok(&["list", "-q"]), format!("{id}\n"));
    env.ok(&["delete", &id]);

    let err = env.fails(&["run", "--keep", "--bundle", bundle.path(), &unique("keep")]);
    assert!(
        err.contains("run --keep is not supported by backend \"crun\""),
        "{err}"
    );
    env.assert_clean();
}

/// `gc` on crun and runc: the delegate's container whose record was removed is
/// deleted (`delete --force`), one with a record is left running.
#[test]
fn gc_deletes_the_delegates_unowned_containers() {
    let env = Env::two_backends();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let mut lines = Vec::new();
    let mut owned = Vec::new();
    for backend in ["crun", "runc"] {
        let (lost, kept) = (id_for(backend), id_for(backend));
        for id in [&lost, &kept] {
            env.detached(&["run", "-d", "--bundle", bundle.path(), id]);
        }
        let pid = env.state(&lost)["pid"].as_i64().unwrap();
        std::fs::remove_file(env.root().join("containers").join(&lost)).unwrap();
        lines.push((backend, lost, pid));
        owned.push(kept);
    }
    let out = env.ok(&["gc"]);
    for (backend, lost, pid) in &lines {
        assert!(
            out.contains(&format!(
                "{backend}: container {lost}, which no record owns"
            )),
            "{out}"
        );
        assert!(
            !env.root()
                .join("backends")
                .join(backend)
                .join(lost)
                .exists()
        );
        assert!(!common::pid_alive(*pid), "{lost}'s process still runs");
    }
    for id in &owned {
        assert_eq!(env.status(id), "running");
        env.ok(&["delete", "--force", id]);
    }
    env.assert_clean();
}

/// On crun, nexcage reads the container's status as crun does instead of running
/// `crun state`: in every state (created, running, paused, stopped) it says what crun
/// says, pid included.
#[test]
fn crun_status_read_as_crun_reads_it() {
    let env = Env::new();
    let id = unique("crunstate");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["create", "--bundle", bundle.path(), &id]);
    let crun_says = || -> (String, i64) {
        let out = std::process::Command::new(common::CRUN)
            .arg("--root")
            .arg(env.root().join("backends/crun"))
            .args(["state", &id])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["status"].as_str().unwrap().to_string(),
            v["pid"].as_i64().unwrap(),
        )
    };
    let ours = || -> (String, i64) {
        let v = env.state(&id);
        (
            v["status"].as_str().unwrap().to_string(),
            v["pid"].as_i64().unwrap(),
        )
    };
    let mut seen = Vec::new();
    for step in [
        None,
        Some("start"),
        Some("pause"),
        Some("resume"),
        Some("kill"),
    ] {
        match step {
            Some("kill") => {
                env.ok(&["kill", &id, "KILL"]);
                env.wait_status(&id, "stopped");
            }
            Some(verb) => {
                env.ok(&[verb, &id]);
            }
            None => {}
        }
        let (theirs, ours) = (crun_says(), ours());
        assert_eq!(ours, theirs, "after {step:?}");
        seen.push(ours.0);
    }
    assert_eq!(seen, ["created", "running", "paused", "running", "stopped"]);
    env.ok(&["delete", &id]);
}
