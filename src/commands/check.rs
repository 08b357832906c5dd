//! `check [--format json]`: whether each configured backend can work on this host,
//! before a container finds out. One line per check: OK, or FAIL with the reason and
//! the fix; exit 0 only when every check passes. Nothing is changed or started; the
//! only programs run are the backends' own (`--version`, `pvesh get /cluster/nextid`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::backend::Exit;
use crate::cli::{CheckArgs, GlobalOpts};
use crate::config::{self, BackendConfig, LxcConfig, PctConfig, QmConfig, find_binary};
use crate::error::{Error, Result};

#[derive(Debug, Serialize)]
struct Check {
    /// The backend's name, or `nexcage` for what all of them need.
    backend: String,
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// The checks of one backend.
struct Checks<'a> {
    backend: &'a str,
    out: Vec<Check>,
}

impl<'a> Checks<'a> {
    fn new(backend: &'a str) -> Checks<'a> {
        Checks {
            backend,
            out: Vec::new(),
        }
    }

    fn ok(&mut self, check: &'static str, detail: impl Into<String>) {
        self.push(check, true, detail.into(), None);
    }

    fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(check, false, detail.into(), Some(fix.into()));
    }

    fn push(&mut self, check: &'static str, ok: bool, detail: String, fix: Option<String>) {
        self.out.push(Check {
            backend: self.backend.to_string(),
            check,
            ok,
            detail,
            fix,
        });
    }

    /// A binary the backend runs: found, and what `--version` says (Proxmox's tools
    /// have no such flag).
    fn binary(&mut self, check: &'static str, path: &Path, package: &str) -> Option<PathBuf> {
        let proxmox = package.starts_with("Proxmox");
        match find_binary(path) {
            Some(found) if proxmox => {
                self.ok(check, found.display().to_string());
                Some(found)
            }
            Some(found) => {
                let version = version_of(&found);
                self.ok(check, format!("{} ({version})", found.display()));
                Some(found)
            }
            None => {
                self.fail(
                    check,
                    format!("{} not found", path.display()),
                    format!("install {package}, or set the backend's path to it"),
                );
                None
            }
        }
    }

    fn file(&mut self, check: &'static str, path: &Path, fix: &str) {
        if path.is_file() {
            self.ok(check, path.display().to_string());
        } else {
            self.fail(check, format!("{} not found", path.display()), fix);
        }
    }

    fn bridge(&mut self, bridge: &str) {
        if Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .is_dir()
        {
            self.ok("bridge", bridge.to_string());
        } else {
            self.fail(
                "bridge",
                format!("no bridge {bridge} on this host"),
                "create it (Proxmox: System > Network), or change the backend's setting",
            );
        }
    }

    /// `pvesh get /cluster/nextid` answers: the node's API and cluster filesystem work.
    fn pvesh(&mut self, pvesh: &Path) {
        let Some(pvesh) = self.binary("pvesh", pvesh, "Proxmox VE (pve-manager)") else {
            return;
        };
        match run(&pvesh, &["get", "/cluster/nextid"]) {
            Ok(id) => self.ok(
                "cluster",
                format!("next vmid {}", id.trim().trim_matches('"')),
            ),
            Err(why) => self.fail(
                "cluster",
                format!("pvesh get /cluster/nextid: {why}"),
                "check that pve-cluster (pmxcfs) runs: systemctl status pve-cluster",
            ),
        }
    }
}

