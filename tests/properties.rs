//! Property tests (issue 10): whatever a bundle, an annotation or nexcage's own
//! config file holds, the generated LXC config and `pct` options never panic the
//! runtime and never carry a line, key or option the translation did not mean to
//! write. Values are built from the characters and pieces that end, split, comment
//! out, quote or escape something in one of those formats, mixed with plain words
//! so that a fair share of the inputs is accepted and the output is checked too.
//!
//! Nothing here starts a container; `translate` reads the host (cgroup
//! hierarchies, device nodes, namespace files), which is what it does for real.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nexcage::backend::genconf::{LxcConf, parse_lxc};
use nexcage::backend::lxc::translate::{Paths, Translation, translate};
use nexcage::backend::pct::translate::{Placement, create_options, raw_config, settings};
use nexcage::config::{BackendConfig, Config, LxcConfig, PctConfig, Rule, load_file};
use nexcage::routing::{BACKEND_ANNOTATION, Reason, route};
use nexcage::supervise::BINARY;
use oci_spec::runtime::Spec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use serde_json::{Value, json};

/// 1024 cases each: a few seconds for the whole file in a debug build (CI), well
/// under its minute. `PROPTEST_CASES` sets another count, for a longer hunt.
fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        default.cases
    } else {
        1024
    };
    ProptestConfig {
        cases,
        // Failing cases are kept next to this file (properties.proptest-regressions)
        // and run first next time; said explicitly, as tests/ has no lib.rs.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..default
    }
}

// ---------------------------------------------------------------------------
// Input strategies
//
// Boxed: the nested strategy types of a whole spec otherwise make frames that
// overflow a test thread's stack in a debug build.
// ---------------------------------------------------------------------------

/// Single characters with a meaning in LXC's config (line ends, `=`, `#`, quotes),
/// fstab fields (blanks, `\`), PVE property strings (`,`, `=`, `:`), argv (`-`),
/// paths (`/`, `.`), plus control characters, Unicode blanks and non-ASCII text.
const DANGEROUS: &[char] = &[
    '\n', '\r', '\0', '\t', '\x0b', '\x0c', '\x1b', '\x7f', '\u{85}', '\u{a0}', '\u{2028}',
    '\u{feff}', ' ', '=', '#', '"', '\'', ',', ':', ';', '\\', '/', '.', '-', '*', '?', '[', ']',
    '{', '$', 'é', '€', 'ß', '😀',
];

/// Whole pieces an attacker would try: a second config line, a key of its own, a
/// path escape, a property or option of their own.
const FRAGMENTS: &[&str] = &[
    "\nlxc.hook.pre-start = /tmp/x",
    "\nlxc.include = /etc/evil",
    "\rlxc.mount.auto = proc:rw",
    "lxc.environment = X=1",
    "lxc.hook.mount",
    "..",
    "../",
    "/",
    " = ",
    "\"quoted\"",
    "'single'",
    ",mp=/etc",
    ",ro=0",
    "=1",
    "--force",
    "\r\n",
    "\\040",
    "proc",
    "bind",
    "/proc/self/ns/net",
    "0-3",
];

/// A string of plain words, dangerous characters and fragments.
fn nasty() -> BoxedStrategy<String> {
    let atom = prop_oneof![
        3 => "[a-z0-9]{1,6}",
        2 => prop::sample::select(DANGEROUS).prop_map(String::from),
        1 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
    ];
    prop::collection::vec(atom, 0..6)
        .prop_map(|parts| parts.concat())
        .boxed()
}

/// Mostly harmless text (which the translations must accept and then write right),
/// sometimes hostile.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[a-z0-9][a-z0-9._-]{0,10}",
        // Accepted by every writer, but a trap for a careless one.
        1 => "[a-z0-9]{1,4}[ #=\"'é:]{1,2}[a-z0-9]{1,4}",
        2 => nasty(),
    ]
    .boxed()
}

/// A path: absolute, relative or hostile.
fn path() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text().prop_map(|t| format!("/{t}")),
        1 => text(),
        1 => "(/[a-z0-9 .]{1,5}){1,3}",
    ]
    .boxed()
}

/// Integers near the edges that arithmetic on them trips over, and some others.
fn int() -> BoxedStrategy<i64> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, i64::MIN + 1, -2, -1, 0, 1, 2, i64::MAX]),
        -1_000_000i64..1_000_000_000_000,
        any::<i64>(),
    ]
    .boxed()
}

fn uint() -> BoxedStrategy<u64> {
    prop_oneof![
        prop::sample::select(vec![0, 1, 2, 10, 1000, u64::MAX, i64::MAX as u64]),
        0u64..1_000_000_000_000,
        any::<u64>(),
    ]
    .boxed()
}

/// A valid container id (they are checked before any backend sees them).
fn id() -> BoxedStrategy<String> {
    "[a-z0-9][a-z0-9_+.-]{0,30}"
        .prop_filter("not . or ..", |s| s != "." && s != "..")
        .boxed()
}

/// Sometimes the value, mostly the spec's default (`None`): every field set at once
/// would almost always be refused and leave the accepted output unchecked.
fn maybe<S: Strategy + 'static>(s: S) -> BoxedStrategy<Option<S::Value>> {
    prop::option::weighted(0.25, s).boxed()
}

// ---------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------

