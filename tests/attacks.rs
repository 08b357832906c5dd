//! Issue 10's findings, each tried as an attacker would: a crafted bundle or rootfs,
//! another local user (uid 65534 through `setpriv`), a process inside the container,
//! a second nexcage root. Each must fail safely: a clear error and nothing made, or
//! the attack simply not reaching anything.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pve::Pve;
use common::{Bundle, CRUN, Env, RUNC, rootfs, run_cmd, unique};
use oci_spec::runtime::{Mount, MountBuilder, RootBuilder};

/// lxc by default; crun, runc and an unprivileged lxc (`lxu`) by annotation.
fn lxc_env() -> Env {
    let env = Env::with_config(&format!(
        r#"{{"default":"lxc",
            "backends":{{"lxc":{{"type":"lxc"}},
                         "lxu":{{"type":"lxc","unprivileged":true}},
                         "crun":{{"type":"oci","path":"{CRUN}"}},
                         "runc":{{"type":"oci","path":"{RUNC}"}}}},
            "annotation_backends":["lxc","lxu","crun","runc"]}}"#
    ));
    // As a shared install would have it: only nexcage's own modes protect a container.
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env
}

/// Nothing of any container is left, LXC definitions included.
fn assert_clean(env: &Env) {
    env.assert_clean();
    for backend in ["lxc", "lxu"] {
        let defs: Vec<_> = std::fs::read_dir(env.root().join("lxc").join(backend))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(defs.is_empty(), "LXC definitions left: {defs:?}");
    }
}

/// Fails with exactly one stderr line containing `needle`; nothing left.
fn refused(env: &Env, args: &[&str], needle: &str) {
    if let Some(wrong) = common::refusal(&env.run(args), &[needle]) {
        panic!("{args:?}: {wrong}");
    }
}

/// A private copy of the busybox rootfs, to plant things in.
fn own_rootfs() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("nexcage-rootfs-")
        .tempdir()
        .unwrap();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", rootfs().display()))
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "copy rootfs");
    dir
}

fn on_rootfs(
    args: &[&str],
    root: &Path,
    edit: impl FnOnce(&mut oci_spec::runtime::Spec),
) -> Bundle {
    let root = root.to_path_buf();
    Bundle::with(args, move |s| {
        s.set_root(Some(RootBuilder::default().path(root).build().unwrap()));
        edit(s);
    })
}

fn tmpfs_at(dest: &str) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec!["nosuid".to_string()])
        .build()
        .unwrap()
}

/// Runs `argv` as uid/gid 65534 with no groups.
fn as_nobody(argv: &[&str]) -> common::Out {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .args(argv);
    run_cmd(cmd, None)
}

/// Finding 1: a value with a line break must never become a key of its own (the
/// review's `lxc.hook.pre-start` ran as root on the host).
#[test]
fn config_injection_is_refused() {
    let env = lxc_env();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("pwned");
    let hook = scratch.path().join("hook.sh");
    common::write_script(&hook, &format!("#!/bin/sh\ntouch {}\n", marker.display()));
    let inject = format!("x\nlxc.hook.pre-start = {}", hook.display());
    let cases: Vec<(&str, Bundle)> = vec![
        (
            "apparmor",
            Bundle::with(&["true"], |s| {
                let mut p = s.process().clone().unwrap();
                p.set_apparmor_profile(Some(inject.clone()));
                s.set_process(Some(p));
            }),
        ),
        (
            "line break",
            Bundle::with(&["true"], |s| {
                let mut l = s.linux().clone().unwrap();
                l.set_sysctl(Some([("kernel.msgmax".to_string(), inject.clone())].into()));
                s.set_linux(Some(l));
            }),
        ),
        (
            "line break",
            Bundle::with(&["true"], |s| {
                s.set_hostname(Some(inject.clone()));
            }),
        ),
        (
            "mount path",
            Bundle::with(&["true"], |s| {
                let mut mounts = s.mounts().clone().unwrap();
                mounts.push(tmpfs_at(&format!(
                    "/x\nlxc.hook.pre-start = {}",
                    hook.display()
                )));
                s.set_mounts(Some(mounts));
            }),
        ),
    ];
    for (needle, bundle) in &cases {
        refused(
            &env,
            &["run", "--bundle", bundle.path(), &unique("inj")],
            needle,
        );
        assert!(!marker.exists(), "the injected hook ran");
        assert_clean(&env);
    }
}

