//! An isolated Proxmox "node" for tests: the pct/pvesh stand-in (hack/pve) with its
//! own directories and cgroup prefix, and a nexcage config with a `pct` backend.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{CRUN, Env, repo, run_cmd};

/// An isolated Proxmox "node" (stand-in dirs and cgroup prefix) and a nexcage config
/// with backends `crun` (default) and `pve` (ids `pve-*`, or by annotation).
pub struct Pve {
    pub dir: tempfile::TempDir,
    pub env: Env,
}

impl Pve {
    pub fn new() -> Pve {
        Pve::with_backend_extra("")
    }

    /// `extra` is spliced into the pve backend's settings, e.g. `,"storage":"x"`.
    pub fn with_backend_extra(extra: &str) -> Pve {
        Pve::configured(extra, "crun")
    }

    /// Also naming the default backend (`pve` for engines that cannot annotate).
    pub fn configured(extra: &str, default: &str) -> Pve {
        Pve::with_backends(extra, default, "")
    }

    /// `more` adds backends (`,"name":{...}`), which may be picked by annotation too.
    pub fn with_backends(extra: &str, default: &str, more: &str) -> Pve {
        let dir = tempfile::Builder::new()
            .prefix("nexcage-pct-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("node");
        let cgroups = cgroup_top(dir.path());
        for tool in ["pct", "pvesh"] {
            let script = format!(
                "#!/bin/sh\nexport PVE_STANDIN_ROOT='{}' PVE_STANDIN_NODE=testnode PVE_STANDIN_CGROUP_PREFIX='{cgroups}/'\nexec '{}' \"$@\"\n",
                root.display(),
                repo().join("hack/pve").join(tool).display()
            );
            super::write_script(&dir.path().join(tool), &script);
        }
        // Every backend may be picked by annotation.
        let mut names = vec!["crun".to_string(), "pve".to_string()];
        let more_json: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", more.trim_start_matches(','))).unwrap();
        names.extend(more_json.as_object().unwrap().keys().cloned());
        let annotated = serde_json::to_string(&names).unwrap();
        let env = Env::with_config(&format!(
            r#"{{"default":"{default}",
                "backends":{{"crun":{{"type":"oci","path":"{CRUN}"}},
                             "pve":{{"type":"pct","pct":"{}","pvesh":"{}","config_dir":"{}","lock_dir":"{}"{extra}}}{more}}},
                "annotation_backends":{annotated},
                "rules":[{{"backend":"pve","id":"pve-*"}},
                         {{"backend":"pve","annotations":{{"org.nexcage.test.place":"proxmox"}}}}]}}"#,
            dir.path().join("pct").display(),
            dir.path().join("pvesh").display(),
            root.join("etc/pve/lxc").display(),
            root.join("run/lock/lxc").display(),
        ));
        Pve { dir, env }
    }

    pub fn node(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    pub fn pct(&self, args: &[&str]) -> super::Out {
        let mut cmd = Command::new(self.dir.path().join("pct"));
        cmd.args(args);
        run_cmd(cmd, None)
    }

    pub fn vmid(&self, id: &str) -> String {
        std::fs::read_to_string(self.env.root().join("backends/pve").join(id).join("vmid")).unwrap()
    }

    /// What the node's template storage and volume storage hold (nexcage uses neither:
    /// the rootfs is the bundle's, in place).
    pub fn storage(&self) -> Vec<String> {
        let mut names = Vec::new();
        for dir in ["var/lib/vz/template/cache", "var/lib/vz/images"] {
            if let Ok(entries) = std::fs::read_dir(self.node().join(dir)) {
                names.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
        names.sort();
        names
    }

    /// No Proxmox container, config, volume, template or runtime dir left.
    pub fn assert_clean(&self) {
        self.env.ok(&["list"]);
        self.env.assert_clean();
        assert_eq!(self.pct(&["list"]).stdout, "", "pct list");
        let confs: Vec<_> = std::fs::read_dir(self.node().join("etc/pve/lxc"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(confs.is_empty(), "{confs:?}");
        assert_eq!(self.storage(), Vec::<String>::new(), "storage");
        // The empty archive `pct create` is given stays, as nexcage's own.
        let runtime: Vec<_> = std::fs::read_dir(self.env.root().join("backends/pve"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| !p.ends_with("empty.tar"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(runtime.is_empty(), "{runtime:?}");
    }
}

fn cgroup_top(dir: &Path) -> String {
    format!(
        "nexcage-pct-test-{}",
        dir.file_name().unwrap().to_string_lossy()
    )
}

impl Drop for Pve {
    fn drop(&mut self) {
        let Ok(out) = self.env.cmd().args(["list", "-q"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.env.cmd().args(["delete", "--force", id]).output();
        }
        // Anything the stand-in still runs, without going through it.
        let lxc_path = self.node().join("var/lib/lxc");
        if let Ok(out) = Command::new("lxc-ls")
            .arg("-P")
            .arg(&lxc_path)
            .arg("--running")
            .output()
        {
            for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("lxc-stop")
                    .arg("-P")
                    .arg(&lxc_path)
                    .args(["-n", name, "--kill"])
                    .output();
            }
        }
        let top = cgroup_top(self.dir.path());
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_cgroup_tree(&h.path().join(&top));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}
