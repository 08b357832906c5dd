//! The bad-input catalog: each case on every backend (crun, runc, lxc, pct on the
//! stand-in). Each must end with a non-zero exit, exactly one stderr line naming the
//! problem, no panic, and nothing left behind: no record, runtime dir, LXC
//! definition, Proxmox container, volume or template, cgroup or mount.

mod common;

use std::path::Path;

use common::pve::Pve;
use common::{Bundle, RUNC, rootfs, unique};
use serde_json::{Value, json};

const BACKENDS: [&str; 4] = ["crun", "runc", "lxc", "pve"];

/// One isolated root with all four backends, picked by annotation.
fn all_backends() -> Pve {
    Pve::with_backends(
        "",
        "crun",
        &format!(r#","runc":{{"type":"oci","path":"{RUNC}"}},"lxc":{{"type":"lxc"}}"#),
    )
}

/// A bundle for `backend` whose config.json is the busybox one patched by `edit`.
fn bundle(backend: &str, args: &[&str], edit: &dyn Fn(&mut Value, &Path)) -> Bundle {
    let b = Bundle::annotated(args, &[("org.nexcage.backend", backend)]);
    let path = b.dir.path().join("config.json");
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut spec, b.dir.path());
    std::fs::write(&path, spec.to_string()).unwrap();
    b
}

