//! Routing: rules, annotations, defaults, and the record deciding later commands.

mod common;

use common::{Bundle, CRUN, Env, RUNC, unique};

fn backend_of(env: &Env, id: &str) -> &'static str {
    let has = |b: &str| env.root().join("backends").join(b).join(id).exists();
    match (has("crun"), has("runc")) {
        (true, false) => "crun",
        (false, true) => "runc",
        other => panic!("{id} on crun/runc: {other:?}"),
    }
}

fn create_sleeper(env: &Env, id: &str, annotations: &[(&str, &str)]) {
    let bundle = Bundle::annotated(&["sleep", "1000"], annotations);
    env.detached(&["create", "--bundle", bundle.path(), id]);
}

#[test]
fn id_glob_rule_and_default() {
    let env = Env::two_backends();
    let (r, d) = (unique("r-glob"), unique("glob"));
    create_sleeper(&env, &r, &[]);
    create_sleeper(&env, &d, &[]);
    assert_eq!(backend_of(&env, &r), "runc");
    assert_eq!(backend_of(&env, &d), "crun");
    let bundle = Bundle::new(&["true"]);
    let why = env.ok(&["route", "--bundle", bundle.path(), "r-x"]);
    assert!(why.starts_with("runc (rule 1;"), "{why}");
    let why = env.ok(&["route", "--bundle", bundle.path(), "x"]);
    assert!(why.starts_with("crun (default;"), "{why}");
    env.ok(&["delete", &r]);
    env.ok(&["delete", &d]);
    env.assert_clean();
}

#[test]
fn annotation_rule() {
    let env = Env::with_config(&format!(
        r#"{{"default":"crun",
            "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},"runc":{{"type":"oci","path":"{RUNC}"}}}},
            "rules":[{{"backend":"runc","annotations":{{"tier":"gold*","zone":"*"}}}}]}}"#
    ));
    let (gold, silver) = (unique("gold"), unique("silver"));
    create_sleeper(&env, &gold, &[("tier", "golden"), ("zone", "a")]);
    create_sleeper(&env, &silver, &[("tier", "silver"), ("zone", "a")]);
    assert_eq!(backend_of(&env, &gold), "runc");
    assert_eq!(backend_of(&env, &silver), "crun");
    env.ok(&["delete", &gold]);
    env.ok(&["delete", &silver]);
    env.assert_clean();
}

#[test]
fn annotation_picks_an_allowed_backend() {
    let env = Env::two_backends();
    let id = unique("ann");
    create_sleeper(&env, &id, &[("org.nexcage.backend", "runc")]);
    assert_eq!(backend_of(&env, &id), "runc");
    env.ok(&["delete", &id]);
    env.assert_clean();
}

#[test]
fn annotation_for_disallowed_or_unknown_backend_is_refused() {
    let env = Env::with_config(&format!(
        r#"{{"default":"crun",
            "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},"runc":{{"type":"oci","path":"{RUNC}"}}}},
            "annotation_backends":["crun"]}}"#
    ));
    let bundle = Bundle::annotated(&["true"], &[("org.nexcage.backend", "runc")]);
    let err = env.fails(&["create", "--bundle", bundle.path(), &unique("deny")]);
    assert!(
        err.contains("may not be selected by annotation org.nexcage.backend"),
        "{err}"
    );
    let bundle = Bundle::annotated(&["true"], &[("org.nexcage.backend", "kata")]);
    let err = env.fails(&["create", "--bundle", bundle.path(), &unique("deny")]);
    assert!(err.contains("unknown backend \"kata\""), "{err}");
    env.assert_clean();
}

#[test]
fn record_decides_later_commands() {
    let env = Env::two_backends();
    let id = unique("r-rec");
    create_sleeper(&env, &id, &[]);
    assert_eq!(backend_of(&env, &id), "runc");
    // Rewrite the rules: everything to crun now. The container stays runc's.
    std::fs::write(
        env.config.as_ref().unwrap(),
        format!(r#"{{"default":"crun","backends":{{"crun":{{"type":"oci","path":"{CRUN}"}}}}}}"#),
    )
    .unwrap();
    env.ok(&["start", &id]);
    assert_eq!(env.status(&id), "running");
    env.ok(&["kill", &id, "9"]);
    env.wait_status(&id, "stopped");
    // Even with the routing file broken, the record is enough.
    std::fs::write(env.config.as_ref().unwrap(), "{broken").unwrap();
    env.ok(&["delete", &id]);
    env.assert_clean();
}

#[test]
fn config_from_environment_variable() {
    let env = Env::two_backends();
    let bundle = Bundle::new(&["true"]);
    let out = std::process::Command::new(common::nexcage())
        .args(["route", "--bundle", bundle.path(), "r-1"])
        .env("NEXCAGE_CONFIG", env.config.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(
        common::stdout(&out).starts_with("runc (rule 1;"),
        "{}",
        common::stderr(&out)
    );
}

/// Engines run the runtime with cwd = bundle, whose config.json is an OCI spec,
/// not ours: it must never be read as the routing config.
#[test]
fn built_in_default_ignores_config_json_in_cwd() {
    assert!(
        !std::path::Path::new("/etc/nexcage/config.json").exists(),
        "this test needs no system-wide /etc/nexcage/config.json"
    );
    let bundle = Bundle::new(&["true"]);
    let out = std::process::Command::new(common::nexcage())
        .args(["route", "x"])
        .current_dir(bundle.path())
        .env_remove("NEXCAGE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        common::stdout(&out),
        "crun (default; config: built-in default)\n"
    );
    // The built-in default lets the annotation choose runc.
    let bundle = Bundle::annotated(&["true"], &[("org.nexcage.backend", "runc")]);
    let out = std::process::Command::new(common::nexcage())
        .args(["route", "--bundle", bundle.path(), "x"])
        .env_remove("NEXCAGE_CONFIG")
        .output()
        .unwrap();
    assert!(
        common::stdout(&out).starts_with("runc (annotation"),
        "{}",
        common::stderr(&out)
    );
}
