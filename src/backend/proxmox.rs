//! What the Proxmox backends (pct, qm) share: how a guest is marked as nexcage's
//! (the owner token and place in its description), PVE's text encoding, hostnames.

use std::path::Path;

use crate::error::{Error, Result};

/// In a container's runtime dir: its owner token (see [`Owner`]).
pub const OWNER: &str = "owner";

/// Who made a Proxmox container: the random token its runtime directory holds, and
/// where the nexcage root that made it is (`<node>:<backend dir>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub token: String,
    pub place: String,
}

/// The description marking a Proxmox container as this OCI container's: the token,
/// so that another nexcage root (on this node or another) with a container of the
/// same id never takes it for its own; the place, so that a root whose state was wiped
/// (a reboot clears /run) finds what it left (see `parse_description`).
pub fn description(id: &str, owner: &Owner) -> String {
    format!(
        "nexcage container {id} (owner {}, at {})",
        owner.token, owner.place
    )
}

/// The id and owner a description says, if it is one of ours.
pub fn parse_description(text: &str) -> Option<(String, Owner)> {
    let rest = text.trim_end().strip_prefix("nexcage container ")?;
    let (id, rest) = rest.split_once(" (owner ")?;
    let (token, place) = rest.strip_suffix(')')?.split_once(", at ")?;
    crate::ids::validate(id).ok()?;
    Some((
        id.to_string(),
        Owner {
            token: token.to_string(),
            place: place.to_string(),
        },
    ))
}

/// Where a backend's state is, `<node>:<backend dir>`: what an [`Owner`]'s place says.
pub fn place(base: &Path) -> String {
    let node = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{node}:{}", base.display())
}

/// A valid hostname (one DNS label, <= 63 chars) from the spec's, else from the id.
pub fn hostname(wanted: &str, id: &str) -> String {
    let clean = |s: &str| -> String {
        let mut out: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        while out.ends_with('-') {
            out.pop();
        }
        out.trim_start_matches('-').to_string()
    };
    let name = clean(wanted);
    if name.is_empty() {
        let fallback = clean(&format!("nexcage-{id}"));
        if fallback.is_empty() {
            "nexcage".into()
        } else {
            fallback
        }
    } else {
        name
    }
}

/// 128 random bits, hex.
pub fn new_owner_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom(2) writes at most the buffer's length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(Error::io("getrandom", std::io::Error::last_os_error()));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// PVE keeps the description %XX-encoded (`PVE::Tools::encode_text`).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fixed vmid from the container's `<prefix>vmid` annotation, where the backend's
/// `allowed_annotations` lists it; any other key under `prefix`, or one not allowed,
/// is refused (never ignored). None: take one from `pvesh get /cluster/nextid`.
pub fn annotated_vmid(
    spec: &oci_spec::runtime::Spec,
    prefix: &str,
    allowed: &[String],
    backend: &str,
) -> Result<Option<String>> {
    let overridable = crate::config::OVERRIDABLE_ON_PROXMOX;
    let mut vmid = None;
    for (name, value) in spec.annotations().iter().flatten() {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        if !overridable.contains(&key) {
            return Err(Error::Usage(format!(
                "unknown annotation {name} (the {backend} backend knows {prefix}{{{}}})",
                overridable.join(",")
            )));
        }
        if !allowed.iter().any(|k| k == key) {
            return Err(Error::Usage(format!(
                "annotation {name} is not allowed by the {backend} backend's configuration"
            )));
        }
        let invalid = |what: &str| Error::Usage(format!("annotation {name}={value:?}: {what}"));
        let n: u64 = value.parse().map_err(|_| invalid("not a number"))?;
        if !(100..=999_999_999).contains(&n) {
            return Err(invalid("a vmid is 100 to 999999999"));
        }
        vmid = Some(n.to_string());
    }
    Ok(vmid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_dns_labels() {
        assert_eq!(hostname("Web_1", "x"), "web-1");
        assert_eq!(
            hostname("", &"a".repeat(64)),
            format!("nexcage-{}", "a".repeat(55))
        );
        assert_eq!(hostname("--", "x"), "nexcage-x");
        assert!(hostname(&"h".repeat(100), "x").len() <= 63);
    }

    #[test]
    fn descriptions_read_back() {
        let owner = Owner {
            token: "0123456789abcdef0123456789abcdef".into(),
            place: "pve1:/run/nexcage/backends/pve".into(),
        };
        let text = description("web-1", &owner);
        assert_eq!(parse_description(&text), Some(("web-1".into(), owner)));
        assert_eq!(parse_description("nexcage container x"), None);
        assert_eq!(parse_description("someone's notes"), None);
    }
}