/// Findings 2 and 3: another local user cannot read a container's process (its
/// environment), reach its sockets or steer it; a caller that says nothing or
/// garbage does not hold up `start`; nothing inside the container reaches the host.
#[test]
fn channels_only_their_parties_can_use() {
    let env = lxc_env();
    let id = unique("chan");
    let bundle = Bundle::with(&["sh", "-c", "echo $SECRET; sleep 1000"], |s| {
        let mut p = s.process().clone().unwrap();
        let mut vars = p.env().clone().unwrap_or_default();
        vars.push("SECRET=hunter2".into());
        p.set_env(Some(vars));
        s.set_process(Some(p));
    });
    let out_file = bundle.dir.path().join("out");
    env.detached_to(&["create", "--bundle", bundle.path(), &id], &out_file);
    let dir = env.root().join("backends/lxc").join(&id);
    let python = "/usr/bin/python3";
    // Connects and says `stop`, as the holder's caller would.
    let connect = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'stop\\n')\nprint('connected')";
    for file in ["process.json", "hooks.json", "inside/setup.json"] {
        let out = as_nobody(&["cat", dir.join(file).to_str().unwrap()]);
        assert!(!out.stdout.contains("hunter2"), "{file}: {}", out.stdout);
    }
    let out = as_nobody(&["ls", dir.to_str().unwrap()]);
    assert!(
        out.code != Some(0),
        "nobody lists the runtime dir: {}",
        out.stdout
    );
    // The probe itself works where nobody may connect.
    let open_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = open_dir.path().join("open.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_nobody(&[python, "-c", connect, open.to_str().unwrap()]);
    assert!(out.stdout.contains("connected"), "probe: {}", out.stderr);
    let sock = dir.join("holder.sock");
    let out = as_nobody(&[python, "-c", connect, sock.to_str().unwrap()]);
    assert!(
        !out.stdout.contains("connected"),
        "nobody reached the holder"
    );
    assert!(
        !dir.join("inside/init.sock").exists(),
        "init's socket outlived its call"
    );
    assert_eq!(env.status(&id), "created");

    // Root callers that idle or send garbage are dropped, not waited on forever.
    let _idle = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    {
        use std::io::Write;
        let mut garbage = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        garbage.write_all(b"\xff\xfe\n").unwrap();
    }
    let started = Instant::now();
    env.ok(&["start", &id]);
    assert!(started.elapsed() < Duration::from_secs(20));
    env.wait_status(&id, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&out_file)
        .unwrap()
        .contains("hunter2")
    {
        assert!(Instant::now() < deadline, "no output from the workload");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Inside: the mount point holds no socket and none of the host-only files.
    let out = env
        .cmd()
        .args(["exec", &id, "find", "/dev/.nexcage", "/.nexcage"])
        .output()
        .unwrap();
    let listing = common::stdout(&out);
    assert!(listing.contains("/nexcage"), "{listing}");
    for private in ["sock", "process.json", "hooks.json"] {
        assert!(
            !listing.contains(private),
            "{private} is visible inside: {listing}"
        );
    }
    let _ = env.run(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_clean(&env);
}

/// Finding 4: mount destinations with `..` or through a symlink of the image land
/// inside the rootfs, never on the host.
#[test]
fn mount_destinations_stay_in_the_rootfs() {
    let env = lxc_env();
    let root = own_rootfs();
    let outside = std::env::temp_dir().join(unique("nexcage-outside"));
    let dotdot = format!("/../../../../../{}", outside.join("dotdot").display());
    std::os::unix::fs::symlink(&outside, root.path().join("escape")).unwrap();
    let bundle = on_rootfs(
        &[
            "sh",
            "-c",
            "cut -d' ' -f2 /proc/self/mounts | grep nexcage-outside",
        ],
        root.path(),
        |s| {
            let mut mounts = s.mounts().clone().unwrap();
            mounts.push(tmpfs_at(&dotdot));
            mounts.push(tmpfs_at("/escape/sub"));
            s.set_mounts(Some(mounts));
        },
    );
    let id = unique("mnt");
    let out = env.out(&["run", "--bundle", bundle.path(), &id]);
    assert!(out.code == Some(0), "{}", out.stderr);
    // Where they are inside: `..` stopped at the root, the link followed from it.
    assert_eq!(
        out.stdout,
        format!(
            "{}\n{}\n",
            outside.join("dotdot").display(),
            outside.join("sub").display()
        )
    );
    assert!(
        !outside.exists(),
        "{} was made on the host",
        outside.display()
    );
    assert_clean(&env);
}

/// Finding 7: a rootfs that is a symlink (to the host's `/`) is refused, as runc does.
#[test]
fn symlinked_rootfs_is_refused() {
    let env = lxc_env();
    let pve = Pve::new();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("rootfs");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let bundle = on_rootfs(&["true"], &link, |_| {});
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("sym")],
        "invalid rootfs",
    );
    assert_clean(&env);
    refused(
        &pve.env,
        &["create", "--bundle", bundle.path(), &unique("pve-sym")],
        "invalid rootfs",
    );
    pve.assert_clean();
    // Not a directory either.
    let file = link_dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let bundle = on_rootfs(&["true"], &file, |_| {});
    refused(
        &env,
        &["create", "--bundle", bundle.path(), &unique("file")],
        "not a directory",
    );
    assert_clean(&env);
}