/// The default spec with `patch` merged in, as the unit tests in translate.rs do:
/// specs reach nexcage as JSON.
fn spec(patch: &Value) -> Spec {
    let mut v = serde_json::to_value(Spec::default()).expect("the default spec serializes");
    merge(&mut v, patch);
    serde_json::from_value(v).expect("the patch has the spec's types")
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Puts `value` at `key` if there is one.
fn put(obj: &mut serde_json::Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        obj.insert(key.to_string(), v.into());
    }
}

fn mount() -> BoxedStrategy<Value> {
    let dest = prop_oneof![
        3 => path(),
        1 => prop::sample::select(vec![
            "/sys/fs/cgroup", "/dev", "/dev/pts", "/dev/shm", "/tmp", "/", "/etc/hosts",
        ])
        .prop_map(str::to_string),
    ];
    let typ = prop_oneof![
        3 => prop::sample::select(vec![
            "bind", "tmpfs", "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "none",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ];
    let option = prop_oneof![
        3 => prop::sample::select(vec![
            "ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec", "size=65536k",
            "mode=755", "tmpcopyup", "create=dir", "optional", "idmap", "z", "rprivate",
            // LXC's own options, whole or inside another (it looks for substrings).
            "relative", "idmap=/proc/self/ns/user", "idmap=uids=0-1000-1", "x-optional",
            "nocreate=file",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ];
    let source = prop_oneof![
        prop::sample::select(vec![
            "/tmp",
            "/etc/hostname",
            "/dev/null",
            "tmpfs",
            "proc",
            "#tmpfs",
            "#"
        ])
        .prop_map(str::to_string),
        path(),
    ];
    (
        dest,
        maybe(typ),
        prop::option::weighted(0.8, source),
        maybe(prop::collection::vec(option, 0..4)),
    )
        .prop_map(|(dest, typ, source, options)| {
            let mut m = serde_json::Map::new();
            m.insert("destination".into(), dest.into());
            put(&mut m, "type", typ);
            put(&mut m, "source", source);
            put(&mut m, "options", options);
            Value::Object(m)
        })
        .boxed()
}

/// The spec's namespaces: each kind absent, new, or joined by a path (real
/// namespace files of every kind, so that mismatches are seen, or anything).
fn namespaces() -> BoxedStrategy<Value> {
    let ns_path = prop_oneof![
        3 => prop::sample::select(vec![
            "/proc/self/ns/net", "/proc/self/ns/uts", "/proc/self/ns/ipc", "/proc/self/ns/pid",
            "/proc/self/ns/user", "/proc/self/ns/cgroup", "/proc/self/ns/time",
            "/proc/self/ns/mnt", "/proc/1/ns/net", "/dev/null",
            // Relative, yet a namespace from the test's working directory.
            "../../../../../../proc/self/ns/net", "../../../../../../proc/self/ns/uts",
        ])
        .prop_map(str::to_string),
        1 => path(),
    ];
    // None: absent; Some(None): new; Some(Some(p)): joined.
    let kind = move |present: f64| {
        prop::option::weighted(present, prop::option::weighted(0.3, ns_path.clone()))
    };
    (
        // Without a new mount namespace every spec is refused: mostly keep it.
        prop::option::weighted(
            0.95,
            prop::option::weighted(0.05, Just("/proc/self/ns/mnt")),
        ),
        [
            kind(0.8),
            kind(0.8),
            kind(0.8),
            kind(0.8),
            kind(0.4),
            kind(0.2),
            kind(0.3),
        ],
    )
        .prop_map(|(mnt, rest)| {
            let kinds = ["network", "pid", "ipc", "uts", "cgroup", "time", "user"];
            let mut out = Vec::new();
            let mnt = mnt.map(|p| p.map(str::to_string));
            for (typ, ns) in std::iter::once(("mount", mnt)).chain(kinds.into_iter().zip(rest)) {
                match ns {
                    None => {}
                    Some(None) => out.push(json!({ "type": typ })),
                    Some(Some(p)) => out.push(json!({ "type": typ, "path": p })),
                }
            }
            Value::Array(out)
        })
        .boxed()
}

fn id_mappings() -> BoxedStrategy<Value> {
    prop::collection::vec(
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(c, h, s)| json!({ "containerID": c, "hostID": h, "size": s })),
        0..3,
    )
    .prop_map(Value::Array)
    .boxed()
}

fn device() -> BoxedStrategy<Value> {
    let real = prop::sample::select(vec![
        ("/dev/null", "c", 1, 3),
        ("/dev/zero", "c", 1, 5),
        ("/dev/fuse", "c", 10, 229),
        ("/dev/null", "b", 1, 3),
        ("/dev/ptmx", "c", 5, 2),
        ("/dev/console", "c", 5, 1),
        ("/dev/pts/0", "c", 136, 0),
        ("/dev/loop0", "b", 7, 0),
        // The host's /dev/null, seen from the host's root; not from the rootfs.
        ("/../tmp/../dev/null", "c", 1, 3),
    ])
    .prop_map(|(p, t, ma, mi)| json!({ "path": p, "type": t, "major": ma, "minor": mi }));
    let any_device = (
        path(),
        prop::sample::select(vec!["c", "b", "u", "p"]),
        int(),
        int(),
    )
        .prop_map(|(p, t, ma, mi)| json!({ "path": p, "type": t, "major": ma, "minor": mi }));
    prop_oneof![2 => real, 1 => any_device].boxed()
}

fn device_rule() -> BoxedStrategy<Value> {
    (
        any::<bool>(),
        maybe(prop::sample::select(vec!["a", "b", "c", "u", "p"])),
        maybe(int()),
        maybe(int()),
        maybe(prop_oneof!["[rwm]{0,3}", text()]),
    )
        .prop_map(|(allow, typ, major, minor, access)| {
            let mut r = serde_json::Map::new();
            r.insert("allow".into(), allow.into());
            put(&mut r, "type", typ);
            put(&mut r, "major", major);
            put(&mut r, "minor", minor);
            put(&mut r, "access", access);
            Value::Object(r)
        })
        .boxed()
}

fn resources() -> BoxedStrategy<Value> {
    // CPU lists: short ones, ranges of any size (counted by the pct backend), or text.
    let range = (uint(), uint()).prop_map(|(a, b)| format!("{a}-{b}"));
    let cpuset = prop_oneof![
        "[0-9,-]{1,8}",
        prop::collection::vec(range, 1..3).prop_map(|r| r.join(",")),
        text(),
    ];
    let cpu = (
        maybe(uint()),
        maybe(int()),
        maybe(uint()),
        maybe(cpuset.clone()),
        maybe(cpuset),
    )
        .prop_map(|(shares, quota, period, cpus, mems)| {
            let mut c = serde_json::Map::new();
            put(&mut c, "shares", shares);
            put(&mut c, "quota", quota);
            put(&mut c, "period", period);
            put(&mut c, "cpus", cpus);
            put(&mut c, "mems", mems);
            Value::Object(c)
        });
    let memory = (
        maybe(int()),
        maybe(int()),
        maybe(int()),
        maybe(uint()),
        maybe(any::<bool>()),
    )
        .prop_map(|(limit, swap, reservation, swappiness, no_oom)| {
            let mut m = serde_json::Map::new();
            put(&mut m, "limit", limit);
            put(&mut m, "swap", swap);
            put(&mut m, "reservation", reservation);
            put(&mut m, "swappiness", swappiness);
            put(&mut m, "disableOOMKiller", no_oom);
            Value::Object(m)
        });
    let throttle =
        (int(), int(), uint()).prop_map(|(ma, mi, r)| json!({"major": ma, "minor": mi, "rate": r}));
    let block_io = (
        maybe(any::<u16>()),
        prop::collection::vec(
            (int(), int(), any::<u16>())
                .prop_map(|(ma, mi, w)| json!({"major": ma, "minor": mi, "weight": w})),
            0..2,
        ),
        prop::collection::vec(throttle, 0..2),
    )
        .prop_map(|(weight, weight_device, read_bps)| {
            let mut b = serde_json::Map::new();
            put(&mut b, "weight", weight);
            b.insert("weightDevice".into(), weight_device.into());
            b.insert("throttleReadBpsDevice".into(), read_bps.into());
            Value::Object(b)
        });
    (
        maybe(cpu),
        maybe(memory),
        maybe(int()),
        maybe(block_io),
        maybe(prop::collection::vec(device_rule(), 0..3)),
    )
        .prop_map(|(cpu, memory, pids, block_io, devices)| {
            let mut r = serde_json::Map::new();
            put(&mut r, "cpu", cpu);
            put(&mut r, "memory", memory);
            put(&mut r, "pids", pids.map(|l| json!({ "limit": l })));
            put(&mut r, "blockIO", block_io);
            put(&mut r, "devices", devices);
            Value::Object(r)
        })
        .boxed()
}

/// A patch for the default spec touching any of the fields the translations read.
fn spec_patch() -> BoxedStrategy<Value> {
    let process = (maybe(text()), maybe(any::<i32>())).prop_map(|(profile, oom)| {
        let mut p = serde_json::Map::new();
        put(&mut p, "apparmorProfile", profile);
        put(&mut p, "oomScoreAdj", oom);
        Value::Object(p)
    });
    let linux = (
        maybe(namespaces()),
        maybe(prop::collection::btree_map(text(), text(), 0..3)),
        maybe(path()),
        maybe(prop::collection::vec(device(), 0..3)),
        maybe(resources()),
        maybe((id_mappings(), id_mappings())),
    )
        .prop_map(|(ns, sysctl, cgroups_path, devices, resources, maps)| {
            let mut l = serde_json::Map::new();
            put(&mut l, "namespaces", ns);
            put(&mut l, "sysctl", sysctl.map(|m| json!(m)));
            put(&mut l, "cgroupsPath", cgroups_path);
            put(&mut l, "devices", devices);
            put(&mut l, "resources", resources);
            if let Some((uid, gid)) = maps {
                l.insert("uidMappings".into(), uid);
                l.insert("gidMappings".into(), gid);
            }
            Value::Object(l)
        });
    (
        maybe(text()),
        process,
        maybe(prop::collection::vec(mount(), 0..4)),
        maybe(any::<bool>()),
        linux,
        maybe(prop::collection::btree_map(text(), text(), 0..3)),
    )
        .prop_map(|(hostname, process, mounts, append, linux, annotations)| {
            let mut s = serde_json::Map::new();
            put(&mut s, "hostname", hostname);
            s.insert("process".into(), process);
            s.insert("linux".into(), linux);
            put(&mut s, "annotations", annotations.map(|m| json!(m)));
            if let Some(mounts) = mounts {
                // Added to the default mounts or instead of them (no /dev of its own).
                let mut all = match append {
                    Some(true) | None => serde_json::to_value(Spec::default().mounts())
                        .ok()
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default(),
                    Some(false) => Vec::new(),
                };
                all.extend(mounts);
                s.insert("mounts".into(), Value::Array(all));
            }
            Value::Object(s)
        })
        .boxed()
}

// ---------------------------------------------------------------------------
// 1. spec -> LXC config
// ---------------------------------------------------------------------------

/// Keys `translate` (translate.rs) writes as they are.
const LXC_KEYS: &[&str] = &[
    "lxc.rootfs.path",
    "lxc.init.cmd",
    "lxc.console.path",
    "lxc.tty.max",
    "lxc.pty.max",
    "lxc.autodev",
    "lxc.apparmor.profile",
    "lxc.proc.oom_score_adj",
    "lxc.rootfs.options",
    "lxc.uts.name",
    "lxc.cgroup.relative",
    "lxc.cgroup.dir.container",
    "lxc.cgroup.dir.monitor",
    "lxc.mount.entry",
    "lxc.namespace.keep",
    "lxc.namespace.share.net",
    "lxc.namespace.share.pid",
    "lxc.namespace.share.ipc",
    "lxc.namespace.share.uts",
    "lxc.namespace.share.cgroup",
    "lxc.namespace.share.time",
    "lxc.namespace.share.user",
    "lxc.idmap",
];

/// Controller files cgroups.rs sets, after `lxc.cgroup.` (v1).
const CGROUP_V1_FILES: &[&str] = &[
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.swappiness",
    "memory.oom_control",
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "devices.allow",
    "devices.deny",
    "blkio.weight",
    "blkio.weight_device",
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

/// ... and after `lxc.cgroup2.` (unified).
const CGROUP_V2_FILES: &[&str] = &[
    "memory.max",
    "memory.swap.max",
    "memory.low",
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "devices.allow",
    "devices.deny",
    "io.weight",
    "io.max",
];

fn allowed_lxc_key(key: &str) -> bool {
    if LXC_KEYS.contains(&key) {
        return true;
    }
    if let Some(file) = key.strip_prefix("lxc.cgroup2.") {
        return CGROUP_V2_FILES.contains(&file);
    }
    if let Some(file) = key.strip_prefix("lxc.cgroup.") {
        return CGROUP_V1_FILES.contains(&file);
    }
    // A sysctl's name: LXC turns its dots into slashes under /proc/sys.
    key.strip_prefix("lxc.sysctl.").is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    })
}

/// Keys that would run, read or expose something on the host, or set up the
/// container other than the spec says: never written, whatever the spec holds.
fn forbidden_lxc_key(key: &str) -> bool {
    key.starts_with("lxc.hook")
        || key == "lxc.include"
        || key == "lxc.mount.auto"
        || key == "lxc.mount.fstab"
        || key.starts_with("lxc.environment")
}

fn check_lxc_config(t: &Translation) -> Result<(), TestCaseError> {
    let text = &t.config;
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    let entries = parse_lxc(text);
    // One entry per line: no value continues on, or hides, a line of its own.
    prop_assert_eq!(entries.len(), lines.len(), "{}", text);
    for (line, (key, value)) in lines.iter().zip(&entries) {
        // LXC reads back exactly what was written: nothing trimmed or dequoted.
        prop_assert_eq!(*line, format!("{key} = {value}"), "{}", text);
        prop_assert!(!forbidden_lxc_key(key), "{key} in\n{text}");
        prop_assert!(allowed_lxc_key(key), "unexpected key {key} in\n{text}");
    }
    let values = |k: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let mp = t.mount_point.as_str();
    prop_assert!(mp == "/.nexcage" || mp == "/dev/.nexcage", "{mp}");
    let init = format!("{mp}/{BINARY} init --dir {mp}");
    prop_assert_eq!(values("lxc.init.cmd"), vec![init.as_str()], "{}", text);
    // Init runs unconfined; the spec's profile is the workload's (applied by the holder).
    prop_assert_eq!(
        values("lxc.apparmor.profile"),
        vec!["unconfined"],
        "{}",
        text
    );
    for entry in values("lxc.mount.entry") {
        check_mount_entry(entry)?;
    }
    for (key, value) in &entries {
        // LXC reads any other value as a container's name (`[lxcpath/]name`), whose
        // namespace it would join instead of the file checked.
        if key.starts_with("lxc.namespace.share.") {
            prop_assert!(value.starts_with('/'), "{key} = {value}");
        }
    }
    Ok(())
}

/// Options of LXC's own in a mount entry, which it finds with `strstr` anywhere in
/// the options field (conf.c `parse_lxc_mount_attrs`).
const LXC_MOUNT_OPTIONS: &[&str] = &[
    "create=dir",
    "create=file",
    "optional",
    "relative",
    "idmap=",
];

/// LXC hands the entries to getmntent, one line each: fields split at blanks and
/// tabs only (spaces in paths are written `\040`), a line starting with `#` a
/// comment, skipped.
fn check_mount_entry(entry: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !entry.starts_with('#'),
        "mount entry read as a comment: {:?}",
        entry
    );
    let fields: Vec<&str> = entry.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
    // Source, target, type, options, dump, pass.
    prop_assert_eq!(fields.len(), 6, "mount entry {:?}", entry);
    // LXC joins the target to the rootfs as it is, and makes what is missing of it
    // (create=) before it mounts: a `..` would reach the host outside the rootfs.
    prop_assert!(
        !fields[1].split('/').any(|c| c == ".."),
        "mount target outside the rootfs: {:?}",
        entry
    );
    let options = fields[3];
    for name in LXC_MOUNT_OPTIONS {
        let Some(at) = options.find(name) else {
            continue;
        };
        // What LXC acts on is one of the options nexcage itself writes, whole.
        let option = options[at..].split(',').next().unwrap_or_default();
        prop_assert!(
            (at == 0 || options[..at].ends_with(','))
                && ["create=dir", "create=file", "idmap=container"].contains(&option),
            "LXC reads {:?} in mount entry {:?}",
            name,
            entry
        );
    }
    Ok(())
}

/// The rootfs, runtime directory and binary under a fresh temporary directory; the
/// names are anything, and nothing need exist (translate only writes them down).
struct Dirs {
    _tmp: tempfile::TempDir,
    rootfs: PathBuf,
    runtime_dir: PathBuf,
    binary: PathBuf,
}

fn dirs(rootfs_name: &str, runtime_name: &str) -> Dirs {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    Dirs {
        rootfs: tmp.path().join(rootfs_name),
        runtime_dir: tmp.path().join(runtime_name),
        binary: tmp.path().join(BINARY),
        _tmp: tmp,
    }
}

fn lxc_config() -> BoxedStrategy<LxcConfig> {
    (any::<bool>(), any::<u32>(), any::<u32>())
        .prop_map(|(unprivileged, id_base, id_count)| LxcConfig {
            unprivileged,
            id_base,
            id_count,
            ..LxcConfig::default()
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lxc_translation_writes_only_what_it_means(
        patch in spec_patch(),
        cfg in lxc_config(),
        cid in id(),
        names in (prop_oneof![3 => Just("rootfs".to_string()), 1 => text()],
                  prop_oneof![3 => Just("inside".to_string()), 1 => text()]),
        bind_binary in any::<bool>(),
    ) {
        let s = spec(&patch);
        let d = dirs(&names.0, &names.1);
        let paths = Paths {
            rootfs: &d.rootfs,
            runtime_dir: &d.runtime_dir,
            binary: bind_binary.then_some(d.binary.as_path()),
        };
        if let Ok(t) = translate(&s, &cfg, &cid, &paths) {
            check_lxc_config(&t)?;
        }
    }
}

// ---------------------------------------------------------------------------
// 2. spec -> pct options
// ---------------------------------------------------------------------------

fn pct_config() -> BoxedStrategy<PctConfig> {
    (
        any::<bool>(),
        prop::option::of(Just("name=eth0,bridge=vmbr0,ip=dhcp")),
        prop::sample::subsequence(vec!["vmid"], 0..=1),
    )
        .prop_map(|(unprivileged, net0, allowed)| {
            let mut cfg: PctConfig =
                serde_json::from_str("{}").expect("every pct setting has a default");
            cfg.unprivileged = unprivileged;
            cfg.net0 = net0.map(str::to_string);
            cfg.allowed_annotations = allowed.into_iter().map(str::to_string).collect();
            cfg
        })
        .boxed()
}

fn pct_annotations() -> BoxedStrategy<BTreeMap<String, String>> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "org.nexcage.pct.vmid", "org.nexcage.pct.storage", "org.nexcage.pct.rootfs_size",
        ])
        .prop_map(str::to_string),
        1 => text().prop_map(|t| format!("org.nexcage.pct.{t}")),
        1 => text(),
    ];
    let value = prop_oneof![
        uint().prop_map(|n| n.to_string()),
        (100u64..1_000_000).prop_map(|n| n.to_string()),
        "[a-z][a-z0-9._-]{0,8}",
        text(),
    ];
    // Mostly none: any not allowed by the backend's config refuses the container.
    prop_oneof![
        2 => Just(BTreeMap::new()),
        1 => prop::collection::btree_map(key, value, 1..3),
    ]
    .boxed()
}

