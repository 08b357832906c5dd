//! `gc`: what the backends hold for containers that no record owns any more (the
//! record was removed, or the whole state: a reboot clears /run, an engine wipes its
//! runtime root) is destroyed. Each id is held locked meanwhile, so a create or delete
//! of it waits; what another nexcage root made is never touched (see the backends).

use std::collections::BTreeMap;

use crate::backend::{self, Exit, Invocation};
use crate::config::{self, BackendConfig};
use crate::error::Result;
use crate::output;
use crate::state::Root;

pub fn gc(inv: &Invocation, root: &Root) -> Result<Exit> {
    // The configured backends, and those records were made with (a backend since
    // renamed or dropped from the config still holds their containers).
    let mut backends: BTreeMap<String, BackendConfig> =
        config::load(inv.global.config.as_deref())?.config.backends;
    for record in root.list()? {
        backends
            .entry(record.backend.clone())
            .or_insert(record.backend_config);
    }
    let mut removed = Vec::new();
    let mut failed = false;
    for (name, cfg) in &backends {
        let backend = backend::open(name, cfg, root);
        for id in backend.held() {
            let (locked, record) = match root.hold(&id) {
                Ok(held) => held,
                Err(e) => {
                    log::warn!("gc: {name} {id}: {e}");
                    failed = true;
                    continue;
                }
            };
            // A record of another backend has this id now: that one is left as it is.
            if record.as_ref().is_some_and(|r| &r.backend == name) {
                continue;
            }
            match backend.remove(inv, &id) {
                Ok(()) => removed.push(format!("{name}: container {id}, which no record owns")),
                Err(e) => {
                    log::warn!("gc: {name} {id}: {e}");
                    failed = true;
                }
            }
            // Frees the id again (the empty claim `hold` made).
            if record.is_none()
                && let Err(e) = locked.remove()
            {
                log::warn!("gc: {id}: {e}");
                failed = true;
            }
        }
        removed.extend(
            backend
                .collect_strays()
                .into_iter()
                .map(|what| format!("{name}: {what}")),
        );
    }
    output::emit(&removed.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    Ok(if failed { 1 } else { 0 })
}
