//! `features`: a fixed document (the spec asks for one fixed at build time) of what
//! nexcage accepts and hands on; both crun and runc implement all of it.

use oci_spec::runtime::Features;
use serde::Serialize;

use crate::backend::Exit;
use crate::error::{Error, Result};

pub fn features() -> Result<Exit> {
    let capabilities: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync",
            "exec", "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime",
            "noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime",
            "nosuid", "nosymfollow", "private", "rbind", "relatime", "remount", "ro", "rprivate",
            "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
            "strictatime", "suid", "symfollow", "sync", "tmpcopyup", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": capabilities,
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": true},
            "seccomp": {"enabled": true},
            "apparmor": {"enabled": true},
            "selinux": {"enabled": true}
        },
        "annotations": {"org.nexcage.version": env!("CARGO_PKG_VERSION")},
        "potentiallyUnsafeConfigAnnotations": ["org.nexcage."]
    });
    // Through oci-spec's type, so the document is checked against the spec's schema.
    let features: Features =
        serde_json::from_value(doc).map_err(|e| Error::Usage(e.to_string()))?;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    features
        .serialize(&mut ser)
        .map_err(|e| Error::Usage(e.to_string()))?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
