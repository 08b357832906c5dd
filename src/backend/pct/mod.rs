//! Backend `pct`: the container is a real Proxmox VE LXC container, made, started and
//! destroyed with `pct` (and `pvesh` for a vmid), visible in Proxmox's UI. The engine
//! still gets a reapable pid, the container's stdio and its exit status through the
//! holder + init mechanism of `crate::supervise`. Nothing depends on Proxmox
//! internals: only `pct`, `pvesh` and their outputs.

pub mod translate;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{Backend, Exit, Invocation, Observed};
use crate::backend::genconf::PctOptions;
use crate::backend::proxmox::{
    OWNER, Owner, description, new_owner_token, parse_description, percent_decode,
};
use crate::bundle::Bundle;
use crate::cli;
use crate::config::PctConfig;
use crate::error::{Error, IoContext, Result};
use crate::state::Record;
use crate::supervise::MOUNT_POINT;
use crate::supervise::host::{self, Setup, Supervisor};

/// `pvesh get /cluster/nextid` does not reserve: another create may take the id first.
const CREATE_ATTEMPTS: usize = 5;
/// The runtime dir's owner token (see `translate::description`).
/// In the backend's dir: what `pct create` unpacks (see `empty_archive`).
const EMPTY_ARCHIVE: &str = "empty.tar";
/// How long `delete` waits for a `pct create` left running by a killed nexcage.
const CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What nexcage reads of a CT's config (see `Pct::ct_config`).
#[derive(Default)]
struct CtConfig {
    description: String,
    lock: Option<String>,
}

enum Ct {
    Gone,
    Ours,
    Creating,
    Other,
}

pub struct Pct {
    name: String,
    cfg: PctConfig,
    /// Runtime directories, one per container, bind-mounted into it.
    sup: Supervisor,
}

