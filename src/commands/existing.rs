//! Commands on an existing container: routed by its record, never by the rules.

use crate::backend::{self, Backend, Exit, Invocation, Status};
use crate::cli::{ExecArgs, KillArgs};
use crate::error::{Error, Result};
use crate::output::{self, RuncState};
use crate::signal;
use crate::state::{Record, Root};

fn open(inv: &Invocation, root: &Root, id: &str) -> Result<(Record, Box<dyn Backend>)> {
    let record = root.load(id)?;
    if super::reap_if_finished(root, &record)? {
        return Err(Error::NotExist(id.to_string()));
    }
    let backend = backend::for_record(&record, root);
    backend.check(inv)?;
    Ok((record, backend))
}

pub fn start(inv: &Invocation, root: &Root, id: &str) -> Result<Exit> {
    let (record, backend) = open(inv, root, id)?;
    backend.start(inv, &record)
}

pub fn operate(inv: &Invocation, root: &Root, id: &str) -> Result<Exit> {
    let (record, backend) = open(inv, root, id)?;
    backend.operate(inv, &record)
}

pub fn exec(inv: &Invocation, root: &Root, args: &ExecArgs) -> Result<Exit> {
    if args.process.is_none() && args.command.is_empty() {
        return Err(Error::Usage(
            "exec needs a command after the container id, or --process FILE".into(),
        ));
    }
    operate(inv, root, &args.id)
}

pub fn kill(inv: &Invocation, root: &Root, args: &KillArgs) -> Result<Exit> {
    let signal = signal::parse(&args.signal)?;
    let (record, backend) = open(inv, root, &args.id)?;
    backend.kill(inv, &record, signal, args.all)
}

pub fn state(inv: &Invocation, root: &Root, id: &str) -> Result<Exit> {
    let (record, backend) = open(inv, root, id)?;
    let observed = backend.observe(inv, &[&record])?.remove(id);
    let creating = observed.is_none() && record.ephemeral && root.run_active(id);
    let state = RuncState::new(&record, observed.as_ref(), creating, String::new());
    // runc: two-space indent, no trailing newline.
    output::emit(&state.to_pretty_json())?;
    Ok(0)
}

/// runc's rules: `--force` kills first and is quiet about unknown ids; the record goes
/// only once the backend has let go of the container.
pub fn delete(inv: &Invocation, root: &Root, id: &str, force: bool) -> Result<Exit> {
    let (locked, record) = match root.lock(id) {
        Ok(found) => found,
        Err(Error::NotExist(_)) if force => return Ok(0),
        Err(e) => return Err(e),
    };
    let backend = backend::for_record(&record, root);
    if !force {
        // runc's words for every backend (crun's differ).
        let status = backend
            .observe(inv, &[&record])?
            .remove(id)
            .map(|o| o.status);
        if let Some(status @ (Status::Running | Status::Paused)) = status {
            return Err(Error::NotStopped {
                id: id.to_string(),
                status: status.to_string(),
            });
        }
    }
    let code = backend.delete(inv, &record, force)?;
    if code == 0 {
        locked.remove()?;
    }
    Ok(code)
}