/// Finding 5: two images alike in every path, size and mtime but not in content
/// each run their own files (pct has no template cache now: each container's root is
/// its bundle's rootfs).
#[test]
fn pct_templates_follow_content() {
    let pve = Pve::new();
    let mut said = Vec::new();
    let roots = [own_rootfs(), own_rootfs()];
    for (root, text) in roots.iter().zip(["AAAA", "BBBB"]) {
        let msg = root.path().join("msg");
        std::fs::write(&msg, text).unwrap();
        let ok = Command::new("touch")
            .args(["-d", "2020-01-01T00:00:00Z"])
            .arg(&msg)
            .arg(root.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let bundle = on_rootfs(&["cat", "/msg"], root.path(), |_| {});
        let out = pve
            .env
            .out(&["run", "--bundle", bundle.path(), &unique("pve-tpl")]);
        assert!(out.code == Some(0), "{}", out.stderr);
        said.push(out.stdout);
    }
    assert_eq!(said, ["AAAA", "BBBB"]);
    for id in pve.env.ok(&["list", "-q"]).lines() {
        pve.env.ok(&["delete", "--force", id]);
    }
    pve.assert_clean();
}

/// Finding 8: `backends/` is 0711 whoever made it first, so an unprivileged container
/// (its root a mapped uid) can be made after a crun one.
#[test]
fn backends_dir_mode_does_not_depend_on_who_made_it() {
    let env = lxc_env();
    let first = Bundle::annotated(&["true"], &[("org.nexcage.backend", "crun")]);
    let id = unique("crun-first");
    env.ok(&["run", "--bundle", first.path(), &id]);
    env.ok(&["delete", &id]);
    let mode = std::fs::metadata(env.root().join("backends"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o711);
    let mapped = Bundle::annotated(&["id", "-u"], &[("org.nexcage.backend", "lxu")]);
    let id = unique("lxu");
    let out = env.out(&["run", "--bundle", mapped.path(), &id]);
    assert!(out.code == Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "0");
    assert_clean(&env);
}

/// Finding 9: an id that a backend's tool would read as an option is refused by every
/// backend before anything is made.
#[test]
fn ids_starting_with_a_dash() {
    let env = lxc_env();
    let pve = Pve::new();
    for backend in ["lxc", "crun", "runc"] {
        let bundle = Bundle::annotated(&["true"], &[("org.nexcage.backend", backend)]);
        refused(
            &env,
            &["create", "--bundle", bundle.path(), "--", "-x"],
            "invalid container ID",
        );
        refused(
            &env,
            &["run", "--bundle", bundle.path(), "--", "--help"],
            "invalid container ID",
        );
    }
    assert_clean(&env);
    let bundle = Bundle::new(&["true"]);
    refused(
        &pve.env,
        &["create", "--bundle", bundle.path(), "--", "-pve"],
        "invalid container ID",
    );
    pve.assert_clean();
}

/// Finding 12: a second nexcage root whose container has the same id (and, through a
/// crash at the wrong moment, notes the other's vmid) never destroys the other's.
#[test]
fn another_roots_container_is_never_ours() {
    let pve = Pve::new();
    let second = pve.env.sharing_config();
    let id = unique("pve-twin");
    let bundle = Bundle::new(&["sleep", "1000"]);
    pve.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    second.detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let first_vmid = pve.vmid(&id);
    let note = second.root().join("backends/pve").join(&id).join("vmid");
    let second_vmid = std::fs::read_to_string(&note).unwrap();
    assert_ne!(first_vmid, second_vmid);
    // The crash window: the second root noted a vmid that turned out to be taken.
    std::fs::write(&note, &first_vmid).unwrap();
    second.ok(&["delete", "--force", &id]);
    assert_eq!(
        pve.pct(&["status", &first_vmid]).stdout,
        "status: running\n",
        "the first root's container was destroyed"
    );
    // What the second root really made is left, and found from Proxmox's side.
    let config = pve.pct(&["config", &second_vmid]).stdout;
    assert!(
        config.contains(&format!("nexcage container {id}")),
        "{config}"
    );
    let out = pve.pct(&["stop", &second_vmid]);
    assert!(out.code == Some(0), "{}", out.stderr);
    let out = pve.pct(&["destroy", &second_vmid, "--purge"]);
    assert!(out.code == Some(0), "{}", out.stderr);
    pve.env.ok(&["delete", "--force", &id]);
    second.assert_clean();
    pve.assert_clean();
}
