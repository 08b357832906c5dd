//! runc's output shapes, which engines and test suites parse: the state object and
//! the `list` table. Written by hand (not oci-spec's `State`) because runc's key order
//! and extra keys (rootfs, created, owner) are part of what callers read.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::backend::{Observed, Status};
use crate::state::Record;

#[derive(Serialize)]
pub struct RuncState<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'static str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    bundle: &'a Path,
    rootfs: &'a Path,
    pub created: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
    pub owner: String,
}

impl<'a> RuncState<'a> {
    /// A container its backend cannot report on is still being created if its
    /// foreground `run` is under way (`run_active`), else it has stopped: pid 0, as
    /// runc reports.
    pub fn new(
        record: &'a Record,
        observed: Option<&Observed>,
        run_active: bool,
        owner: String,
    ) -> Self {
        let (pid, status) = match observed {
            Some(o) if o.status != Status::Stopped => (o.pid, o.status),
            Some(_) => (0, Status::Stopped),
            None if run_active => (0, Status::Creating),
            None => (0, Status::Stopped),
        };
        RuncState {
            oci_version: oci_spec::runtime::VERSION,
            id: &record.id,
            pid,
            status,
            bundle: &record.bundle,
            rootfs: &record.rootfs,
            created: &record.created,
            annotations: &record.annotations,
            owner,
        }
    }

    pub fn bundle_display(&self) -> String {
        self.bundle.display().to_string()
    }

    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Go's text/tabwriter as runc configures it (minwidth 12, padding 3, spaces); the
/// last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 12;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + PADDING)
                .max()
                .unwrap_or(0)
                .max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout; a reader that went away (`| head`, `| true`) is no error.
pub fn emit(text: &str) -> crate::error::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::Error::io("write to stdout", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_table_layout() {
        let rows = vec![
            vec!["ID".into(), "PID".into(), "OWNER".into()],
            vec!["r1".into(), "3095".into(), "root".into()],
        ];
        assert_eq!(
            table(&rows),
            "ID          PID         OWNER\nr1          3095        root\n"
        );
    }
}