/// A bind mount for pct: its source, when `in_tmp`, a directory made under the
/// case's temporary directory with that name (pct maps directories only).
fn pct_mount() -> BoxedStrategy<(bool, String, String, bool, bool)> {
    (any::<bool>(), text(), path(), any::<bool>(), any::<bool>()).boxed()
}

fn check_pct_options(args: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(args.len().is_multiple_of(2), "{:?}", args);
    let mut names = Vec::new();
    for pair in args.chunks(2) {
        let (name, value) = (&pair[0], &pair[1]);
        let bare = name.strip_prefix("--").unwrap_or("");
        prop_assert!(
            !bare.is_empty()
                && bare
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "option {:?} in {:?}",
            name,
            args
        );
        prop_assert!(!names.contains(&bare), "{} twice in {:?}", name, args);
        names.push(bare);
        // pct's argv: a value like an option would be read as one; a control
        // character ends the `name: value` line in the CT's config.
        prop_assert!(!value.chars().any(char::is_control), "{} {:?}", name, value);
        prop_assert!(!value.starts_with('-'), "{} {:?}", name, value);
        if bare == "hostname" {
            prop_assert!(
                !value.is_empty()
                    && value.len() <= 63
                    && !value.starts_with('-')
                    && !value.ends_with('-')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "hostname {:?}",
                value
            );
        }
        if let Some(n) = bare.strip_prefix("mp") {
            prop_assert!(n.parse::<usize>().is_ok(), "{}", name);
            // A PVE property string: the volume, then only the properties meant.
            let mut parts = value.split(',');
            let volume = parts.next().unwrap_or("");
            prop_assert!(
                !volume.is_empty() && !volume.contains('='),
                "{} {:?}",
                name,
                value
            );
            let rest: Vec<&str> = parts.collect();
            prop_assert_eq!(
                rest.iter().filter(|p| p.starts_with("mp=")).count(),
                1,
                "{} {:?}",
                name,
                value
            );
            for part in rest {
                // PVE's mount options are only those it knows.
                let known_options = part.strip_prefix("mountoptions=").is_some_and(|list| {
                    list.split(';')
                        .all(|o| ["noatime", "nodev", "noexec", "nosuid"].contains(&o))
                });
                prop_assert!(
                    part.starts_with("mp=") || part == "ro=1" || known_options,
                    "{} {:?}",
                    name,
                    value
                );
                let (_, v) = part.split_once('=').unwrap_or_default();
                prop_assert!(!v.is_empty() && !v.contains('='), "{} {:?}", name, value);
            }
        }
    }
    // mp0, mp1, ... in order, from 0.
    let mps: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("mp"))
        .collect();
    let want: Vec<String> = (0..mps.len()).map(|i| format!("mp{i}")).collect();
    prop_assert_eq!(mps, want.iter().map(String::as_str).collect::<Vec<_>>());
    Ok(())
}

