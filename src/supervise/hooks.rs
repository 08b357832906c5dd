//! The spec's hooks, as runc runs them: the container's state JSON on stdin, the
//! hook's own argv and env (nothing inherited), a timeout, and output kept for the
//! error. Where a hook runs (runtime or container namespaces) is the caller's choice.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use serde::{Deserialize, Serialize};

use super::join::Namespaces;
use crate::error::{Error, IoContext, Result};

/// The spec's kinds, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Prestart,
        Kind::CreateRuntime,
        Kind::CreateContainer,
        Kind::StartContainer,
        Kind::Poststart,
        Kind::Poststop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

/// The spec's hooks, kept in the runtime directory for the commands after `create`,
/// with what their state needs besides status and pid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hooks {
    pub oci_version: String,
    pub id: String,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub hooks: oci_spec::runtime::Hooks,
}

/// The state hooks get on stdin (runtime spec "State"), in runc's key order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct State<'a> {
    oci_version: &'a str,
    id: &'a str,
    status: &'a str,
    pid: i32,
    bundle: &'a Path,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl Hooks {
    /// What `create` keeps, if the spec has any hooks.
    pub fn from_spec(spec: &oci_spec::runtime::Spec, id: &str, bundle: &Path) -> Option<Hooks> {
        let hooks = spec.hooks().clone()?;
        let any = Kind::ALL.iter().any(|k| !list(&hooks, *k).is_empty());
        any.then(|| Hooks {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            hooks,
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_vec(self).map_err(|e| Error::Usage(e.to_string()))?;
        super::host::write_new(&dir.join(super::HOOKS), &body, 0o600)
    }

    /// The hooks `create` kept, if any.
    pub fn load(dir: &Path) -> Result<Option<Hooks>> {
        let path = dir.join(super::HOOKS);
        match std::fs::read(&path) {
            Ok(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Runs `kind`'s hooks in order, each with the state on stdin; the first failure
    /// is the error. `namespaces`: run them inside these (the container's), the
    /// program still found in ours, as the spec asks of createContainer hooks.
    pub fn run(
        &self,
        kind: Kind,
        status: &str,
        pid: i32,
        namespaces: Option<&Namespaces>,
    ) -> Result<()> {
        let state = serde_json::to_string(&State {
            oci_version: &self.oci_version,
            id: &self.id,
            status,
            pid,
            bundle: &self.bundle,
            annotations: &self.annotations,
        })
        .map_err(|e| Error::Usage(e.to_string()))?;
        for hook in list(&self.hooks, kind) {
            run_one(hook, kind, &state, namespaces)?;
        }
        Ok(())
    }
}

fn list(h: &oci_spec::runtime::Hooks, kind: Kind) -> &[Hook] {
    let list = match kind {
        #[allow(deprecated)]
        Kind::Prestart => h.prestart(),
        Kind::CreateRuntime => h.create_runtime(),
        Kind::CreateContainer => h.create_container(),
        Kind::StartContainer => h.start_container(),
        Kind::Poststart => h.poststart(),
        Kind::Poststop => h.poststop(),
    };
    list.as_deref().unwrap_or(&[])
}

fn run_one(hook: &Hook, kind: Kind, state: &str, namespaces: Option<&Namespaces>) -> Result<()> {
    let path = hook.path();
    let failed =
        |reason: String| Error::Usage(format!("{} hook {}: {reason}", kind.name(), path.display()));
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(path);
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for var in hook.env().iter().flatten() {
        if let Some((k, v)) = var.split_once('=') {
            cmd.env(k, v);
        }
    }
    if let Some(ns) = namespaces {
        prepare_in_namespaces(
            &mut cmd,
            path,
            &args,
            hook.env().as_deref().unwrap_or(&[]),
            ns,
        )
        .map_err(|e| failed(e.to_string()))?;
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    // A hook that does not read its stdin must not fail the write: ignore EPIPE.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state.as_bytes());
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let deadline = timeout.map(|t| Instant::now() + t);
    let status = loop {
        if let Some(status) = child.try_wait().context(|| "wait for hook")? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "timed out after {}s",
                timeout.unwrap_or_default().as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let mut output = String::new();
    for pipe in [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut text = String::new();
        let _ = pipe.take(4096).read_to_string(&mut text);
        output.push_str(text.trim());
    }
    let mut reason = crate::process::exit_code(status).to_string();
    reason.insert_str(0, "exit status ");
    if !output.is_empty() {
        reason.push_str(&format!(": {}", output.replace('\n', " / ")));
    }
    Err(failed(reason))
}

/// The hook's program is opened here, in the runtime's mount namespace; the child
/// enters the container's namespaces and execs that open file with the host's root
/// as its root and the container's as its working directory. That is what runc and
/// crun give it (they run it in the container's mount namespace before pivot_root):
/// what the program needs besides itself, a script's interpreter or a dynamic
/// binary's loader and libraries, is the host's, never the image's (which would run
/// with the hook's privileges).
fn prepare_in_namespaces(
    cmd: &mut Command,
    path: &Path,
    args: &[String],
    env: &[String],
    ns: &Namespaces,
) -> std::io::Result<()> {
    let program = std::fs::File::open(path)?;
    let program: OwnedFd = program.into();
    let host_root: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open("/")?
        .into();
    let cstrings = |list: &[String]| -> std::io::Result<Vec<CString>> {
        list.iter()
            .map(|s| CString::new(s.as_str()).map_err(std::io::Error::other))
            .collect()
    };
    let mut argv = cstrings(args)?;
    if argv.is_empty() {
        argv.push(
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?,
        );
    }
    let envp = cstrings(env)?;
    let exec = Exec {
        argv_ptrs: pointers(&argv),
        envp_ptrs: pointers(&envp),
        _strings: (argv, envp),
        namespaces: ns.raw(),
        program,
        host_root,
    };
    // SAFETY: only setns, open, fchdir, chroot, close and execveat between fork and
    // exec; everything they use is built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // The whole value, not its fields (closures capture disjoint fields).
            let exec = &exec;
            for &(nsfd, flag) in &exec.namespaces {
                if libc::setns(nsfd, flag) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Joining the mount namespace made its root (the container's) ours.
            let container_root = libc::open(
                c"/".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if container_root < 0
                || libc::fchdir(exec.host_root.as_raw_fd()) < 0
                || libc::chroot(c".".as_ptr()) < 0
                || libc::fchdir(container_root) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(container_root);
            // A `#!` script is run as /dev/fd/N: the fd must survive the exec.
            if libc::fcntl(exec.program.as_raw_fd(), libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::syscall(
                libc::SYS_execveat,
                exec.program.as_raw_fd(),
                c"".as_ptr(),
                exec.argv_ptrs.as_ptr(),
                exec.envp_ptrs.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    Ok(())
}

/// What the child needs for execveat, made before the fork.
struct Exec {
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Owns what the pointers point into.
    _strings: (Vec<CString>, Vec<CString>),
    namespaces: Vec<(std::os::fd::RawFd, libc::c_int)>,
    program: OwnedFd,
    /// The host's `/`, to be the hook's root inside the container's mount namespace.
    host_root: OwnedFd,
}

// SAFETY: the pointers point into `_strings`, owned by the same value and never
// changed; the value is only used by the forked child.
unsafe impl Send for Exec {}
unsafe impl Sync for Exec {}

fn pointers(list: &[CString]) -> Vec<*const libc::c_char> {
    list.iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
