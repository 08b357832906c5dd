//! Bad input: a clear one-line error, a non-zero exit, and nothing left behind.

mod common;

use common::{Bundle, CRUN, Env, unique};

/// Runs, expects failure with one line on stderr containing `needle`, and a clean root.
fn refused(env: &Env, args: &[&str], needle: &str) {
    let out = env.run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        common::stderr(&out)
    );
    if let Some(wrong) = common::refusal(&out, &[needle]) {
        panic!("{args:?}: {wrong}");
    }
    env.assert_clean();
}

#[test]
fn missing_or_broken_bundles() {
    let env = Env::new();
    refused(
        &env,
        &["create", "--bundle", "/nonexistent/bundle", &unique("b")],
        "/nonexistent/bundle",
    );
    let empty = tempfile::tempdir().unwrap();
    let p = empty.path().to_str().unwrap();
    refused(
        &env,
        &["create", "--bundle", p, &unique("b")],
        "config.json",
    );
    // Unreadable (root reads through permissions, so: a directory in its place).
    std::fs::create_dir(empty.path().join("config.json")).unwrap();
    refused(&env, &["run", "--bundle", p, &unique("b")], "config.json");
    std::fs::remove_dir(empty.path().join("config.json")).unwrap();
    std::fs::write(empty.path().join("config.json"), "{\"ociVersion\": ").unwrap();
    refused(
        &env,
        &["create", "--bundle", p, &unique("b")],
        "not a valid OCI spec",
    );
    // Wrong only where create's outline of the spec does not look: crun reads the
    // whole spec and refuses it, and nothing is left.
    let mounts = Bundle::new(&["true"]);
    let config = mounts.dir.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["mounts"] = serde_json::json!(5);
    std::fs::write(&config, spec.to_string()).unwrap();
    refused(
        &env,
        &["create", "--bundle", mounts.path(), &unique("b")],
        "mounts",
    );
    // A valid spec whose rootfs is missing fails in the backend: still nothing left.
    let bundle = Bundle::missing_rootfs();
    let out = env.run(&["create", "--bundle", bundle.path(), &unique("b")]);
    assert!(!out.status.success());
    env.assert_clean();
}

#[test]
fn malformed_routing_files() {
    let bundle = Bundle::new(&["true"]);
    let env = Env::with_config("{not json");
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("c")],
        "nexcage.json",
    );
    let env = Env::with_config(&format!(
        r#"{{"default":"vm","backends":{{"crun":{{"type":"oci","path":"{CRUN}"}}}}}}"#
    ));
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("c")],
        "unknown backend \"vm\"",
    );
    let env = Env::with_config(
        r#"{"default":"x","backends":{"x":{"type":"oci","path":"/no/such/runtime"}}}"#,
    );
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("c")],
        "/no/such/runtime",
    );
    let env = Env::with_config(&format!(
        r#"{{"default":"crun","backends":{{"crun":{{"type":"oci","path":"{CRUN}"}}}},"rules":[{{"backend":"crun","idd":"x"}}]}}"#
    ));
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("c")],
        "unknown field `idd`",
    );
    let missing = Env::new();
    refused(
        &missing,
        &[
            "--config",
            "/nonexistent/nexcage.json",
            "create",
            "--bundle",
            bundle.path(),
            &unique("c"),
        ],
        "/nonexistent/nexcage.json",
    );
}

#[test]
fn invalid_ids() {
    let env = Env::new();
    let bundle = Bundle::new(&["true"]);
    for id in ["../x", "a/b", "", "..", "a b"] {
        refused(
            &env,
            &["create", "--bundle", bundle.path(), id],
            "invalid container ID format",
        );
        refused(&env, &["state", id], "invalid container ID format");
    }
}

#[test]
fn duplicate_id_leaves_the_first_alone() {
    let env = Env::new();
    let id = unique("dup");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["create", "--bundle", bundle.path(), &id]);
    let err = env.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(env.status(&id), "created");
    env.ok(&["delete", &id]);
    env.assert_clean();
}

#[test]
fn unknown_containers() {
    let env = Env::new();
    for cmd in ["start", "state", "pause", "resume", "delete", "ps"] {
        refused(&env, &[cmd, "ghost"], "container \"ghost\" does not exist");
    }
    refused(&env, &["kill", "ghost", "9"], "does not exist");
    refused(&env, &["exec", "ghost", "true"], "does not exist");
    // runc: --force on an unknown id succeeds quietly.
    let out = env.run(&["delete", "--force", "ghost"]);
    assert!(out.status.success());
    assert_eq!(common::stderr(&out), "");
}

#[test]
fn running_container_is_not_deleted_without_force() {
    let env = Env::new();
    let id = unique("busy");
    let bundle = Bundle::new(&["sleep", "1000"]);
    env.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let out = env.run(&["delete", &id]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("not stopped"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(env.status(&id), "running");
    env.ok(&["delete", "--force", &id]);
    env.assert_clean();
}

#[test]
fn errors_go_to_the_json_log_as_one_object() {
    let env = Env::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_str().unwrap();
    let out = env.run(&["--log", log_path, "--log-format", "json", "state", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("container \"ghost\" does not exist"));
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container \"ghost\" does not exist");
    assert!(line["time"].is_string());
}

/// A command line that cannot be parsed: one line naming what is wrong, exit 2, and
/// that line in the `--log` file as JSON too (engines read the log, not stderr).
#[test]
fn usage_errors() {
    let env = Env::new();
    for (args, needle) in [
        (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
        (&["create"], "required arguments were not provided"),
        (&["list", "--format", "xml"], "invalid value 'xml'"),
        (&["create", "--bundle"], "a value is required for '--bundle"),
        (&["kill", "--frob", "x"], "unexpected argument '--frob'"),
    ] {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut full = vec!["--log", log.path().to_str().unwrap(), "--log-format=json"];
        full.extend_from_slice(args);
        let out = env.run(&full);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        let text = std::fs::read_to_string(log.path()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "error");
        assert!(line["msg"].as_str().unwrap().contains(needle), "{text}");
    }
    let err = env.fails(&["exec", "ghost"]);
    assert!(err.contains("needs a command"), "{err}");
}

/// A reader that goes away (`nexcage list | true`) ends the output quietly: no panic,
/// no abort.
#[test]
fn closed_stdout_is_no_crash() {
    let env = Env::two_backends();
    for args in [
        &["list"][..],
        &["list", "--format", "json"],
        &["list", "-q"],
    ] {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .unwrap();
        let err = common::stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}