/// The raw `lxc.*` lines added to a Proxmox CT's config: only keys PVE passes through
/// to LXC (`parse_pct_config`: `lxc.mount.entry`, `lxc.cgroup2?.*`) and that nexcage
/// means, each read back as written, mount entries as for the lxc backend.
fn check_pct_raw_keys(raw: &LxcConf) -> Result<(), TestCaseError> {
    let text = raw.text();
    let entries = parse_lxc(&text);
    prop_assert_eq!(entries.len(), raw.entries().len(), "{}", text);
    for (key, value) in &entries {
        prop_assert!(
            key == "lxc.mount.entry"
                || ((key.starts_with("lxc.cgroup.") || key.starts_with("lxc.cgroup2."))
                    && allowed_lxc_key(key)),
            "unexpected raw key {key} in\n{text}"
        );
        if key == "lxc.mount.entry" {
            check_mount_entry(value)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pct_options_come_in_clean_pairs(
        patch in spec_patch(),
        annotations in pct_annotations(),
        mounts in prop::collection::vec(pct_mount(), 0..4),
        cfg in pct_config(),
        cid in prop_oneof![3 => id(), 1 => text()],
        runtime in prop_oneof![3 => Just("runtime".to_string()), 1 => text()],
    ) {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let mut s = spec(&patch);
        let mut all = s.mounts().clone().unwrap_or_default();
        for (in_tmp, name, dest, ro, typ_bind) in mounts {
            let source = if in_tmp {
                // One directory level under the case's own (no '/': never outside it).
                let dir = tmp.path().join(name.replace('/', "_"));
                // Names the file system refuses (NUL) stay as they are: not a directory.
                let _ = std::fs::create_dir_all(&dir);
                dir
            } else {
                PathBuf::from(name)
            };
            let mut options = vec!["rbind".to_string()];
            if ro {
                options.push("ro".into());
            }
            let m = serde_json::from_value(json!({
                "destination": dest,
                "type": if typ_bind { "bind" } else { "none" },
                "source": source,
                "options": options,
            }))
            .expect("a mount");
            all.push(m);
        }
        s.set_mounts(Some(all));
        let mut ann = s.annotations().clone().unwrap_or_default();
        ann.extend(annotations);
        s.set_annotations(Some(ann));

        if let Ok(settings) = settings(&s, &cfg) {
            let runtime_dir = tmp.path().join(runtime);
            let _ = &settings;
            let rootfs = tmp.path().join("rootfs");
            let owner = nexcage::backend::proxmox::Owner {
                token: "0123456789abcdef0123456789abcdef".into(),
                place: "node:/run/nexcage/backends/pve".into(),
            };
            let idmapped = cfg.unprivileged;
            if let Ok((raw, mount_points)) = raw_config(&s, &rootfs) {
                check_pct_raw_keys(&raw)?;
                let place = Placement {
                    rootfs: &rootfs,
                    idmapped_rootfs: idmapped,
                    runtime_dir: &runtime_dir,
                    mount_points: &mount_points,
                };
                if let Ok(args) = create_options(&s, &cfg, &cid, &owner, &place) {
                    check_pct_options(&args)?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. nexcage's config file and routing
// ---------------------------------------------------------------------------

/// Backend names: mostly two (so that the default, rules and annotations often
/// name a defined backend and the config loads), or anything.
fn backend_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec!["crun", "runc"]).prop_map(str::to_string),
        1 => text(),
    ]
    .boxed()
}

/// Globs, valid or not.
fn glob() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "*", "test-*", "[", "[!]", "[]]", "**", "a[b-", "?", "\\"
        ])
        .prop_map(str::to_string),
        "[a-z*?\\[\\]!{}-]{0,8}",
        text(),
    ]
    .boxed()
}

