//! Command logic: one function per subcommand, on top of state, routing and backends.

mod check;
mod completion;
mod create;
mod existing;
mod features;
mod gc;
mod list;
mod man_pages;
mod route;
mod spec;

use std::ffi::OsString;

use crate::backend::{self, Exit, Invocation};
use crate::cli::{Command, GlobalOpts};
use crate::error::{Error, Result};
use crate::state::{Record, Root};
use crate::supervise;

pub fn dispatch(global: &GlobalOpts, command: &Command, flags: Vec<OsString>) -> Result<Exit> {
    let inv = Invocation {
        global,
        command,
        flags,
    };
    let root = || Root::resolve(global.root.as_deref());
    match command {
        Command::Create(a) => create::create(&inv, &root()?, &a.id, &a.bundle),
        Command::Run(a) => create::create(&inv, &root()?, &a.create.id, &a.create.bundle),
        Command::Restore(a) => create::create(&inv, &root()?, &a.id, &a.bundle),
        Command::Start(a) => existing::start(&inv, &root()?, &a.id),
        Command::State(a) => existing::state(&inv, &root()?, &a.id),
        Command::Kill(a) => existing::kill(&inv, &root()?, a),
        Command::Delete(a) => existing::delete(&inv, &root()?, &a.id, a.force),
        Command::Exec(a) => existing::exec(&inv, &root()?, a),
        Command::Ps(a) => existing::operate(&inv, &root()?, &a.id),
        Command::Pause(a) | Command::Resume(a) => existing::operate(&inv, &root()?, &a.id),
        Command::Events(a) => existing::operate(&inv, &root()?, &a.id),
        Command::Update(a) => existing::operate(&inv, &root()?, &a.id),
        Command::Checkpoint(a) => existing::operate(&inv, &root()?, &a.id),
        Command::List(a) => list::list(&inv, &root()?, a),
        Command::Spec(a) => spec::spec(a),
        Command::Features(a) => features::features(global, a),
        Command::Check(a) => check::check(global, a),
        Command::Completion(a) => completion::completion(a.shell),
        Command::Man(a) => man_pages::man_pages(&a.dir),
        Command::Route(a) => route::route(global, a),
        Command::Gc => gc::gc(&inv, &root()?),
        Command::GuestInit => guest_init(),
        Command::VmHolder(a) => supervise::vm_holder::run(&a.dir, a.ready_fd),
        Command::Init(a) => supervise::init::init(&a.dir),
        Command::Enter(a) => Err(enter(a)?),
    }
}

/// A foreground `run` hands its process over to the delegate, which removes its own
/// state when the container exits; the record stays behind. It is finished once the
/// run lock is free and the backend no longer holds the container: then the record is
/// removed and `true` returned.
fn reap_if_finished(root: &Root, record: &Record) -> Result<bool> {
    if !record.ephemeral
        || root.run_active(&record.id)
        || backend::for_record(record, root).holds(record)
    {
        return Ok(false);
    }
    match root.lock_same(record)? {
        Some(locked) => locked.remove()?,
        // Gone already; or deleted and the id reused, which is no longer this record.
        None if root.load(&record.id).is_ok() => return Ok(false),
        None => {}
    }
    Ok(true)
}

/// PID 1 of a VM guest: boots, serves the holder's relay, powers off.
fn guest_init() -> Result<Exit> {
    if std::process::id() != 1 {
        return Err(Error::Usage(
            "guest-init runs as PID 1 of a VM guest".into(),
        ));
    }
    let served = supervise::guest::boot().and_then(|loaded| {
        println!("nexcage guest-init: loaded {}", loaded.join(" "));
        supervise::guest::serve()
    });
    if let Err(e) = served {
        eprintln!("nexcage guest-init: {e}");
    }
    supervise::guest::power_off()
}

/// `nexcage enter`'s flags as an identity; returns only with the error.
fn enter(a: &crate::cli::EnterArgs) -> Result<Error> {
    use supervise::identity::{CapSets, Identity};
    if let Some(name) = &a.session_keyring {
        supervise::identity::join_session_keyring(name)?;
    }
    let caps = match a.caps.as_deref().map(CapSets::parse) {
        Some(None) => return Err(Error::Usage("invalid --caps".into())),
        Some(Some(c)) => Some(c),
        None => None,
    };
    let seccomp = match &a.seccomp {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            Some(supervise::seccomp::Program::from_bytes(&bytes)?)
        }
        None => None,
    };
    let identity = Identity {
        uid: a.uid,
        gid: a.gid,
        groups: a.group.clone(),
        rlimits: a
            .rlimit
            .iter()
            .map(|r| {
                Identity::parse_rlimit(r)
                    .ok_or_else(|| Error::Usage(format!("invalid --rlimit {r:?}")))
            })
            .collect::<Result<_>>()?,
        no_new_privileges: a.no_new_privileges,
        caps,
        seccomp,
        apparmor: a.apparmor.clone(),
    };
    // The process's environment is ours (see `supervise::exec::Enter`).
    let env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    Ok(supervise::init::enter(
        &a.command,
        &env,
        &a.cwd,
        identity,
        a.console_fd,
        a.ready_fd,
    ))
}
