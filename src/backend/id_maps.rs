//! The spec's uid/gid mappings as LXC's `lxc.idmap` values, for the lxc backend's
//! config and a Proxmox CT's raw keys (PVE passes `lxc.idmap` through and then adds
//! no mapping of its own).

use oci_spec::runtime::Linux;

use crate::backend::genconf::Refusal;

/// `u|g CONTAINER HOST SIZE`, uid maps first; both kinds are needed.
pub fn lines(linux: &Linux) -> Result<Vec<String>, Refusal> {
    let maps = [
        ('u', linux.uid_mappings().clone().unwrap_or_default()),
        ('g', linux.gid_mappings().clone().unwrap_or_default()),
    ];
    let mut out = Vec::new();
    for (kind, list) in &maps {
        if list.is_empty() {
            return Err("a user namespace without uid and gid mappings".into());
        }
        for m in list {
            out.push(format!(
                "{kind} {} {} {}",
                m.container_id(),
                m.host_id(),
                m.size()
            ));
        }
    }
    Ok(out)
}

/// The host uid of the container's root, if the mappings map it.
pub fn root_uid(linux: &Linux) -> Option<u32> {
    linux
        .uid_mappings()
        .iter()
        .flatten()
        .find(|m| m.container_id() == 0 && m.size() > 0)
        .map(|m| m.host_id())
}