/// Any JSON, its object keys mostly the config's own.
fn any_json() -> BoxedStrategy<Value> {
    let key = prop_oneof![
        3 => prop::sample::select(vec![
            "default", "backends", "annotation_backends", "rules", "type", "path", "flavor",
            "backend", "id", "annotations", "storage", "lxcpath", "unprivileged", "id_base",
            "id_count", "allowed_annotations", "template_dir", "net0", "pct", "pvesh",
            "rootfs_size", "template_storage",
        ])
        .prop_map(str::to_string),
        1 => text(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        int().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
        prop::sample::select(vec!["oci", "pct", "lxc", "crun", "runc", "/bin/true"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn backend_json() -> BoxedStrategy<Value> {
    // Mostly binaries that exist: every backend must resolve for the file to load.
    let binary = prop_oneof![
        6 => prop::sample::select(vec!["/bin/true", "true", "crun"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["/nonexistent", "bin/true", "", "/"])
            .prop_map(str::to_string),
        1 => text(),
    ];
    let small = prop_oneof![3 => 0u32..300_000, 1 => any::<u32>()];
    prop_oneof![
        4 => (
            binary.clone(),
            maybe(prop_oneof![
                4 => prop::sample::select(vec!["crun", "runc"]),
                1 => Just("youki"),
            ])
        )
            .prop_map(|(path, flavor)| json!({"type": "oci", "path": path, "flavor": flavor})),
        2 => (
            binary,
            prop::collection::vec(
                prop_oneof![
                    3 => prop::sample::select(PctConfig::OVERRIDABLE).prop_map(str::to_string),
                    1 => text(),
                ],
                0..2,
            ),
        )
            .prop_map(|(bin, allowed)| json!({
                "type": "pct", "pct": bin, "pvesh": "/bin/true", "allowed_annotations": allowed,
            })),
        2 => (maybe(path()), small.clone(), small, any::<bool>()).prop_map(
            |(lxcpath, base, count, unprivileged)| json!({
                "type": "lxc", "lxcpath": lxcpath, "id_base": base, "id_count": count,
                "unprivileged": unprivileged,
            })
        ),
        1 => any_json(),
    ]
    .boxed()
}

fn rule_json() -> BoxedStrategy<Value> {
    (
        backend_name(),
        maybe(glob()),
        prop::collection::btree_map(text(), glob(), 0..2),
    )
        .prop_map(|(backend, id, annotations)| {
            json!({"backend": backend, "id": id, "annotations": annotations})
        })
        .boxed()
}

/// A config file's text: mostly the right shape with hostile values, sometimes
/// any JSON, then sometimes cut short or with a character dropped in.
fn config_text() -> BoxedStrategy<String> {
    let shaped = (
        // Mostly one of the backends defined (else the file is refused outright).
        prop_oneof![
            3 => any::<prop::sample::Index>().prop_map(Ok),
            1 => backend_name().prop_map(Err),
        ],
        prop_oneof![
            1 => Just(BTreeMap::new()),
            7 => prop::collection::btree_map(backend_name(), backend_json(), 1..3),
        ],
        maybe(prop::collection::vec(backend_name(), 0..3)),
        maybe(prop::collection::vec(rule_json(), 0..3)),
    )
        .prop_map(|(default, backends, annotation_backends, rules)| {
            let default = match default {
                Ok(i) if !backends.is_empty() => {
                    i.get(&backends.keys().collect::<Vec<_>>()).to_string()
                }
                Ok(_) => "crun".to_string(),
                Err(name) => name,
            };
            let mut c = serde_json::Map::new();
            c.insert("default".into(), default.into());
            c.insert("backends".into(), json!(backends));
            put(&mut c, "annotation_backends", annotation_backends);
            put(&mut c, "rules", rules);
            Value::Object(c)
        });
    let edit = prop_oneof![
        6 => Just(None),
        1 => (any::<prop::sample::Index>(), Just(None::<char>)).prop_map(Some),
        1 => (any::<prop::sample::Index>(), prop::sample::select(DANGEROUS).prop_map(Some))
            .prop_map(Some),
    ];
    (prop_oneof![4 => shaped, 1 => any_json()], edit)
        .prop_map(|(v, edit)| {
            let mut text = v.to_string();
            if let Some((at, insert)) = edit {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                match insert {
                    Some(c) => text.insert(i, c),
                    None => text.truncate(i),
                }
            }
            text
        })
        .boxed()
}

/// What a loaded config guarantees the router (config.rs `validate`).
fn check_loaded(c: &Config) -> Result<(), TestCaseError> {
    prop_assert!(c.backends.contains_key(&c.default));
    for name in c.backends.keys() {
        prop_assert!(
            nexcage::ids::validate(name).is_ok(),
            "backend name {name:?}"
        );
    }
    for name in &c.annotation_backends {
        prop_assert!(c.backends.contains_key(name));
    }
    for rule in &c.rules {
        prop_assert!(c.backends.contains_key(&rule.backend));
        prop_assert!(rule.id.is_some() || !rule.annotations.is_empty());
    }
    Ok(())
}

/// The annotation picks a backend only if the config lets it; a bad one is an error,
/// never a fallback to rules or the default.
fn check_route(
    c: &Config,
    id: &str,
    annotations: &HashMap<String, String>,
) -> Result<(), TestCaseError> {
    let result = route(c, id, annotations);
    match (annotations.get(BACKEND_ANNOTATION), result) {
        (Some(wanted), Ok(r)) => {
            prop_assert_eq!(&r.reason, &Reason::Annotation);
            prop_assert_eq!(&r.backend, wanted);
            prop_assert!(c.annotation_backends.contains(wanted));
            prop_assert!(c.backends.contains_key(wanted));
        }
        (Some(wanted), Err(_)) => prop_assert!(
            !c.annotation_backends.contains(wanted) || !c.backends.contains_key(wanted)
        ),
        (None, Ok(r)) => match r.reason {
            Reason::Default => prop_assert_eq!(&r.backend, &c.default),
            Reason::Rule(i) => {
                prop_assert_eq!(Some(&r.backend), c.rules.get(i).map(|r| &r.backend))
            }
            Reason::Annotation => prop_assert!(false, "annotation route without the annotation"),
        },
        (None, Err(e)) => prop_assert!(false, "no annotation, yet {e}"),
    }
    Ok(())
}

fn annotations() -> BoxedStrategy<HashMap<String, String>> {
    let key = prop_oneof![
        2 => Just(BACKEND_ANNOTATION.to_string()),
        1 => prop::sample::select(vec!["tier", "zone", "io.kubernetes.cri.container-type"])
            .prop_map(str::to_string),
        1 => text(),
    ];
    let value = prop_oneof![3 => backend_name(), 1 => glob(), 1 => text()];
    prop::collection::hash_map(key, value, 0..4).boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_file_never_panics(
        body in config_text(),
        cid in prop_oneof![id(), text()],
        ann in annotations(),
    ) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("config.json");
        std::fs::write(&path, &body).expect("write the config");
        if let Ok(c) = load_file(&path) {
            check_loaded(&c)?;
            check_route(&c, &cid, &ann)?;
        }
    }

    /// `route` on a config built directly, checked or not: globs that do not
    /// compile, rules naming unknown backends.
    #[test]
    fn routing_never_panics(
        default in backend_name(),
        names in prop::collection::btree_set(backend_name(), 0..3),
        annotation_backends in prop::collection::vec(backend_name(), 0..3),
        rules in prop::collection::vec(
            (backend_name(), maybe(glob()), prop::collection::btree_map(text(), glob(), 0..2)),
            0..4,
        ),
        cid in prop_oneof![id(), text()],
        ann in annotations(),
    ) {
        let backends = names
            .into_iter()
            .map(|n| (n, BackendConfig::Lxc(LxcConfig::default())))
            .collect();
        let rules = rules
            .into_iter()
            .map(|(backend, id, annotations)| Rule { backend, id, annotations })
            .collect();
        let c = Config { default, backends, annotation_backends, rules };
        check_route(&c, &cid, &ann)?;
    }
}

// ---------------------------------------------------------------------------
// 4. container ids
// ---------------------------------------------------------------------------

/// runc's id charset and a few characters outside it.
const ID_CHARS: &[char] = &[
    'a', 'z', 'A', 'Z', '0', '9', '_', '+', '.', '-', '/', ' ', '\0', '\n', ':', 'é', '*', '~',
];

fn any_id() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(ID_CHARS), 0..8)
            .prop_map(|c| c.into_iter().collect()),
        1 => prop::collection::vec(prop::sample::select(ID_CHARS), 250..260)
            .prop_map(|c| c.into_iter().collect()),
        1 => (250usize..260).prop_map(|n| "a".repeat(n)),
        1 => prop::sample::select(vec![".", "..", "-", "-x", "--help", "a", "+", "_"])
            .prop_map(str::to_string),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ids_are_runc_ids(id in any_id()) {
        let runc = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
        let expected = runc && !id.starts_with('-') && id != "." && id != ".." && id.len() <= 255;
        prop_assert_eq!(nexcage::ids::validate(&id).is_ok(), expected, "{:?}", id);
        if expected {
            // An id is one directory entry under the root, never another place.
            let root = Path::new("/run/nexcage");
            let p = root.join(&id);
            prop_assert_eq!(p.parent(), Some(root));
            prop_assert_eq!(p.file_name().and_then(|n| n.to_str()), Some(id.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------
// 5. the LXC config writer
// ---------------------------------------------------------------------------

fn lxc_key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "lxc.uts.name", "lxc.mount.entry", "lxc.apparmor.profile",
            "lxc.sysctl.net.ipv4.ip_forward",
        ])
        .prop_map(str::to_string),
        2 => nasty().prop_map(|k| format!("lxc.{k}")),
        1 => nasty(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lxc_conf_set_refuses_or_round_trips(key in lxc_key(), value in text()) {
        let mut c = LxcConf::default();
        match c.set(&key, &value) {
            Ok(()) => {
                // getmntent, which reads the mount entries, skips `#` lines.
                prop_assert!(key != "lxc.mount.entry" || !value.starts_with('#'));
                prop_assert_eq!(c.entries(), &[(key, value)][..]);
                prop_assert_eq!(parse_lxc(&c.text()), c.entries());
            }
            Err(_) => prop_assert!(c.entries().is_empty()),
        }
    }

    #[test]
    fn lxc_conf_sequences_round_trip(pairs in prop::collection::vec((lxc_key(), text()), 0..8)) {
        let mut c = LxcConf::default();
        let mut accepted = Vec::new();
        for (key, value) in pairs {
            // A refusal leaves what was written before as it was.
            if c.set(&key, &value).is_ok() {
                accepted.push((key, value));
            }
            prop_assert_eq!(c.entries(), &accepted[..]);
        }
        prop_assert_eq!(parse_lxc(&c.text()), accepted);
    }
}
