//! What each kind of backend supports, as the runtime-spec `features` document that
//! engines (podman, containerd, moby) read to decide what to send. A delegate (crun,
//! runc) answers for itself where it can; the supervised backends and the VM answer
//! with what nexcage really does there (everything else is refused by name).

use serde_json::{Value, json};

/// The hooks the runtime spec defines.
const ALL_HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The mount options of mount(8) and the runtime spec that crun, runc and LXC take.
const MOUNT_OPTIONS: [&str; 42] = [
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// What crun and runc both accept, for a delegate too old to say (crun before 1.9
/// has no `features`).
pub fn delegate_fallback() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": &ALL_HOOKS[..],
        "mountOptions": &MOUNT_OPTIONS[..],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities(),
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": true},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true}
        }
    })
}

/// lxc and pct: nexcage's init makes the container and applies the process (see
/// `supervise`): every namespace, hook and capability; seccomp without notification;
/// cgroupfs paths only.
pub fn supervised() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": &ALL_HOOKS[..],
        // LXC hands mount(2) what it does not know itself, as runc does.
        "mountOptions": &MOUNT_OPTIONS[..],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": seccomp(),
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false}
        }
    })
}

/// qm: the VM is the boundary; inside it, guest-init applies the process as on lxc.
/// No user namespace, no hooks in the container's namespaces, binds with the
/// options a virtiofs share keeps, the guest's own cgroup2.
pub fn vm() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "dev", "exec", "nodev", "noexec", "nosuid", "private",
            "rbind", "relatime", "ro", "rprivate", "rw", "suid"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": capabilities(),
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": seccomp(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        }
    })
}

/// What nexcage adds to any backend's document: its version, and that its own
/// annotations change how a container is made.
pub fn add_nexcage(doc: &mut Value) {
    if let Some(map) = doc.as_object_mut() {
        let annotations = map.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                "org.nexcage.version".into(),
                env!("CARGO_PKG_VERSION").into(),
            );
        }
        let unsafe_list = map
            .entry("potentiallyUnsafeConfigAnnotations")
            .or_insert_with(|| json!([]));
        if let Some(list) = unsafe_list.as_array_mut()
            && !list.iter().any(|v| v == "org.nexcage.")
        {
            list.push("org.nexcage.".into());
        }
    }
}

/// Every capability this build knows, in order (the set's own order changes per run).
fn capabilities() -> Vec<String> {
    let mut all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    all.sort();
    all
}

/// `supervise::seccomp` compiles every action but notification, every operator, and
/// the flags seccomp(2) takes without a listener.
fn seccomp() -> Value {
    json!({
        "enabled": true,
        "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE",
            "SCMP_ACT_TRAP"],
        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
            "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
        "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
        "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    })
}
