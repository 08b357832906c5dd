//! The Proxmox VM backend (`qm`) against the qm/pvesh stand-in (hack/pve), which
//! runs real QEMU (TCG here): the bundle boots as a VM with nexcage as its init and
//! the bundle's rootfs in place, and the engine gets the process's output, exit
//! status and signals through the holder. Each boot takes seconds: few of them.

mod common;

use std::process::Command;

use common::qm::{Node, ON_VM, vm_bundle, without_netns};
use common::{Bundle, Env, repo, run_cmd, unique};

/// `run`: the workload's stdout, stderr and exit status exact, in a guest that is a
/// QEMU VM (DMI says so) made and destroyed with qm, with a directory and a read-only
/// file bound in from the host; then create, start, state, exec, a signal passed on by
/// the holder, delete; then gc of a wiped state's VM.
#[test]
fn a_bundle_runs_as_a_vm() {
    let node = Node::new();
    // Bind mounts: a directory read-write, a file read-only (each through a share).
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let hooks_dir = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("greeting"), "hello from the host\n").unwrap();
    let script = "echo out; echo err >&2; cat /sys/class/dmi/id/sys_vendor; hostname; \
        cat /etc/greeting; echo written > /data/out; \
        (echo x >> /etc/greeting) 2>/dev/null || echo greeting-ro; \
        cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/pids.max; exit 3";
    let bundle = vm_bundle(&["sh", "-c", script], |s| {
        use oci_spec::runtime::MountBuilder;
        let mut mounts = s.mounts().clone().unwrap_or_default();
        for (dest, source, ro) in [
            ("/data", data.path().to_path_buf(), false),
            ("/etc/greeting", files.path().join("greeting"), true),
        ] {
            let mut options = vec!["rbind".to_string()];
            if ro {
                options.push("ro".into());
            }
            mounts.push(
                MountBuilder::default()
                    .destination(dest)
                    .typ("bind")
                    .source(source)
                    .options(options)
                    .build()
                    .unwrap(),
            );
        }
        s.set_mounts(Some(mounts));
        let pids = oci_spec::runtime::LinuxPidsBuilder::default()
            .limit(77i64)
            .build()
            .unwrap();
        let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
            .pids(pids)
            .build()
            .unwrap();
        s.linux_mut()
            .as_mut()
            .unwrap()
            .set_resources(Some(resources));
        // The runtime's hooks run on the host, each with the state on stdin.
        let hook = |kind: &str| {
            oci_spec::runtime::HookBuilder::default()
                .path("/bin/sh")
                .args(vec![
                    "sh".into(),
                    "-c".into(),
                    format!("cat > {}/{kind}.json", hooks_dir.path().display()),
                ])
                .build()
                .unwrap()
        };
        s.set_hooks(Some(
            oci_spec::runtime::HooksBuilder::default()
                .prestart(vec![hook("prestart")])
                .create_runtime(vec![hook("createRuntime")])
                .poststart(vec![hook("poststart")])
                .poststop(vec![hook("poststop")])
                .build()
                .unwrap(),
        ));
    });
    let run_id = unique("vm-run");
    let out = node.env.out(&["run", "--bundle", bundle.path(), &run_id]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (
            Some(3),
            "out\nQEMU\nnexcage\nhello from the host\ngreeting-ro\n77\n",
            "err\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("out")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.path().join("greeting")).unwrap(),
        "hello from the host\n"
    );
    for kind in ["prestart", "createRuntime", "poststart", "poststop"] {
        let state = std::fs::read_to_string(hooks_dir.path().join(format!("{kind}.json")))
            .unwrap_or_else(|_| panic!("{kind} did not run"));
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["id"], run_id.as_str(), "{kind}: {state}");
    }
    node.assert_clean();

    // CPU resources as the VM's: shares its cpuunits, a cpuset QEMU's affinity, a
    // quota its cores and cpulimit.
    let id = unique("vm-life");
    let bundle = vm_bundle(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo started; sleep 1000 & wait",
        ],
        |s| {
            let cpu = oci_spec::runtime::LinuxCpuBuilder::default()
                .shares(2048u64)
                .cpus("0")
                .quota(50_000i64)
                .period(100_000u64)
                .build()
                .unwrap();
            let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
                .cpu(cpu)
                .build()
                .unwrap();
            s.linux_mut()
                .as_mut()
                .unwrap()
                .set_resources(Some(resources));
        },
    );
    let log = bundle.dir.path().join("log");
    node.env
        .detached_to(&["create", "--bundle", bundle.path(), &id], &log);
    assert_eq!(node.env.status(&id), "created");
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    assert_eq!(node.qm(&["status", &vmid]).stdout, "status: running\n");
    let config = node.qm(&["config", &vmid]).stdout;
    for line in [
        "tags: nexcage",
        "cores: 1",
        "cpulimit: 0.50",
        "cpuunits: 79",
        "affinity: 0",
    ] {
        assert!(config.contains(line), "{line}: {config}");
    }
    let qemu = std::fs::read_to_string(
        node.dir
            .path()
            .join("node/var/run/qemu-server")
            .join(format!("{vmid}.pid")),
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", qemu.trim())).unwrap();
    assert!(
        status.contains("Cpus_allowed_list:\t0\n"),
        "QEMU's affinity: {status}"
    );
    node.env.ok(&["start", &id]);
    assert_eq!(node.env.status(&id), "running");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(std::time::Instant::now() < deadline, "no output");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // exec: a process of its own in the guest, its stdio and exit status ours.
    let out = node.env.out(&[
        "exec",
        "--user",
        "1000",
        "--env",
        "X=1",
        &id,
        "sh",
        "-c",
        "echo in-exec $X $(id -u); echo e >&2; exit 5",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(5), "in-exec 1 1000\n", "e\n")
    );
    let out = node.env.out(&["exec", &id, "nosuchcmd"]);
    assert_eq!(out.code, Some(127), "{}", out.stderr);
    assert!(
        out.stderr.contains("executable file not found"),
        "{}",
        out.stderr
    );
    // ps: the guest's processes, as `ps -ef` prints them (the pids are the guest's).
    let table = node.env.ok(&["ps", &id]);
    assert!(table.starts_with("UID "), "{table}");
    assert!(table.lines().any(|l| l.ends_with(" sleep 1000")), "{table}");
    let pids: Vec<i64> =
        serde_json::from_str(&node.env.ok(&["ps", "--format", "json", &id])).unwrap();
    // JSON is for engines that look pids up on the host: the holder is the only one.
    assert_eq!(pids, [node.env.state(&id)["pid"].as_i64().unwrap()]);
    let err = node.env.fails(&["ps", &id, "-o", "pid"]);
    assert!(err.contains("not supported"), "{err}");
    // --tty without a console socket: the guest's pty relayed to our stdio.
    let out = node
        .env
        .out(&["exec", "--tty", &id, "sh", "-c", "test -t 0 && echo tty"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "tty\r\n"),
        "{}",
        out.stderr
    );
    // --cap and --additional-gids, as runc's.
    let caps = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend(extra);
        args.extend([
            id.as_str(),
            "sh",
            "-c",
            "grep CapEff /proc/self/status; id -G",
        ]);
        node.env.ok(&args)
    };
    let plain = caps(&[]);
    let more = caps(&["--cap", "CAP_NET_RAW", "--additional-gids", "55"]);
    assert_ne!(plain.lines().next(), more.lines().next(), "{plain} {more}");
    assert!(
        more.lines().nth(1).unwrap().split(' ').any(|g| g == "55"),
        "{more}"
    );
    let err = node
        .env
        .fails(&["exec", "--preserve-fds", "1", &id, "true"]);
    assert!(err.contains("exec --preserve-fds"), "{err}");
    // A signal to a foreground exec is its process's, as with runc.
    let mut exec = node.env.cmd();
    exec.args([
        "exec",
        &id,
        "sh",
        "-c",
        "trap 'echo got-term; exit 9' TERM; echo ready; sleep 100 & wait",
    ])
    .stdout(std::process::Stdio::piped());
    let mut child = exec.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(
        (child.wait().unwrap().code(), rest.as_str()),
        (Some(9), "got-term\n")
    );
    // pause/resume: the whole VM, with qm suspend/resume.
    node.env.ok(&["pause", &id]);
    assert_eq!(node.env.status(&id), "paused");
    assert_eq!(node.qm(&["status", &vmid]).stdout, "status: paused\n");
    let err = node.env.fails(&["pause", &id]);
    assert!(
        err.contains("container not running"),
        "twice, as runc: {err}"
    );
    let err = node.env.fails(&["exec", &id, "true"]);
    assert!(err.contains("paused"), "{err}");
    node.env.ok(&["resume", &id]);
    assert_eq!(node.env.status(&id), "running");
    let err = node.env.fails(&["resume", &id]);
    assert!(err.contains("container not paused"), "{err}");
    assert_eq!(node.env.ok(&["exec", &id, "echo", "back"]), "back\n");
    node.env.ok(&["kill", &id, "TERM"]);
    node.env.wait_status(&id, "stopped");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "started\ngot-term\n"
    );
    node.env.ok(&["delete", &id]);
    node.assert_clean();

    // A wiped state (holder killed, record and runtime dir gone): `gc` finds the VM
    // by its description and destroys it.
    let id = unique("vm-lost");
    node.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let holder = node.env.state(&id)["pid"].as_i64().unwrap();
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    std::fs::remove_file(node.env.root().join("containers").join(&id)).unwrap();
    std::fs::remove_dir_all(node.env.root().join("backends/vm").join(&id)).unwrap();
    let out = node.env.ok(&["gc"]);
    assert!(
        out.contains(&format!("vm: Proxmox VM {vmid} of container {id}")),
        "{out}"
    );
    assert_ne!(node.qm(&["status", &vmid]).code, Some(0), "the VM is left");
    node.assert_clean();
}

