//! An isolated stand-in Proxmox node for the VM backend: the qm/pvesh stand-in
//! (hack/pve, real QEMU under TCG) and a nexcage config with a `qm` backend.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::{CRUN, Env, repo, run_cmd};

/// An isolated stand-in node and a nexcage config with backends `crun` (default)
/// and `vm` (qm, TCG), picked by annotation.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub env: Env,
}

pub const ON_VM: (&str, &str) = ("org.nexcage.backend", "vm");

/// A bundle routed to the `vm` backend, its spec then changed by `edit`.
pub fn vm_bundle(args: &[&str], edit: impl FnOnce(&mut oci_spec::runtime::Spec)) -> super::Bundle {
    super::Bundle::with(args, |s| {
        let mut a = s.annotations().clone().unwrap_or_default();
        a.insert(ON_VM.0.into(), ON_VM.1.into());
        s.set_annotations(Some(a));
        edit(s);
    })
}

/// The spec without a network namespace (`--network host`).
pub fn without_netns(s: &mut oci_spec::runtime::Spec) {
    let linux = s.linux_mut().as_mut().unwrap();
    let namespaces = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network)
        .collect();
    linux.set_namespaces(Some(namespaces));
}

impl Node {
    pub fn new() -> Node {
        Node::with_default("crun")
    }

    /// `default`: the backend of containers without an annotation (Docker cannot
    /// annotate).
    pub fn with_default(default: &str) -> Node {
        Node::build(default, "")
    }

    /// `extra`: more settings of the `vm` backend, as `,"key":value`.
    pub fn with_backend_extra(extra: &str) -> Node {
        Node::build("crun", extra)
    }

    fn build(default: &str, extra: &str) -> Node {
        let kernel = repo().join("bundles/vm-kernel");
        assert!(kernel.join("vmlinuz").exists(), "run hack/setup.sh");
        let virtiofsd = ["/usr/libexec/virtiofsd", "/usr/local/bin/virtiofsd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("virtiofsd (hack/setup.sh builds it)");
        let dir = tempfile::Builder::new()
            .prefix("nexcage-qm-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("node");
        for tool in ["qm", "pvesh"] {
            let script = format!(
                "#!/bin/sh\nexport PVE_STANDIN_ROOT='{}' PVE_STANDIN_NODE=testnode\nexec '{}' \"$@\"\n",
                root.display(),
                repo().join("hack/pve").join(tool).display()
            );
            super::write_script(&dir.path().join(tool), &script);
        }
        let env = Env::with_config(&format!(
            r#"{{"default":"{default}",
                "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},
                             "vm":{{"type":"qm","qm":"{}","pvesh":"{}","kvm":false,
                                    "memory":256,"kernel":"{}","virtiofsd":"{virtiofsd}"{extra}}}}},
                "annotation_backends":["crun","vm"]}}"#,
            dir.path().join("qm").display(),
            dir.path().join("pvesh").display(),
            kernel.display(),
        ));
        Node { dir, env }
    }

    pub fn qm(&self, args: &[&str]) -> super::Out {
        let mut cmd = Command::new(self.dir.path().join("qm"));
        cmd.args(args);
        run_cmd(cmd, None)
    }

    /// No VM, config or runtime dir left.
    pub fn assert_clean(&self) {
        self.env.assert_clean();
        assert_eq!(self.qm(&["list"]).stdout, "", "qm list");
        let runtime: Vec<_> = std::fs::read_dir(self.env.root().join("backends/vm"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with("initramfs-") && n != "@sockets")
                    .collect()
            })
            .unwrap_or_default();
        assert!(runtime.is_empty(), "{runtime:?}");
        let sockets: Vec<_> = std::fs::read_dir(self.env.root().join("backends/vm/@sockets"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(sockets.is_empty(), "{sockets:?}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(out) = self.env.cmd().args(["list", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.env.cmd().args(["delete", "--force", id]).output();
            }
        }
    }
}
