//! create, run and restore: route the bundle, claim the id, hand it to the backend.
//! Nothing is left behind when any step fails.

use std::path::Path;

use crate::backend::{self, Backend, Exit, Invocation};
use crate::bundle::Bundle;
use crate::cli::Command;
use crate::error::{Error, Result};
use crate::state::{self, Locked, Record, Root};
use crate::{config, ids, routing};

pub fn create(inv: &Invocation, root: &Root, id: &str, bundle: &Path) -> Result<Exit> {
    ids::validate(id)?;
    let bundle = Bundle::outline(bundle)?;
    // Every backend's, as runc checks it: crun would follow a symlink to the host's `/`.
    let rootfs = bundle.checked_rootfs()?;
    if !matches!(inv.command, Command::Restore(_)) {
        crate::spec_check::check(&bundle.spec)?;
    }
    let annotations = bundle.annotations();
    let loaded = config::load(inv.global.config.as_deref())?;
    let route = routing::route(&loaded.config, id, &annotations)?;
    let backend_config = loaded.config.backends[&route.backend].clone();
    let backend = backend::open(&route.backend, &backend_config, root);
    backend.check(inv)?;
    log::debug!(
        "container {id}: backend {} by {} ({})",
        route.backend,
        route.reason,
        loaded.source
    );
    let (foreground, keep, preserve_fds) = match inv.command {
        Command::Run(r) => (!r.detach, r.keep, r.create.preserve_fds),
        Command::Restore(r) => (!r.detach, false, None),
        _ => (false, true, None),
    };
    let record = Record {
        id: id.to_string(),
        backend: route.backend,
        backend_config,
        bundle: bundle.path,
        rootfs,
        created: state::now_rfc3339(),
        annotations: annotations.into_iter().collect(),
        process_env: bundle.spec.process.and_then(|p| p.env).unwrap_or_default(),
        ephemeral: foreground && !keep,
    };
    let mut claim = claim(root, &record)?;

    if foreground {
        if let Some(run_lock) = claim.take_run_lock()? {
            let passed = preserve_fds.unwrap_or(0) as i32 + crate::process::listen_fds();
            crate::process::inherit_lock(run_lock, 3 + passed)?;
        }
        // Others must be able to `state`, `kill` or `delete --force` it while it runs.
        drop(claim);
        // A delegate replaces this process here; other backends return when it ends.
        let result = backend.create(inv, &record);
        if !keep || result.is_err() {
            forget(inv, root, backend.as_ref(), &record);
        }
        return result;
    }
    let result = backend.create(inv, &record);
    if !matches!(result, Ok(0)) {
        if let Err(e) = backend.remove(inv, &record.id) {
            log::warn!(
                "container {id}: cleaning up after failed {}: {e}",
                inv.command.name()
            );
        }
        if let Err(e) = claim.remove() {
            log::warn!("container {id}: removing record: {e}");
        }
    }
    result
}

/// Claims the id, first clearing away a finished foreground `run` that left its record.
fn claim(root: &Root, record: &Record) -> Result<Locked> {
    match root.claim(record) {
        Err(Error::AlreadyExists(id)) => match root.load(&id) {
            Err(Error::NotExist(_)) => root.claim(record),
            Ok(old) if super::reap_if_finished(root, &old)? => root.claim(record),
            _ => Err(Error::AlreadyExists(id)),
        },
        other => other,
    }
}

/// Drops a finished foreground container, unless someone deleted it (and perhaps
/// reused the id) meanwhile.
fn forget(inv: &Invocation, root: &Root, backend: &dyn Backend, record: &Record) {
    let Ok(Some(locked)) = root.lock_same(record) else {
        return;
    };
    let cleaned = backend
        .remove(inv, &record.id)
        .and_then(|()| locked.remove());
    if let Err(e) = cleaned {
        log::warn!("container {}: cleaning up after run: {e}", record.id);
    }
}
