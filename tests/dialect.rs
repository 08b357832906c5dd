//! runc's dialect: argument spellings, output shapes, and what each backend can't do.

mod common;

use common::{Bundle, CRUN, Env, RUNC, unique};

#[test]
fn state_json_is_runcs_shape() {
    let env = Env::new();
    let id = unique("shape");
    let bundle = Bundle::annotated(&["sleep", "1000"], &[("a.b", "c")]);
    env.detached(&["create", "--bundle", bundle.path(), &id]);
    let text = env.ok(&["state", &id]);
    assert!(text.starts_with("{\n  \"ociVersion\": "), "{text}");
    assert!(text.ends_with('}'), "no trailing newline: {text:?}");
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  \"").and_then(|l| l.split('"').next()))
        .collect();
    assert_eq!(
        keys,
        [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
            "annotations",
            "owner"
        ]
    );
    let state = env.state(&id);
    assert_eq!(state["rootfs"], common::rootfs().to_str().unwrap());
    assert_eq!(state["annotations"]["a.b"], "c");
    assert_eq!(state["owner"], "");
    env.ok(&["delete", &id]);
}

#[test]
fn go_style_and_reordered_flags() {
    let env = Env::new();
    let id = unique("go");
    let bundle = Bundle::new(&["sleep", "1000"]);
    // contest: `create <id> --bundle <dir>`; go-runc: `-bundle`, bools with values.
    env.detached(&[
        "create",
        &id,
        "-bundle",
        bundle.path(),
        "--no-new-keyring=false",
    ]);
    assert_eq!(env.status(&id), "created");
    env.ok(&["delete", &id, "-force=true"]);
    let root = env.root().to_str().unwrap().to_string();
    let out = std::process::Command::new(common::nexcage())
        .args([&format!("--root={root}"), "list", "--format=json"])
        .output()
        .unwrap();
    assert_eq!(common::stdout(&out), "null\n");
}

#[test]
fn list_table_and_quiet() {
    let env = Env::new();
    let table = env.ok(&["list"]);
    assert_eq!(
        table,
        "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    );
    let id = unique("tbl");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["create", "--bundle", bundle.path(), &id]);
    assert_eq!(env.ok(&["list", "-q"]), format!("{id}\n"));
    let table = env.ok(&["list"]);
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[0], id);
    assert_eq!(cells[2], "created");
    assert_eq!(cells[3], bundle.path());
    assert_eq!(cells[5], "root");
    env.ok(&["delete", &id]);
}

/// `check`: a backend whose binary, kernel or bridge is missing is a FAIL line naming
/// it and the fix, and the exit code is 1; the others are still checked; json too.
#[test]
fn check_names_what_is_missing() {
    let env = Env::with_config(&format!(
        r#"{{"default":"crun","backends":{{
            "crun":{{"type":"oci","path":"{CRUN}"}},
            "gone":{{"type":"oci","path":"/nonexistent/crun"}},
            "vm":{{"type":"qm","qm":"{pve}/qm","pvesh":"/nonexistent/pvesh",
                   "kernel":"/nonexistent/kernel","kvm":false,"bridge":"nxnosuchbr0"}}}}}}"#,
        pve = common::repo().join("hack/pve").display()
    ));
    let out = env.out(&["check"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let line = |prefix: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {}", out.stdout))
            .to_string()
    };
    assert!(line("OK   crun runtime: /usr/bin/crun").contains("version"));
    let gone = line("FAIL gone runtime:");
    assert!(
        gone.contains("/nonexistent/crun not found") && gone.contains("fix:"),
        "{gone}"
    );
    assert!(line("FAIL nexcage config:").contains("not found"));
    for check in ["pvesh", "kernel", "kernel modules", "bridge"] {
        line(&format!("FAIL vm {check}:"));
    }
    line("OK   vm qm:");
    let json = env.out(&["check", "--format", "json"]);
    assert_eq!(json.code, Some(1));
    let checks: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["backend"] == "gone" && c["ok"] == false && c["fix"].is_string())
    );
    assert!(
        checks
            .iter()
            .any(|c| c["backend"] == "crun" && c["ok"] == true)
    );
}