impl Pct {
    pub fn new(name: &str, cfg: &PctConfig, base: PathBuf) -> Pct {
        Pct {
            name: name.to_string(),
            cfg: cfg.clone(),
            sup: Supervisor {
                backend: name.to_string(),
                base,
            },
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.sup.dir(id)
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported {
            command: what.to_string(),
            backend: self.name.clone(),
        }
    }

    fn failed(&self, what: &str, out: &Output) -> Error {
        let text = String::from_utf8_lossy(&out.stderr);
        let text = if text.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout)
        } else {
            text
        };
        Error::Backend {
            backend: self.name.clone(),
            reason: format!("{what} failed: {}", text.trim().replace('\n', " / ")),
        }
    }

    /// `pct ARGS`, output captured (pct prints task logs we must not pass on).
    fn pct(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.cfg.pct)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(|| format!("run {}", self.cfg.pct.display()))
    }

    /// The owner token in a container's runtime dir, if we have one.
    fn token(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.dir(id).join(OWNER))
            .ok()
            .map(|token| token.trim().to_string())
    }

    /// The owner of a container whose runtime dir we have (see `translate::Owner`).
    fn owner(&self, id: &str) -> Option<Owner> {
        self.token(id).map(|token| Owner {
            token,
            place: self.place(),
        })
    }

    /// Where this backend's state is: `<node>:<backend dir>`.
    fn place(&self) -> String {
        crate::backend::proxmox::place(&self.sup.base)
    }

    /// Proxmox containers this backend made before its state was wiped (a reboot
    /// clears /run; an engine wipes its runtime root): ours by place, but with no
    /// runtime dir holding their token. Nobody can reach them any more, so they are
    /// stopped and destroyed. Run by the first create of a new state, and by `gc`;
    /// what fails is logged and left for the next. Returns what was destroyed.
    fn collect_orphans(&self) -> Vec<String> {
        let mut done = Vec::new();
        let place = self.place();
        let mut vmids: Vec<String> = fs::read_dir(&self.cfg.config_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let vmid = name.strip_suffix(".conf")?;
                is_vmid(vmid).then(|| vmid.to_string())
            })
            .collect();
        vmids.sort();
        for vmid in &vmids {
            let Ok(Some(config)) = self.ct_config(vmid) else {
                continue;
            };
            let orphan = parse_description(&config.description).filter(|(id, owner)| {
                owner.place == place && self.token(id).as_ref() != Some(&owner.token)
            });
            let Some((id, _)) = orphan else { continue };
            log::info!("pct: destroying CT {vmid}, left by container {id} of a wiped state");
            match self.pct(&["destroy", vmid, "--force", "--purge"]) {
                Ok(out) if out.status.success() => {
                    done.push(format!(
                        "Proxmox CT {vmid} of container {id}, whose state is gone"
                    ));
                }
                Ok(out) => log::warn!(
                    "pct destroy {vmid}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => log::warn!("pct destroy {vmid}: {e}"),
            }
        }
        done
    }

    /// A CT's config as PVE keeps it, `<config_dir>/<vmid>.conf` (what `pct config`
    /// reads; a `pct` run costs an interpreter start and more): its description (the
    /// leading `#` lines, text-encoded) and its lock; None if it has no config.
    fn ct_config(&self, vmid: &str) -> Result<Option<CtConfig>> {
        if !is_vmid(vmid) {
            return Ok(None);
        }
        let path = self.cfg.config_dir.join(format!("{vmid}.conf"));
        let text = match fs::read(&path) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        // Snapshots and pending changes follow in `[...]` sections.
        let current = text.lines().take_while(|l| !l.starts_with('['));
        let mut config = CtConfig::default();
        let mut lines: Vec<String> = Vec::new();
        for line in current {
            if let Some(comment) = line.strip_prefix('#') {
                lines.push(percent_decode(comment));
            } else if let Some(lock) = line.strip_prefix("lock:") {
                config.lock = Some(lock.trim().to_string());
            }
        }
        config.description = lines.join("\n");
        Ok(Some(config))
    }

    fn vmid(&self, id: &str) -> Option<String> {
        fs::read_to_string(self.dir(id).join("vmid"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Whose Proxmox container `vmid` is: this OCI container's if its description says
    /// so, with our owner token; in creation if it holds only `lock: create` (the
    /// description comes with the rest of the config when `pct create` finishes).
    fn ct(&self, vmid: &str, id: &str) -> Result<Ct> {
        let Some(owner) = self.owner(id) else {
            return Ok(Ct::Other);
        };
        let Some(config) = self.ct_config(vmid)? else {
            return Ok(Ct::Gone);
        };
        // (`owner` names this backend's place too: see `collect_orphans`.)
        Ok(
            if config.description.trim_end() == description(id, &owner) {
                Ct::Ours
            } else if config.lock.as_deref() == Some("create") {
                Ct::Creating
            } else {
                Ct::Other
            },
        )
    }

    /// Destroys the Proxmox container of a record, waiting out a `pct create` still
    /// running for a killed nexcage.
    fn destroy_ct(&self, vmid: &str, id: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + CREATE_WAIT;
        loop {
            match self.ct(vmid, id)? {
                Ct::Gone | Ct::Other => return Ok(()),
                Ct::Ours => break,
                Ct::Creating if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // The create itself was killed; the vmid was noted before it started.
                Ct::Creating => {
                    let out = self.pct(&["unlock", vmid])?;
                    if !out.status.success() {
                        return Err(self.failed("pct unlock", &out));
                    }
                    let out = self.pct(&[
                        "destroy",
                        vmid,
                        "--purge",
                        "--destroy-unreferenced-disks",
                        "1",
                    ])?;
                    if !out.status.success() {
                        return Err(self.failed("pct destroy", &out));
                    }
                    return Ok(());
                }
            }
        }
        // Stopped first if it runs (pve-container's `destroy_vm` with `force`).
        let out = self.pct(&["destroy", vmid, "--force", "--purge"])?;
        if !out.status.success() {
            return Err(self.failed("pct destroy", &out));
        }
        Ok(())
    }

    /// Adds raw `lxc.*` lines to a CT's config, as PVE reads them (`key: value`, after
    /// its own; `pct set` cannot set them), under PVE's config lock for the CT.
    fn append_raw(&self, vmid: &str, lines: &crate::backend::genconf::LxcConf) -> Result<()> {
        use std::io::Write;
        if lines.entries().is_empty() {
            return Ok(());
        }
        fs::create_dir_all(&self.cfg.lock_dir)
            .context(|| format!("create {}", self.cfg.lock_dir.display()))?;
        let lock_path = self.cfg.lock_dir.join(format!("pve-config-{vmid}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&lock_path)
            .context(|| format!("open {}", lock_path.display()))?;
        // Held until we return, as PVE holds it while it changes the config.
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("lock the CT config", e.into()))?;
        let path = self.cfg.config_dir.join(format!("{vmid}.conf"));
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .context(|| format!("open {}", path.display()))?;
        let text: String = lines
            .entries()
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        conf.write_all(text.as_bytes())
            .context(|| format!("write {}", path.display()))
    }

    /// `pct create` with a fresh vmid, retrying when another create took it first.
    /// The vmid is noted in the runtime dir before `pct create` runs, so that a create
    /// killed half-way leaves something `delete --force` can find.
    fn create_ct(
        &self,
        dir: &Path,
        template: &str,
        options: &[String],
        fixed: Option<&str>,
    ) -> Result<String> {
        let mut last = None;
        for _ in 0..CREATE_ATTEMPTS {
            if let Some(vmid) = fixed {
                return self.create_with(dir, vmid, template, options);
            }
            let out = Command::new(&self.cfg.pvesh)
                .args(["get", "/cluster/nextid"])
                .stdin(Stdio::null())
                .output()
                .context(|| format!("run {}", self.cfg.pvesh.display()))?;
            if !out.status.success() {
                return Err(self.failed("pvesh get /cluster/nextid", &out));
            }
            let vmid = String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_matches('"')
                .to_string();
            if vmid.is_empty() || !vmid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Backend {
                    backend: self.name.clone(),
                    reason: format!("pvesh gave no vmid: {vmid:?}"),
                });
            }
            match self.create_with(dir, &vmid, template, options) {
                Err(Error::Backend { reason, .. }) if reason.contains("already exists") => {
                    last = Some(reason);
                }
                other => return other,
            }
        }
        Err(Error::Backend {
            backend: self.name.clone(),
            reason: format!(
                "pct create: vmid taken {CREATE_ATTEMPTS} times in a row: {}",
                last.unwrap_or_default()
            ),
        })
    }

    fn create_with(
        &self,
        dir: &Path,
        vmid: &str,
        template: &str,
        options: &[String],
    ) -> Result<String> {
        fs::write(dir.join("vmid"), vmid).context(|| "write vmid")?;
        let mut args: Vec<&str> = vec!["create", vmid, template];
        args.extend(options.iter().map(String::as_str));
        let out = self.pct(&args)?;
        if out.status.success() {
            return Ok(vmid.to_string());
        }
        // Taken by someone else, whose container must never be destroyed as ours. Any
        // other failure keeps the note: the cleanup then checks what pct left.
        if String::from_utf8_lossy(&out.stderr).contains("already exists") {
            let _ = fs::remove_file(dir.join("vmid"));
        }
        Err(self.failed("pct create", &out))
    }
}

impl Pct {
    /// `update`: what maps to the Proxmox config goes there too (`pct set`, which
    /// also applies it to the running CT, in MiB rounded up), so the UI shows it; the
    /// exact figures go to the container's own cgroup.
    fn update(&self, id: &str, a: &cli::UpdateArgs) -> Result<Exit> {
        let limits = crate::supervise::update::Limits::from_args(a)?;
        let vmid = self
            .vmid(id)
            .ok_or_else(|| Error::Usage("container not running".into()))?;
        let mib = |bytes: i64| ((bytes + (1 << 20) - 1) >> 20).to_string();
        let mut opts = PctOptions::default();
        if let Some(m) = limits.memory.filter(|m| *m > 0) {
            opts.set("memory", mib(m)).map_err(Error::Usage)?;
            if let Some(s) = limits.memory_swap.filter(|s| *s >= m) {
                opts.set("swap", mib(s - m)).map_err(Error::Usage)?;
            }
        }
        if let Some(q) = limits.cpu_quota {
            let p = limits.cpu_period.unwrap_or(100_000);
            let cores = if q > 0 { q as f64 / p as f64 } else { 0.0 };
            opts.set("cpulimit", format!("{cores:.2}"))
                .map_err(Error::Usage)?;
        }
        if !opts.args().is_empty() {
            let mut args = vec!["set", vmid.as_str()];
            args.extend(opts.args().iter().map(String::as_str));
            let out = self.pct(&args)?;
            if !out.status.success() {
                return Err(self.failed("pct set", &out));
            }
        }
        self.sup.update(id, &limits)
    }
}

impl Backend for Pct {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, inv: &Invocation) -> Result<()> {
        host::refuse_checkpoint(inv.command, &self.name)
    }

    fn create(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        let (create, run) =
            host::create_args(inv.command).ok_or_else(|| self.unsupported(inv.command.name()))?;
        host::refuse_unsupported_flags(create, &self.name)?;
        let bundle = Bundle::load(&record.bundle)?;
        let rootfs = bundle.checked_rootfs()?;
        let console = host::create_terminal(&bundle, create, run, &self.name)?;
        let settings = translate::settings(&bundle.spec, &self.cfg)?;
        // Proxmox applies its limits (in MiB) to lxc/<vmid>; the exact ones go to the
        // container's own cgroup, where it sees them.
        let limits = match bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
        {
            Some(r) => Some(crate::supervise::update::Limits::from_resources(r)?),
            None => None,
        };
        let linux = bundle.spec.linux().clone().unwrap_or_default();
        let namespace = |typ: oci_spec::runtime::LinuxNamespaceType| {
            linux.namespaces().iter().flatten().find(|n| n.typ() == typ)
        };
        // The spec's uid/gid mappings, exactly, as raw `lxc.idmap` keys (PVE then adds
        // none of its own); without them an unprivileged backend has PVE's default
        // one. A user namespace on a privileged CT would run with a config Proxmox
        // made for root: refused.
        let id_maps = match namespace(oci_spec::runtime::LinuxNamespaceType::User) {
            None => None,
            Some(_) if !self.cfg.unprivileged => {
                return Err(self.unsupported(
                    "a user namespace (uidMappings/gidMappings) on a privileged pct backend",
                ));
            }
            Some(ns) if ns.path().is_some() => {
                return Err(self.unsupported("joining a user namespace (linux.namespaces path)"));
            }
            Some(_) => {
                let lines = crate::backend::id_maps::lines(&linux)
                    .map_err(|what| self.unsupported(&what))?;
                let root = crate::backend::id_maps::root_uid(&linux)
                    .ok_or_else(|| self.unsupported("uidMappings that leave uid 0 unmapped"))?;
                Some((lines, root))
            }
        };
        // Proxmox has no option for sysctls: init writes them. Nor does it mount a
        // cgroupfs or an mqueue (the container's init is to), or take the spec's options
        // for its own mounts: init does.
        let mut setup = Setup::from_spec(&bundle.spec);
        translate::special_mounts(&bundle.spec, &mut setup)?;
        // The network the spec asks for, where it is not the new one Proxmox makes: a
        // path (the engine's), or none at all (the host's, ours, as runc keeps it).
        let netns = match namespace(oci_spec::runtime::LinuxNamespaceType::Network) {
            Some(ns) => ns.path().clone(),
            None => Some(PathBuf::from(format!(
                "/proc/{}/ns/net",
                std::process::id()
            ))),
        };
        let mut engine_net = Vec::new();
        for (key, value) in linux.sysctl().iter().flatten() {
            crate::spec_check::sysctl(key, &linux).map_err(Error::Usage)?;
            // init is in Proxmox's network namespace, the workload in the engine's:
            // its sysctls are written there, from here.
            match &netns {
                Some(_) if key.starts_with("net.") => engine_net.push((key.clone(), value.clone())),
                _ => setup.sysctls.push((key.clone(), value.clone())),
            }
        }
        if let Some(path) = netns.as_deref().filter(|_| !engine_net.is_empty()) {
            crate::supervise::join::net_sysctls_in(path, &engine_net)?;
        }
        // The first create since the state was made (the empty archive is made then).
        if !self.sup.base.join(EMPTY_ARCHIVE).exists() {
            self.collect_orphans();
        }
        let dir = self.sup.prepare(
            record,
            &bundle,
            &setup,
            self.cfg.unprivileged,
            // Proxmox mount points are directories.
            &host::Binary::Copy,
        )?;
        let (mut raw, mount_points) = translate::raw_config(&bundle.spec, &rootfs)?;
        for line in id_maps.iter().flat_map(|(lines, _)| lines) {
            raw.set("lxc.idmap", line).map_err(Error::Usage)?;
        }
        let archive = empty_archive(&self.sup.base)?;
        let owner = Owner {
            token: new_owner_token()?,
            place: self.place(),
        };
        fs::write(dir.join(OWNER), &owner.token).context(|| "write the owner token")?;
        let options = translate::create_options(
            &bundle.spec,
            &self.cfg,
            &record.id,
            &owner,
            &translate::Placement {
                rootfs: &rootfs,
                // Files on disk are the container's own ids, unless the spec maps them.
                idmapped_rootfs: self.cfg.unprivileged && id_maps.is_none(),
                runtime_dir: &dir.join(crate::supervise::INSIDE),
                mount_points: &mount_points,
            },
        )?;
        let vmid = self.create_ct(&dir, &archive, &options, settings.vmid.as_deref())?;
        self.append_raw(&vmid, &raw)?;
        let launch = host::Launch {
            start_cmd: vec![
                self.cfg.pct.clone().into_os_string(),
                "start".into(),
                vmid.into(),
            ],
            // pct maps an unprivileged container's root to 100000 (PVE's default map).
            root_uid: match (&id_maps, self.cfg.unprivileged) {
                (Some((_, root)), _) => *root,
                (None, true) => 100_000,
                (None, false) => 0,
            },
            console,
            limits,
            // The engine's network (podman's and CNI's netns): Proxmox gives the CT a
            // network of its own (`net0`) and cannot be told to join one, so the holder
            // joins it, and with it the workload and what is exec'd.
            netns,
        };
        let Some(code) = self.sup.launch(&record.id, launch, create, run)? else {
            return Ok(0);
        };
        if run.is_some_and(|r| !r.keep) {
            self.remove(inv, &record.id)?;
        }
        Ok(code)
    }

    fn start(&self, _inv: &Invocation, record: &Record) -> Result<Exit> {
        self.sup.start(&record.id).map(|()| 0)
    }

    fn holds(&self, record: &Record) -> bool {
        self.dir(&record.id).exists()
    }

    fn observe(&self, _inv: &Invocation, records: &[&Record]) -> Result<HashMap<String, Observed>> {
        Ok(records
            .iter()
            .filter_map(|r| {
                let mut seen = self.sup.observe(&r.id)?;
                if seen.status == super::Status::Running && self.sup.paused(&r.id) {
                    seen.status = super::Status::Paused;
                }
                Some((r.id.clone(), seen))
            })
            .collect())
    }

    fn kill(&self, _inv: &Invocation, record: &Record, signal: i32, all: bool) -> Result<Exit> {
        self.sup.kill(&record.id, signal, all)
    }

    fn delete(&self, inv: &Invocation, record: &Record, _force: bool) -> Result<Exit> {
        self.remove(inv, &record.id).map(|()| 0)
    }

    /// Idempotent, from any state: holder gone, Proxmox container stopped and
    /// destroyed with its volumes, runtime directory removed.
    fn remove(&self, _inv: &Invocation, id: &str) -> Result<()> {
        self.sup.kill_holder(id);
        if let Some(vmid) = self.vmid(id) {
            self.destroy_ct(&vmid, id)?;
        }
        self.sup.remove_dir(id)
    }

    fn held(&self) -> Vec<String> {
        crate::ids::dirs_in(&self.sup.base)
    }

    fn collect_strays(&self) -> Vec<String> {
        self.collect_orphans()
    }

    fn operate(&self, inv: &Invocation, record: &Record) -> Result<Exit> {
        match inv.command {
            cli::Command::Exec(a) => self.sup.exec(a, &record.id, MOUNT_POINT),
            cli::Command::Events(a) => self.sup.events(&record.id, a),
            cli::Command::Update(a) => self.update(&record.id, a),
            // `pct suspend` is CRIU's checkpoint; a pause is the cgroup freezer's.
            cli::Command::Pause(_) => self.sup.freeze(&record.id, true),
            cli::Command::Resume(_) => self.sup.freeze(&record.id, false),
            // Proxmox puts init in `lxc/<vmid>/ns`, a child of the container's cgroup.
            cli::Command::Ps(a) => self.sup.ps(a, &record.id, true),
            other => Err(self.unsupported(other.name())),
        }
    }
}

/// The archive `pct create` is given: it must have one, and unpacks it into the rootfs
/// without replacing what is there (`--skip-old-files`); an empty tar (its end-of-archive
/// blocks: a 0-byte file is no tar) leaves the engine's rootfs as it is.
fn empty_archive(base: &Path) -> Result<String> {
    let path = base.join(EMPTY_ARCHIVE);
    if !path.is_file() {
        let temp = base.join(format!(".{EMPTY_ARCHIVE}.{}", std::process::id()));
        fs::write(&temp, [0u8; 10240]).context(|| format!("write {}", temp.display()))?;
        fs::rename(&temp, &path).context(|| format!("rename into {}", path.display()))?;
    }
    Ok(path.to_string_lossy().into_owned())
}

fn is_vmid(text: &str) -> bool {
    !text.is_empty() && text.len() <= 9 && text.bytes().all(|b| b.is_ascii_digit())
}
