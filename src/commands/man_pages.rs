//! `man DIR` (hidden, for hack/package.sh): roff man pages from the clap definitions,
//! `nexcage.1` and `nexcage-<subcommand>.1` for each subcommand callers use.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap_mangen::Man;

use crate::backend::Exit;
use crate::cli::public_command;
use crate::error::{IoContext, Result};

pub fn man_pages(dir: &Path) -> Result<Exit> {
    for path in write_pages(dir)? {
        println!("{}", path.display());
    }
    Ok(0)
}

/// Writes the pages; returns their paths. Internal subcommands and clap's `help` get none.
fn write_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut root = public_command().disable_help_subcommand(true);
    // Building names each subcommand `nexcage-<name>` and gives it the global flags.
    root.build();
    let source = format!("nexcage {}", env!("CARGO_PKG_VERSION"));
    let subcommands = root.get_subcommands().cloned();
    let mut written = Vec::new();
    for command in std::iter::once(root.clone()).chain(subcommands) {
        let man = Man::new(command).source(source.clone());
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)
            .context(|| format!("render {}", path.display()))?;
        File::create(&path)
            .and_then(|mut f| f.write_all(&page))
            .context(|| format!("write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_public_subcommand() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pages: Vec<String> = write_pages(dir.path())
            .expect("pages")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        for want in [
            "nexcage.1",
            "nexcage-create.1",
            "nexcage-gc.1",
            "nexcage-completion.1",
        ] {
            assert!(pages.iter().any(|p| p == want), "{want} missing: {pages:?}");
        }
        for internal in ["nexcage-holder.1", "nexcage-man.1", "nexcage-help.1"] {
            assert!(!pages.iter().any(|p| p == internal), "{internal} written");
        }
        let create = std::fs::read_to_string(dir.path().join("nexcage-create.1")).expect("page");
        assert!(
            create.starts_with(".ie \\n(.g .ds Aq"),
            "not roff: {create:.80}"
        );
        assert!(create.contains("pid\\-file"), "flags missing: {create}");
        // Global flags are documented on every page.
        assert!(create.contains("\\-\\-root"), "globals missing: {create}");
    }
}