/// `features` per backend: a delegate's own document where it has one (runc), the
/// common one where it has none (crun 1.8), what lxc and qm really do; each a valid
/// runtime-spec features document with nexcage's annotations.
#[test]
fn features_per_backend() {
    let env = Env::with_config(&format!(
        r#"{{"default":"crun","backends":{{
            "crun":{{"type":"oci","path":"{CRUN}"}},
            "runc":{{"type":"oci","path":"{RUNC}"}},
            "lxc":{{"type":"lxc"}},
            "vm":{{"type":"qm","qm":"{pve}/qm","pvesh":"{pve}/pvesh",
                   "kernel":"/nonexistent/kernel"}}}}}}"#,
        pve = common::repo().join("hack/pve").display()
    ));
    let doc = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["features"];
        all.extend(args);
        let text = env.ok(&all);
        let _: oci_spec::runtime::Features =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"));
        serde_json::from_str(&text).unwrap()
    };
    let default = doc(&[]);
    assert_eq!(default, doc(&["--backend", "crun"]));
    let runc = doc(&["--backend", "runc"]);
    let own: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new(RUNC)
            .arg("features")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(runc["ociVersionMax"], own["ociVersionMax"], "runc's own");
    let lxc = doc(&["--backend", "lxc"]);
    let vm = doc(&["--backend", "vm"]);
    assert_eq!(default["linux"]["cgroup"]["systemd"], true);
    assert_eq!(lxc["linux"]["cgroup"]["systemd"], false);
    let actions = lxc["linux"]["seccomp"]["actions"].as_array().unwrap();
    assert!(!actions.contains(&"SCMP_ACT_NOTIFY".into()), "{actions:?}");
    assert!(
        !vm["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&"user".into())
    );
    assert!(
        !vm["hooks"]
            .as_array()
            .unwrap()
            .contains(&"createContainer".into())
    );
    for d in [&default, &runc, &lxc, &vm] {
        assert_eq!(
            d["annotations"]["org.nexcage.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            d["potentiallyUnsafeConfigAnnotations"]
                .as_array()
                .unwrap()
                .contains(&"org.nexcage.".into())
        );
    }
    let err = env.fails(&["features", "--backend", "nosuch"]);
    assert!(err.contains("no backend \"nosuch\""), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn version_features_and_spec() {
    let env = Env::new();
    let version = env.ok(&["--version"]);
    assert!(version.starts_with("nexcage version "), "{version}");
    assert!(version.contains("\nspec: "), "{version}");
    let features: serde_json::Value = serde_json::from_str(&env.ok(&["features"])).unwrap();
    assert_eq!(features["ociVersionMin"], "1.0.0");
    assert!(features["linux"]["namespaces"].as_array().unwrap().len() >= 7);
    assert!(
        features["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&"CAP_SYS_ADMIN".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    env.ok(&["spec", "--bundle", d]);
    let spec = oci_spec::runtime::Spec::load(dir.path().join("config.json")).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["sh"]
    );
    let err = env.fails(&["spec", "--bundle", d]);
    assert!(err.contains("exists"), "{err}");
}

/// crun 1.8 has no events/checkpoint: a clear error, not a usage dump.
#[test]
fn unsupported_by_backend() {
    let env = Env::two_backends();
    let id = unique("uns");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let err = env.fails(&["events", "--stats", &id]);
    assert!(
        err.contains("events is not supported by backend \"crun\""),
        "{err}"
    );
    let err = env.fails(&["checkpoint", &id]);
    assert!(
        err.contains("checkpoint is not supported by backend \"crun\""),
        "{err}"
    );
    env.ok(&["delete", "--force", &id]);

    // runc has events; and no --cgroup-manager=disabled.
    let id = unique("r-uns");
    env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let stats: serde_json::Value =
        serde_json::from_str(&env.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["id"], id.as_str());
    let err = env.fails(&["--cgroup-manager", "disabled", "ps", &id]);
    assert!(
        err.contains("--cgroup-manager=disabled is not supported by backend \"runc\""),
        "{err}"
    );
    env.ok(&["delete", "--force", &id]);
    env.assert_clean();
}

#[test]
fn update_resources() {
    let env = Env::two_backends();
    for id in [unique("upd"), unique("r-upd")] {
        let bundle = Bundle::new(&["sleep", "1000"]);
        env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
        env.ok(&["update", "--pids-limit", "123", &id]);
        let pid = env.state(&id)["pid"].as_i64().unwrap();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let pids_path = cgroup
            .lines()
            .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
            .unwrap();
        let max =
            std::fs::read_to_string(format!("/sys/fs/cgroup/pids{pids_path}/pids.max")).unwrap();
        assert_eq!(max.trim(), "123", "{id}");
        env.ok(&["delete", "--force", &id]);
    }
    env.assert_clean();
}