/// What the VM backend cannot do yet, and a missing kernel, fail the create with one
/// line naming it, before any VM, runtime dir or virtiofsd exists.
#[test]
fn refusals_leave_nothing() {
    let node = Node::new();
    let data = tempfile::tempdir().unwrap();
    let cases: Vec<(Bundle, &str)> = vec![
        (
            vm_bundle(&["true"], |s| {
                let mut mounts = s.mounts().clone().unwrap_or_default();
                mounts.push(
                    oci_spec::runtime::MountBuilder::default()
                        .destination("/data")
                        .typ("bind")
                        .source(data.path())
                        .options(vec!["rbind".into(), "rshared".into()])
                        .build()
                        .unwrap(),
                );
                s.set_mounts(Some(mounts));
            }),
            "bind mount option \"rshared\"",
        ),
        (
            vm_bundle(&["true"], |s| {
                let hook = oci_spec::runtime::HookBuilder::default()
                    .path("/bin/true")
                    .build()
                    .unwrap();
                s.set_hooks(Some(
                    oci_spec::runtime::HooksBuilder::default()
                        .create_container(vec![hook])
                        .build()
                        .unwrap(),
                ));
            }),
            "hooks.createContainer",
        ),
        (
            vm_bundle(&["true"], |s| {
                without_netns(s);
            }),
            "without a network namespace",
        ),
        (
            vm_bundle(&["true"], |s| {
                let cpu = oci_spec::runtime::LinuxCpuBuilder::default()
                    .mems("0")
                    .build()
                    .unwrap();
                let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
                    .cpu(cpu)
                    .build()
                    .unwrap();
                s.linux_mut()
                    .as_mut()
                    .unwrap()
                    .set_resources(Some(resources));
            }),
            "linux.resources.cpu.mems",
        ),
    ];
    for (bundle, words) in &cases {
        let err = node
            .env
            .fails(&["run", "--bundle", bundle.path(), &unique("vm-bad")]);
        assert!(
            err.contains(words) && err.contains("not supported by the qm backend"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    node.assert_clean();

    // A kernel directory that is not there: named, nothing made.
    let missing = Env::with_config(&format!(
        r#"{{"default":"vm","backends":{{"vm":{{"type":"qm","qm":"{}","pvesh":"{}",
            "kernel":"/nonexistent/kernel"}}}}}}"#,
        node.dir.path().join("qm").display(),
        node.dir.path().join("pvesh").display(),
    ));
    let bundle = Bundle::new(&["true"]);
    let err = missing.fails(&["run", "--bundle", bundle.path(), &unique("vm-nokernel")]);
    assert!(
        err.contains("/nonexistent/kernel/vmlinuz not found"),
        "{err}"
    );
    missing.assert_clean();
    // No qm: the config names it.
    let no_qm = Env::with_config(
        r#"{"default":"vm","backends":{"vm":{"type":"qm","qm":"/nonexistent/qm",
            "kernel":"/nonexistent/kernel"}}}"#,
    );
    let err = no_qm.fails(&["run", "--bundle", bundle.path(), &unique("vm-noqm")]);
    assert!(err.contains("binary /nonexistent/qm not found"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    no_qm.assert_clean();
    assert_eq!(node.qm(&["list"]).stdout, "");
}

/// A spec without a network namespace gets a Proxmox NIC (`net0`) on the backend's
/// bridge, up in the guest; without a bridge setting it is refused (see
/// `refusals_leave_nothing`); a bridge the node lacks fails the create as qm does.
#[test]
fn nic_on_the_bridge_without_a_netns() {
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
    let bridge = Bridge(format!("nxbr{}", std::process::id() % 100_000));
    let out = Command::new("ip")
        .args(["link", "add", &bridge.0, "type", "bridge"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let no_netns = |args: &[&str]| {
        vm_bundle(args, |s| {
            without_netns(s);
        })
    };
    let node = Node::with_backend_extra(&format!(r#","bridge":"{}""#, bridge.0));
    let bundle = no_netns(&[
        "sh",
        "-c",
        "cat /sys/class/net/eth0/operstate /sys/class/net/eth0/address",
    ]);
    let out = node
        .env
        .out(&["run", "--bundle", bundle.path(), &unique("vm-br")]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "up", "{}", out.stdout);
    // Proxmox's own MAC prefix (PVE::Tools::random_ether_addr).
    assert!(lines[1].starts_with("bc:24:11:"), "{}", out.stdout);
    node.assert_clean();

    let missing = Node::with_backend_extra(r#","bridge":"nxnosuchbr""#);
    let err = missing
        .env
        .fails(&["run", "--bundle", bundle.path(), &unique("vm-nobr")]);
    assert!(err.contains("bridge 'nxnosuchbr' does not exist"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    missing.assert_clean();
}

/// A network namespace the engine keeps (a pod's): the VM's NIC takes its veth (not
/// a link that is down, like the kernel's fallback tunnels), and gives it back when
/// the VM ends, so the next container in it starts too; the host's own namespace is
/// refused.
#[test]
fn a_kept_netns_is_given_back() {
    let ns = common::Netns::new("nxvmns", "127.0.0.2/8");
    let host_end = format!("nxv{}", std::process::id() % 100_000);
    struct Link(String);
    impl Drop for Link {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
    let _link = Link(host_end.clone());
    let subnet = 10 + std::process::id() % 200;
    let inside = format!("10.213.{subnet}.2");
    let host_ip = format!("10.213.{subnet}.1");
    let host_cidr = format!("{host_ip}/24");
    for args in [
        vec![
            "link",
            "add",
            host_end.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns.name,
        ],
        // Links that are down (as the fallback tunnels of a new namespace) do not count.
        vec![
            "-n", &ns.name, "link", "add", "spare0", "type", "veth", "peer", "name", "spare1",
        ],
        vec!["-n", &ns.name, "link", "set", "eth0", "up"],
        vec![
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{inside}/24"),
            "dev",
            "eth0",
        ],
        vec!["link", "set", host_end.as_str(), "up"],
        vec!["addr", "add", &host_cidr, "dev", host_end.as_str()],
    ] {
        let out = Command::new("ip").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let node = Node::new();
    // The host's end answers; a frame with another source address is not let out.
    let script = format!(
        "ip -4 -o addr show eth0; ping -c1 -W2 {host_ip} >/dev/null && echo reached; \
         ip link set eth0 address 02:00:00:00:00:01; ip neigh flush dev eth0; \
         ping -c1 -W2 {host_ip} >/dev/null && echo spoofed || echo blocked"
    );
    let in_netns = |path: &str| {
        let path = path.to_string();
        vm_bundle(&["sh", "-c", &script], move |s| {
            let process = s.process_mut().as_mut().unwrap();
            let mut caps = process.capabilities().clone().unwrap_or_default();
            for cap in [
                oci_spec::runtime::Capability::NetRaw,
                oci_spec::runtime::Capability::NetAdmin,
            ] {
                let mut b = caps.bounding().clone().unwrap_or_default();
                b.insert(cap);
                let mut e = caps.effective().clone().unwrap_or_default();
                e.insert(cap);
                let mut p = caps.permitted().clone().unwrap_or_default();
                p.insert(cap);
                caps.set_bounding(Some(b))
                    .set_effective(Some(e))
                    .set_permitted(Some(p));
            }
            process.set_capabilities(Some(caps));
            let linux = s.linux_mut().as_mut().unwrap();
            let namespaces = linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|mut n| {
                    if n.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        n.set_path(Some(path.clone().into()));
                    }
                    n
                })
                .collect();
            linux.set_namespaces(Some(namespaces));
        })
    };
    let bundle = in_netns(&ns.path());
    for round in 0..2 {
        let out = node
            .env
            .out(&["run", "--bundle", bundle.path(), &unique("vm-ns")]);
        assert_eq!(out.code, Some(0), "round {round}: {}", out.stderr);
        assert!(
            out.stdout.contains(&format!(" {inside}/24"))
                && out.stdout.contains("reached\n")
                && out.stdout.ends_with("blocked\n"),
            "{}",
            out.stdout
        );
        let filters = Command::new("tc")
            .args(["-n", &ns.name, "filter", "show", "dev", "eth0", "ingress"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&filters.stdout),
            "",
            "round {round}: left on eth0"
        );
    }
    let host = in_netns(&format!("/proc/{}/ns/net", std::process::id()));
    let err = node
        .env
        .fails(&["run", "--bundle", host.path(), &unique("vm-hostns")]);
    assert!(err.contains("is the host's"), "{err}");
    node.assert_clean();
}

/// vmids: one taken meanwhile is retried with the next, one taken for good fails
/// clearly with the other VM untouched; an annotated vmid only where allowed.
#[test]
fn vmids_taken_or_fixed() {
    let node = Node::with_backend_extra(r#","allowed_annotations":["vmid"]"#);
    let foreign = node.qm(&["create", "100", "--name", "someone-else"]);
    assert_eq!(foreign.code, Some(0), "{}", foreign.stderr);
    // pvesh offers 100 once (another create's race), then the real next id.
    let pvesh = node.dir.path().join("pvesh");
    let real = std::fs::read_to_string(&pvesh).unwrap();
    let once = node.dir.path().join("offered");
    std::fs::write(
        &pvesh,
        format!(
            "#!/bin/sh\nif [ ! -e '{0}' ]; then touch '{0}'; echo 100; exit 0; fi\n{1}",
            once.display(),
            real.trim_start_matches("#!/bin/sh\n")
        ),
    )
    .unwrap();
    let id = unique("vm-retry");
    let bundle = Bundle::annotated(&["true"], &[ON_VM]);
    node.env
        .detached(&["create", "--bundle", bundle.path(), &id]);
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    assert_ne!(vmid, "100");
    node.env.ok(&["delete", "--force", &id]);
    // Always 100: five tries, one clear line.
    std::fs::write(&pvesh, "#!/bin/sh\necho 100\n").unwrap();
    let err = node
        .env
        .fails(&["create", "--bundle", bundle.path(), &unique("vm-taken")]);
    assert!(err.contains("vmid taken 5 times"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let config = node.qm(&["config", "100"]).stdout;
    assert!(config.contains("name: someone-else"), "touched: {config}");
    // A fixed vmid that is taken: refused at once.
    let fixed = Bundle::annotated(&["true"], &[ON_VM, ("org.nexcage.qm.vmid", "100")]);
    let err = node
        .env
        .fails(&["create", "--bundle", fixed.path(), &unique("vm-fixed")]);
    assert!(err.contains("already exists"), "{err}");
    for (key, value, needle) in [
        ("org.nexcage.qm.vmid", "12", "a vmid is 100 to 999999999"),
        ("org.nexcage.qm.memory", "2", "unknown annotation"),
    ] {
        let bundle = Bundle::annotated(&["true"], &[ON_VM, (key, value)]);
        let err = node
            .env
            .fails(&["create", "--bundle", bundle.path(), &unique("vm-bad")]);
        assert!(err.contains(needle), "{key}={value}: {err}");
    }
    let out = node.qm(&["destroy", "100"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    node.assert_clean();
    // Not allowed by the backend's configuration: refused.
    let plain = Node::new();
    let err = plain
        .env
        .fails(&["create", "--bundle", fixed.path(), &unique("vm-ann")]);
    assert!(
        err.contains("annotation org.nexcage.qm.vmid is not allowed"),
        "{err}"
    );
    plain.assert_clean();
}

/// podman on qm: `run --rm` output and exit status, stderr apart, with podman's own
/// spec (its /etc/hosts, resolv.conf and shm binds, its pids limit, seccomp profile
/// and network namespace), the VM gone afterwards; `-d`, `logs`, `exec`, `stop`, `rm`.
#[test]
fn podman_run_on_qm() {
    let node = Node::new();
    let name = unique("nxc-vm");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("podman")
                .args(["rm", "--force", "--time", "0", &self.0])
                .output();
        }
    }
    let _gone = Gone(name.clone());
    let mut cmd = Command::new("podman");
    cmd.arg("--runtime")
        .arg(common::nexcage())
        .arg("--runtime-flag")
        .arg(format!("config={}", node.env.config.as_ref().unwrap().display()))
        .args(["run", "--rm", "--name", &name, "--annotation", "org.nexcage.backend=vm"])
        .arg("localhost/nexcage-busybox:latest")
        .args([
            "sh",
            "-c",
            "echo hi; echo err >&2; grep -c localhost /etc/hosts; cat /sys/class/dmi/id/sys_vendor; exit 4",
        ]);
    let out = run_cmd(cmd, None);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(4), "hi\n1\nQEMU\n", "err\n")
    );
    assert_eq!(node.qm(&["list"]).stdout, "", "qm list");

    // -i: piped stdin reaches the workload, with its EOF.
    let name = unique("nxc-vm-i");
    let _gone_i = Gone(name.clone());
    let mut cmd = Command::new("podman");
    cmd.arg("--runtime")
        .arg(common::nexcage())
        .arg("--runtime-flag")
        .arg(format!(
            "config={}",
            node.env.config.as_ref().unwrap().display()
        ))
        .args([
            "run",
            "--rm",
            "-i",
            "--name",
            &name,
            "--annotation",
            "org.nexcage.backend=vm",
        ])
        .arg("localhost/nexcage-busybox:latest")
        .args(["sh", "-c", "read x; echo got:$x; cat; echo eof"]);
    let out = run_cmd(cmd, Some("piped\nrest\n"));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "got:piped\nrest\neof\n"),
        "{}",
        out.stderr
    );

    // -d, logs, exec (conmon's `exec --detach --pid-file --process`), stop, rm.
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--runtime")
            .arg(common::nexcage())
            .arg("--runtime-flag")
            .arg(format!(
                "config={}",
                node.env.config.as_ref().unwrap().display()
            ))
            .args(args);
        run_cmd(cmd, None)
    };
    // With -p: the VM's NIC is joined to podman's veth, and has its address.
    let name = unique("nxc-vm-d");
    let _gone = Gone(name.clone());
    let port = 20_000 + (std::process::id() % 1000) as u16;
    let out = podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("{port}:80"),
        "--annotation",
        "org.nexcage.backend=vm",
        "localhost/nexcage-busybox:latest",
        "sh",
        "-c",
        "trap 'exit 0' TERM; httpd -p 80; echo started; sleep 1000 & wait",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while podman(&["logs", &name]).stdout != "started\n" {
        assert!(std::time::Instant::now() < deadline, "no log");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let code = common::http_status(&url);
        if code == "404" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "httpd not reached: {code:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ip = podman(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        &name,
    ])
    .stdout;
    let out = podman(&["exec", &name, "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        out.stdout.contains(&format!(" {}/", ip.trim())),
        "{ip:?} {out:?}"
    );
    let out = podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(5), "in-exec\n"),
        "{}",
        out.stderr
    );
    for (verb, status) in [("pause", "paused"), ("unpause", "running")] {
        let out = podman(&[verb, &name]);
        assert_eq!(out.code, Some(0), "{verb}: {}", out.stderr);
        let state = podman(&["inspect", "--format", "{{.State.Status}}", &name]);
        assert_eq!(state.stdout.trim(), status, "{verb}");
    }
    let out = podman(&["stop", "--time", "10", &name]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code.stdout.trim(), "0");
    let out = podman(&["rm", &name]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(node.qm(&["list"]).stdout, "", "qm list");
}

/// `hack/pve/node.sh DIR`, the way to try nexcage without Proxmox: its config loads
/// and routes to every backend by annotation.
#[test]
fn node_script_makes_a_config_with_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cmd(
        common::command(&[
            repo().join("hack/pve/node.sh").to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let config = out.stdout.trim().to_string();
    for backend in ["crun", "runc", "lxc", "pve", "vm"] {
        let bundle = Bundle::annotated(&["true"], &[("org.nexcage.backend", backend)]);
        let mut cmd = Command::new(common::nexcage());
        cmd.args(["--config", &config, "route", "--bundle", bundle.path(), "x"]);
        let out = run_cmd(cmd, None);
        assert!(
            out.stdout.starts_with(&format!("{backend} ")),
            "{}{}",
            out.stdout,
            out.stderr
        );
    }
    // `check`: every backend of the node can work here.
    let mut cmd = Command::new(common::nexcage());
    cmd.args(["--config", &config, "check"]);
    let out = run_cmd(cmd, None);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for backend in ["crun", "runc", "lxc", "pve", "vm"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("OK   {backend} "))),
            "{backend}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout.lines().all(|l| l.starts_with("OK   ")),
        "{}",
        out.stdout
    );
}

/// containerd (`ctr run --runc-binary`, as its runc shim drives a runtime) on a VM:
/// output and exit status.
#[test]
fn containerd_on_qm() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::with_default("vm");
    let dir = tempfile::Builder::new()
        .prefix("nxq")
        .tempdir_in("/tmp")
        .unwrap();
    let script = |name: &str| repo().join("hack/containerd").join(name);
    let start = run_cmd(
        common::command(&[
            script("start.sh").to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ]),
        None,
    );
    assert_eq!(start.code, Some(0), "{}", start.stderr);
    let sock = start.stdout.trim().to_string();
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(repo().join("hack/containerd/stop.sh"))
                .arg(&self.0)
                .output();
        }
    }
    let _stop = Stop(dir.path().to_path_buf());
    let import = run_cmd(
        common::command(&[script("import-images.sh").to_str().unwrap(), &sock]),
        None,
    );
    assert_eq!(import.code, Some(0), "{}", import.stderr);
    // ctr takes a binary, not flags: a wrapper adds the config.
    let wrapper = node.dir.path().join("nexcage-vm");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' --config '{}' \"$@\"\n",
            common::nexcage(),
            node.env.config.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_cmd(
        common::command(&[
            "ctr",
            "--address",
            &sock,
            "run",
            "--rm",
            "--runc-binary",
            wrapper.to_str().unwrap(),
            "localhost/nexcage-busybox:latest",
            &unique("vm-ctr"),
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
    assert_eq!(node.qm(&["list"]).stdout, "", "qm list");
}

/// kill -9 of the holder while the workload runs (the VM keeps running: nothing in
/// it knows), then `delete --force`: no VM, config, socket, virtiofsd or runtime dir;
/// `kill KILL`, `kill --all`, and a VM that dies under the workload.
#[test]
fn killed_holder_then_forced_delete() {
    let node = Node::new();
    let bundle = Bundle::annotated(&["sleep", "1000"], &[ON_VM]);
    let id = unique("vm-k9");
    node.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let holder = node.env.state(&id)["pid"].as_i64().unwrap();
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    // SAFETY: kill(2) on the holder's pid.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    node.env.wait_status(&id, "stopped");
    assert_eq!(node.qm(&["status", &vmid]).stdout, "status: running\n");
    node.env.ok(&["delete", "--force", &id]);
    assert_ne!(node.qm(&["status", &vmid]).code, Some(0), "the VM is left");
    let virtiofsd = Command::new("pgrep")
        .args(["-f", &format!("{}/backends/vm", node.env.root().display())])
        .output()
        .unwrap();
    assert!(
        virtiofsd.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&virtiofsd.stdout)
    );
    node.assert_clean();

    // kill -9 of nexcage mid-create (the VM made and booting): delete --force leaves
    // nothing (the vmid, sockets and virtiofsd were noted before each was made).
    let id = unique("vm-midcreate");
    let mut create = node.env.cmd();
    create
        .args(["create", "--bundle", bundle.path(), &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = create.spawn().unwrap();
    let noted = node.env.root().join("backends/vm").join(&id).join("vmid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(vmid) = std::fs::read_to_string(&noted)
            && node.qm(&["status", &vmid]).stdout == "status: running\n"
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the VM never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    node.env.ok(&["delete", "--force", &id]);
    node.assert_clean();

    // `kill KILL` cannot be passed on: the holder ends and the VM is stopped.
    let id = unique("vm-kill9");
    node.env
        .detached(&["run", "-d", "--bundle", bundle.path(), &id]);
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    node.env.ok(&["kill", &id, "KILL"]);
    node.env.wait_status(&id, "stopped");
    assert_eq!(node.qm(&["status", &vmid]).stdout, "status: stopped\n");
    node.env.ok(&["delete", &id]);

    // `kill --all`: every process in the guest (here the workload's shell and its
    // children), never the holder's cgroup on the host (the caller's).
    let id = unique("vm-all");
    let all = Bundle::annotated(
        &["sh", "-c", "sleep 1000 & sleep 1001; echo not-here"],
        &[ON_VM],
    );
    let mut run = node.env.cmd();
    run.args(["run", "--bundle", all.path(), &id])
        .stdout(std::process::Stdio::piped());
    let child = run.spawn().unwrap();
    wait_running(&node, &id);
    std::thread::sleep(std::time::Duration::from_secs(1));
    node.env.ok(&["kill", "--all", &id, "TERM"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(143), ""),
        "killed by TERM"
    );

    // A VM that dies under the workload (QEMU killed): the engine sees it killed (137).
    let id = unique("vm-qemu9");
    let mut run = node.env.cmd();
    run.args(["run", "--bundle", bundle.path(), &id]);
    let mut child = run.spawn().unwrap();
    wait_running(&node, &id);
    let vmid = std::fs::read_to_string(node.env.root().join("backends/vm").join(&id).join("vmid"))
        .unwrap();
    let qemu = std::fs::read_to_string(
        node.dir
            .path()
            .join("node/var/run/qemu-server")
            .join(format!("{vmid}.pid")),
    )
    .unwrap();
    let qemu: i32 = qemu.trim().parse().unwrap();
    // SAFETY: kill(2) on the stand-in's QEMU of this test's VM.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    assert_eq!(child.wait().unwrap().code(), Some(137));
    node.assert_clean();
}

/// Until a container that a `run` in the background makes is running.
fn wait_running(node: &Node, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while node
        .env
        .out(&["state", id])
        .stdout
        .find("\"running\"")
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "{id} never ran");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A terminal: `podman run -it` on a VM (the master of a host pty to podman, a pty
/// of the container's devpts in the guest): the process has a tty, typed input
/// reaches it, its exit status is podman's.
#[test]
fn podman_terminal_on_qm() {
    let node = Node::new();
    let name = unique("nxc-vm-t");
    let line = format!(
        "podman --runtime {} --runtime-flag config={} run --rm -it --name {name} \
         --annotation org.nexcage.backend=vm localhost/nexcage-busybox:latest \
         sh -c 'test -t 0 && echo tty; stty size; read x; echo got:$x; exit 4'",
        common::nexcage(),
        node.env.config.as_ref().unwrap().display()
    );
    let out = run_cmd(
        common::command(&["script", "-qec", &line, "/dev/null"]),
        Some("typed\n"),
    );
    assert_eq!(out.code, Some(4), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("tty\r\n") && out.stdout.contains("got:typed"),
        "{:?}",
        out.stdout
    );
    assert_eq!(node.qm(&["list"]).stdout, "", "qm list");

    // `exec -it` (conmon's `exec --tty --console-socket --detach`): a terminal of the
    // exec's own, at the size of podman's.
    let name = unique("nxc-vm-et");
    let podman = format!(
        "podman --runtime {} --runtime-flag config={}",
        common::nexcage(),
        node.env.config.as_ref().unwrap().display()
    );
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("podman")
                .args(["rm", "--force", "--time", "0", &self.0])
                .output();
        }
    }
    let _gone = Gone(name.clone());
    let out = run_cmd(
        common::command(&[
            "sh",
            "-c",
            &format!(
                "{podman} run -d --name {name} --annotation org.nexcage.backend=vm \
                 localhost/nexcage-busybox:latest sleep 1000"
            ),
        ]),
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let line = format!(
        "stty rows 33 cols 101; {podman} exec -it {name} \
         sh -c 'test -t 0 && echo tty; stty size; read x; echo got:$x; exit 6'"
    );
    let out = run_cmd(
        common::command(&["script", "-qec", &line, "/dev/null"]),
        Some("typed\n"),
    );
    assert_eq!(out.code, Some(6), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("tty\r\n33 101\r\n") && out.stdout.contains("got:typed"),
        "{:?}",
        out.stdout
    );
}
