//! `spec`: writes a default config.json, as `runc spec` does (oci-spec's defaults).

use std::fs::OpenOptions;
use std::io::Write;

use oci_spec::runtime::Spec;

use crate::backend::Exit;
use crate::cli::SpecArgs;
use crate::error::{Error, IoContext, Result};

pub fn spec(args: &SpecArgs) -> Result<Exit> {
    let path = args.bundle.join("config.json");
    let mut spec = if args.rootless {
        Spec::rootless(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    } else {
        Spec::default()
    };
    spec.set_hostname(Some("nexcage".into()));
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
    }
    let mut body = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut body, formatter);
    serde::Serialize::serialize(&spec, &mut ser).map_err(|e| Error::Usage(e.to_string()))?;
    // create_new: never overwrite someone's config.
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Usage(format!(
                "File {} exists. Remove it first",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("create {}", path.display()), e)),
    };
    file.write_all(&body)
        .context(|| format!("write {}", path.display()))?;
    Ok(0)
}