pub fn check(global: &GlobalOpts, a: &CheckArgs) -> Result<Exit> {
    let mut all = Vec::new();
    let mut general = Checks::new("nexcage");
    // The whole config as `create` reads it; then each backend on its own.
    match config::load(global.config.as_deref()) {
        Ok(loaded) => general.ok("config", loaded.source.to_string()),
        Err(e) => general.fail("config", e.to_string(), "correct the configuration file"),
    }
    let loaded = config::load_unresolved(global.config.as_deref());
    cgroups(&mut general);
    all.append(&mut general.out);
    if let Ok(loaded) = loaded {
        for (name, backend) in &loaded.config.backends {
            let mut checks = Checks::new(name);
            match backend {
                BackendConfig::Oci { path, .. } => oci(&mut checks, path),
                BackendConfig::Lxc(cfg) => lxc(&mut checks, cfg),
                BackendConfig::Pct(cfg) => pct(&mut checks, cfg),
                BackendConfig::Qm(cfg) => qm(&mut checks, cfg),
            }
            all.append(&mut checks.out);
        }
    }
    let failed = all.iter().any(|c| !c.ok);
    if a.format == "json" {
        let text = serde_json::to_string_pretty(&all).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{text}");
    } else {
        for c in &all {
            let word = if c.ok { "OK  " } else { "FAIL" };
            match &c.fix {
                Some(fix) => println!(
                    "{word} {} {}: {} (fix: {fix})",
                    c.backend, c.check, c.detail
                ),
                None => println!("{word} {} {}: {}", c.backend, c.check, c.detail),
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// crun refuses a hybrid layout whose cgroup2 holds a controller v1 also needs
/// (hugetlb on Debian 12 without systemd): each controller v1 lacks is named.
fn cgroups(c: &mut Checks) {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let Ok(held) = std::fs::read_to_string(unified) else {
        let layout = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "cgroup v2"
        } else {
            "cgroup v1"
        };
        c.ok("cgroups", layout);
        return;
    };
    let stolen: Vec<&str> = held
        .split_whitespace()
        .filter(|ctl| {
            !Path::new("/sys/fs/cgroup").join(ctl).exists() && *ctl != "misc" && *ctl != "rdma"
        })
        .collect();
    if stolen.is_empty() {
        c.ok(
            "cgroups",
            "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)",
        );
    } else {
        let first = stolen[0];
        c.fail(
            "cgroups",
            format!(
                "hybrid, and cgroup2 holds {} that no v1 hierarchy has (crun refuses that)",
                stolen.join(", ")
            ),
            format!(
                "mkdir -p /sys/fs/cgroup/{first} && mount -t cgroup -o {first} {first} /sys/fs/cgroup/{first}"
            ),
        );
    }
}

fn oci(c: &mut Checks, path: &Path) {
    let package = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the runtime".into());
    c.binary("runtime", path, &package);
}

/// The lxc-* tools the backend runs.
const LXC_TOOLS: [&str; 5] = [
    "lxc-start",
    "lxc-stop",
    "lxc-info",
    "lxc-freeze",
    "lxc-unfreeze",
];

fn lxc(c: &mut Checks, cfg: &LxcConfig) {
    let missing: Vec<&str> = LXC_TOOLS
        .iter()
        .copied()
        .filter(|t| find_binary(Path::new(t)).is_none())
        .collect();
    if missing.is_empty() {
        let start = find_binary(Path::new("lxc-start")).unwrap_or_default();
        c.ok("lxc", format!("lxc-* tools ({})", version_of(&start)));
    } else {
        c.fail(
            "lxc",
            format!("{} not found", missing.join(", ")),
            "apt install lxc",
        );
    }
    if let Some(path) = &cfg.lxcpath {
        let existing = path.ancestors().find(|p| p.exists());
        match existing {
            Some(p) if p.is_dir() => c.ok("lxcpath", path.display().to_string()),
            _ => c.fail(
                "lxcpath",
                format!("{}: no directory to make it in", path.display()),
                "set lxcpath to a directory on a local filesystem",
            ),
        }
    }
    if cfg.unprivileged {
        idmapped_mounts(c);
    }
}

/// Unprivileged containers keep the bundle as it is through id-mapped mounts
/// (mount_setattr, Linux 5.12).
fn idmapped_mounts(c: &mut Checks) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (5, 12) {
        c.ok("idmapped mounts", format!("Linux {release}"));
    } else {
        c.fail(
            "idmapped mounts",
            format!("Linux {release} has no id-mapped mounts (5.12 and later)"),
            "upgrade the kernel, or set unprivileged to false",
        );
    }
}

fn pct(c: &mut Checks, cfg: &PctConfig) {
    c.binary("pct", &cfg.pct, "Proxmox VE (pve-container)");
    c.pvesh(&cfg.pvesh);
    if cfg.config_dir.is_dir() {
        c.ok("config dir", cfg.config_dir.display().to_string());
    } else {
        c.fail(
            "config dir",
            format!("{} is not there", cfg.config_dir.display()),
            "point config_dir at the node's CT configs (/etc/pve/lxc, pmxcfs mounted)",
        );
    }
    if let Some(bridge) = cfg
        .net0
        .as_deref()
        .and_then(|n| n.split(',').find_map(|kv| kv.strip_prefix("bridge=")))
    {
        c.bridge(bridge);
    }
    if cfg.unprivileged {
        idmapped_mounts(c);
    }
}

fn qm(c: &mut Checks, cfg: &QmConfig) {
    c.binary("qm", &cfg.qm, "Proxmox VE (qemu-server)");
    c.pvesh(&cfg.pvesh);
    c.file(
        "kernel",
        &cfg.kernel.join("vmlinuz"),
        "unpack a guest kernel there: hack/vm/get-kernel.sh DIR",
    );
    c.file(
        "kernel modules",
        &cfg.kernel.join("modules/modules.dep"),
        "the kernel's lib/modules/<version> as modules/, depmod'ed (hack/vm/get-kernel.sh)",
    );
    c.binary(
        "virtiofsd",
        &cfg.virtiofsd,
        "virtiofsd (PVE ships /usr/libexec/virtiofsd; elsewhere: cargo install virtiofsd)",
    );
    if cfg.kvm {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            Ok(_) => c.ok("kvm", "/dev/kvm"),
            Err(e) => c.fail(
                "kvm",
                format!("/dev/kvm: {e}"),
                "enable virtualisation in the BIOS, or set kvm to false (TCG: slow)",
            ),
        }
    } else {
        c.ok("kvm", "off: TCG (slow, but anywhere)");
    }
    if let Some(bridge) = &cfg.bridge {
        c.bridge(bridge);
    }
}

/// The first line of `PATH --version`, or why there is none.
fn version_of(path: &Path) -> String {
    match run(path, &["--version"]) {
        Ok(text) => text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no version")
            .trim()
            .to_string(),
        Err(why) => format!("--version: {why}"),
    }
}

/// Runs a backend's program; its stdout, or its first line of error.
fn run(path: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string())
}
