//! `list`: every record, with live status asked of each backend once.

use std::collections::{BTreeMap, HashMap};

use crate::backend::{self, Exit, Invocation, Observed};
use crate::cli::{ListArgs, ListFormat};
use crate::error::Result;
use crate::output::{self, RuncState};
use crate::state::{Record, Root};

pub fn list(inv: &Invocation, root: &Root, args: &ListArgs) -> Result<Exit> {
    let mut records = root.list()?;
    records.retain(|r| !matches!(super::reap_if_finished(root, r), Ok(true)));
    if args.quiet {
        let ids: String = records.iter().map(|r| format!("{}\n", r.id)).collect();
        output::emit(&ids)?;
        return Ok(0);
    }
    let mut by_backend: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in &records {
        by_backend.entry(&r.backend).or_default().push(r);
    }
    let mut observed: HashMap<String, Observed> = HashMap::new();
    for group in by_backend.values() {
        let backend = backend::for_record(group[0], root);
        match backend.observe(inv, group) {
            Ok(found) => observed.extend(found),
            // One broken backend must not hide the others' containers.
            Err(e) => log::warn!("{e}"),
        }
    }
    let users = Users::read();
    let states: Vec<RuncState> = records
        .iter()
        .map(|r| {
            let owner = users.name(root.owner_uid(&r.id).unwrap_or(0));
            let seen = observed.get(&r.id);
            let creating = seen.is_none() && r.ephemeral && root.run_active(&r.id);
            RuncState::new(r, seen, creating, owner)
        })
        .collect();
    match args.format {
        // runc prints `null` for an empty list.
        ListFormat::Json if states.is_empty() => output::emit("null\n")?,
        ListFormat::Json => output::emit(&format!(
            "{}\n",
            serde_json::to_string(&states).unwrap_or_default()
        ))?,
        ListFormat::Table => {
            let mut rows = vec![
                ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                    .map(String::from)
                    .to_vec(),
            ];
            rows.extend(states.iter().map(|s| {
                vec![
                    s.id.to_string(),
                    s.pid.to_string(),
                    s.status.to_string(),
                    s.bundle_display(),
                    s.created.to_string(),
                    s.owner.clone(),
                ]
            }));
            output::emit(&output::table(&rows))?;
        }
    }
    Ok(0)
}

/// uid -> user name from /etc/passwd (no NSS: the binary is static), `#uid` otherwise,
/// as runc shows owners.
struct Users(HashMap<u32, String>);

impl Users {
    fn read() -> Users {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Users(
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let uid = fields.nth(1)?.parse().ok()?;
                    Some((uid, name.to_string()))
                })
                .collect(),
        )
    }

    fn name(&self, uid: u32) -> String {
        self.0
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| format!("#{uid}"))
    }
}