/// What of container `id` is still there besides what `Pve::assert_clean` checks:
/// LXC definitions, cgroups (nexcage's, crun's and runc's default places), mounts.
fn leftovers(pve: &Pve, id: &str) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(pve.env.root().join("lxc/lxc"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut hierarchies = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    hierarchies.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    for h in hierarchies {
        for rel in [
            id.to_string(),
            format!("nexcage/{id}"),
            format!("nexcage.monitor/{id}"),
        ] {
            let dir = h.join(rel);
            if dir.is_dir() {
                left.push(dir.display().to_string());
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains(id))
            .map(str::to_string),
    );
    left
}

/// Runs, checks the catalog's answer and a clean node; what is wrong, if anything.
fn refused(pve: &Pve, what: &str, args: &[&str], needles: &[&str]) -> Option<String> {
    let id = args.last().copied().unwrap_or_default();
    let out = pve.env.run(args);
    let wrong = if let Some(wrong) = common::refusal(&out, needles) {
        Some(format!("{what}: {args:?}: {wrong}"))
    } else {
        // Only ids that could have been made (the bad-id cases name `..`, `a/b`).
        let made =
            !id.starts_with('-') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let left = if made && !id.is_empty() {
            leftovers(pve, id)
        } else {
            Vec::new()
        };
        (!left.is_empty()).then(|| format!("{what}: left behind: {left:?}"))
    };
    pve.assert_clean();
    wrong
}

/// Fails with every case that went wrong, not just the first.
fn report(failures: Vec<String>, count: usize) {
    assert!(
        failures.is_empty(),
        "{} of {count} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

type Edit = Box<dyn Fn(&mut Value, &Path)>;

/// Spec cases: a name, the edit, and what the error must mention (any of).
fn spec_cases() -> Vec<(&'static str, Edit, Vec<&'static str>)> {
    vec![
        (
            "rootfs missing",
            Box::new(|s, _| s["root"]["path"] = json!("/nonexistent/rootfs")),
            vec!["/nonexistent/rootfs"],
        ),
        (
            "rootfs is a file",
            Box::new(|s, dir| {
                std::fs::write(dir.join("file"), "").unwrap();
                s["root"]["path"] = json!(dir.join("file"));
            }),
            vec!["not a directory"],
        ),
        (
            "rootfs is a symlink to /",
            Box::new(|s, dir| {
                std::os::unix::fs::symlink("/", dir.join("link")).unwrap();
                s["root"]["path"] = json!(dir.join("link"));
            }),
            vec!["invalid rootfs"],
        ),
        (
            "no process",
            Box::new(|s, _| {
                s.as_object_mut().unwrap().remove("process");
            }),
            vec!["process"],
        ),
        (
            "empty args",
            Box::new(|s, _| s["process"]["args"] = json!([])),
            vec!["args"],
        ),
        (
            "missing command",
            Box::new(|s, _| s["process"]["args"] = json!(["/nonexistent-cmd"])),
            vec!["/nonexistent-cmd"],
        ),
        (
            "bind source missing",
            Box::new(|s, _| {
                s["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/mnt", "type": "bind",
                    "source": "/nonexistent/src", "options": ["rbind"]}));
            }),
            vec!["/nonexistent/src"],
        ),
        (
            "namespace path of the wrong kind",
            Box::new(|s, _| {
                for ns in s["linux"]["namespaces"].as_array_mut().unwrap() {
                    if ns["type"] == "network" {
                        ns["path"] = json!("/proc/self/ns/uts");
                    }
                }
            }),
            vec!["/proc/self/ns/uts", "namespace"],
        ),
        (
            "hostname without a UTS namespace",
            Box::new(|s, _| {
                s["hostname"] = json!("h");
                s["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "uts");
            }),
            vec!["UTS", "uts", "hostname"],
        ),
        (
            "sysctl of the host",
            Box::new(|s, _| {
                // Its present value: should a runtime take it, nothing changes.
                let now = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
                s["linux"]["sysctl"] = json!({"vm.swappiness": now.trim()});
            }),
            vec!["vm.swappiness"],
        ),
    ]
}

#[test]
fn bad_specs_on_every_backend() {
    let pve = all_backends();
    let _ = rootfs();
    let (mut count, mut failures) = (0, Vec::new());
    for backend in BACKENDS {
        for (what, edit, needles) in spec_cases() {
            let b = bundle(backend, &["true"], &*edit);
            let what = format!("{backend}: {what}");
            let args = ["run", "--bundle", b.path(), &unique("bad")];
            failures.extend(refused(&pve, &what, &args, &needles));
            count += 1;
        }
    }
    report(failures, count);
}

#[test]
fn bad_ids_on_every_backend() {
    let pve = all_backends();
    let (mut count, mut failures) = (0, Vec::new());
    for backend in BACKENDS {
        let b = bundle(backend, &["true"], &|_, _| {});
        for id in ["-x", "a/b", "..", &"x".repeat(256)] {
            failures.extend(refused(
                &pve,
                &format!("{backend}: id {id:?}"),
                &["create", "--bundle", b.path(), "--", id],
                &["invalid container ID"],
            ));
            count += 1;
        }
    }
    report(failures, count);
}

/// Commands a container's state does not allow, on each backend.
#[test]
fn lifecycle_misuse_on_every_backend() {
    let pve = all_backends();
    let mut failures = Vec::new();
    let mut count = 0;
    for backend in BACKENDS {
        let b = bundle(backend, &["sleep", "1000"], &|_, _| {});
        let id = unique(&format!("{backend}-misuse"));
        pve.env.detached(&["create", "--bundle", b.path(), &id]);
        let mut check = |what: &str, args: &[&str], needles: &[&str]| {
            count += 1;
            if let Some(wrong) = common::refusal(&pve.env.run(args), needles) {
                failures.push(format!("{backend}: {what}: {wrong}"));
            }
        };
        check(
            "the same id again",
            &["create", "--bundle", b.path(), &id],
            &["already exists"],
        );
        check(
            "an unknown signal",
            &["kill", &id, "SIGNOPE"],
            &["SIGNOPE", "signal"],
        );
        pve.env.ok(&["start", &id]);
        check("start twice", &["start", &id], &["running", "created"]);
        check(
            "delete while running",
            &["delete", &id],
            &["not stopped", "running"],
        );
        pve.env.ok(&["kill", &id, "KILL"]);
        pve.env.wait_status(&id, "stopped");
        check(
            "exec when stopped",
            &["exec", &id, "true"],
            &["stopped", "not running"],
        );
        check(
            "start when stopped",
            &["start", &id],
            &["stopped", "not in created", "created"],
        );
        pve.env.ok(&["delete", &id]);
        pve.assert_clean();
        let left = leftovers(&pve, &id);
        assert!(left.is_empty(), "{backend}: left behind: {left:?}");
    }
    report(failures, count);
}
