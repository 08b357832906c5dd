//! nexcage under containerd 1.6's runc v2 shim: through `ctr run --runc-binary` and
//! through a CRI runtime handler whose BinaryName is nexcage. Each test starts its own
//! containerd in a short private directory (hack/containerd/start.sh) and stops it,
//! with everything it ran, when dropped (stop.sh), pass or fail.
//!
//! The shim passes `--root /run/containerd/runc/<namespace>`, a path shared by every
//! containerd on the machine, so container ids are unique per test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Containerd, Out, nexcage, ok, repo, run_cmd, unique};

const IMAGE: &str = "localhost/nexcage-busybox:latest";
/// nexcage's view of a container under the shim's runtime root.
fn nexcage_at(root: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(nexcage());
    cmd.arg("--root").arg(root).args(args);
    run_cmd(cmd, None)
}

fn nexcage_state(root: &str, id: &str) -> serde_json::Value {
    let out = nexcage_at(root, &["state", id]);
    assert_eq!(out.code, Some(0), "state {id}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn recorded_backend(root: &str, id: &str) -> String {
    let path = Path::new(root).join("containers").join(id);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["backend"].as_str().unwrap().to_string()
}

/// nexcage no longer knows `id` under `root`.
fn assert_forgotten(root: &str, id: &str) {
    let record = Path::new(root).join("containers").join(id);
    assert!(!record.exists(), "{} left behind", record.display());
    let out = nexcage_at(root, &["state", id]);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

const DEFAULT_NS_ROOT: &str = "/run/containerd/runc/default";

#[test]
fn ctr_run_foreground() {
    let containerd = Containerd::start(None);
    containerd.import("default");
    let id = unique("nxc-ctr-fg");
    let out = run_cmd(
        containerd.ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            nexcage(),
            IMAGE,
            &id,
            "sh",
            "-c",
            "echo hi; exit 3",
        ]),
        None,
    );
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(ok(containerd.ctr(&["container", "ls", "-q"])), "");
    assert_forgotten(DEFAULT_NS_ROOT, &id);
}

#[test]
fn ctr_detached_task_lifecycle() {
    let containerd = Containerd::start(None);
    containerd.import("default");
    let id = unique("nxc-ctr-d");
    let fifo = containerd.fifo_dir();
    ok(containerd.ctr(&[
        "run",
        "-d",
        "--fifo-dir",
        &fifo,
        "--runc-binary",
        nexcage(),
        IMAGE,
        &id,
        "sh",
        "-c",
        // PID 1 exits on SIGTERM only if it traps it.
        "trap 'exit 0' TERM; sleep 1000 & wait",
    ]));
    assert_eq!(containerd.task_status(&id), "RUNNING");
    assert_eq!(recorded_backend(DEFAULT_NS_ROOT, &id), "crun");
    let state = nexcage_state(DEFAULT_NS_ROOT, &id);
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap().to_string();
    let tasks = ok(containerd.ctr(&["task", "ls"]));
    assert!(
        tasks
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([id.as_str(), &pid])),
        "pid {pid}: {tasks}"
    );

    // exec --process ... --detach through the shim, and ps --format json.
    let out = run_cmd(
        containerd.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in-exec; exit 5",
        ]),
        None,
    );
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert_eq!(out.stdout, "in-exec\n");
    let ps = ok(containerd.ctr(&["task", "ps", &id]));
    assert!(
        ps.lines().any(|l| l.starts_with(&format!("{pid} "))),
        "{ps}"
    );

    ok(containerd.ctr(&["task", "kill", &id]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while containerd.task_status(&id) != "STOPPED" {
        assert!(Instant::now() < deadline, "task still not stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run_cmd(containerd.ctr(&["task", "delete", &id]), None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // ctr warns about a non-zero exit code; SIGTERM hit the trap, so there is none.
    assert!(!out.stderr.contains("exit code"), "{}", out.stderr);
    ok(containerd.ctr(&["container", "rm", &id]));
    assert_eq!(ok(containerd.ctr(&["container", "ls", "-q"])), "");
    assert_forgotten(DEFAULT_NS_ROOT, &id);
}

mod cri {
    pub use hyper_util::rt::TokioIo;
    pub use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
    pub use k8s_cri::v1::*;
    pub use tonic::transport::{Channel, Endpoint, Uri};
}

type Error = Box<dyn std::error::Error>;

async fn cri_client(sock: &str) -> Result<cri::RuntimeServiceClient<cri::Channel>, Error> {
    let sock = sock.to_string();
    let channel = cri::Endpoint::try_from("http://[::]")?
        .connect_with_connector(tower::service_fn(move |_: cri::Uri| {
            let sock = sock.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(sock).await?;
                Ok::<_, std::io::Error>(cri::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(cri::RuntimeServiceClient::new(channel))
}

/// A pod (host network: no CNI here) whose sandbox and container run through the
/// `nexcage` runtime handler; the container's exit code and log come back through CRI.
#[test]
fn cri_runtime_handler() {
    cri_pod("nexcage", None, "crun");
}

/// The same pod through a runtime handler (a RuntimeClass's) whose BinaryName runs
/// nexcage with a config routing to the lxc backend: CRI's 64-hex ids under
/// containerd's default runtime root.
#[test]
fn cri_runtime_handler_on_lxc() {
    cri_pod(
        "nexcage-lxc",
        Some(r#"{"default":"lxc","backends":{"lxc":{"type":"lxc"}}}"#.into()),
        "lxc",
    );
}

/// And to the Proxmox backend (the stand-in).
#[test]
fn cri_runtime_handler_on_pct() {
    let pve = common::pve::Pve::configured("", "pve");
    let config = std::fs::read_to_string(pve.env.config.as_ref().unwrap()).unwrap();
    cri_pod("nexcage-pct", Some(config), "pve");
    assert_eq!(pve.pct(&["list"]).stdout, "", "pct list");
}

/// Runs a pod through `handler`; with `routing`, the handler is added to the CRI
/// config with a BinaryName that runs nexcage with that config.
fn cri_pod(handler: &str, routing: Option<String>, backend: &str) {
    let root = "/run/containerd/runc/k8s.io";
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config-cri.toml");
    let template = std::fs::read_to_string(repo().join("hack/containerd/config-cri.toml")).unwrap();
    let mut text = template.replace(
        "BinaryName = \"/usr/local/bin/nexcage\"",
        &format!("BinaryName = \"{}\"", nexcage()),
    );
    assert_ne!(text, template, "BinaryName not found in config-cri.toml");
    if let Some(routing) = routing {
        let routing_path = config_dir.path().join("nexcage.json");
        std::fs::write(&routing_path, routing).unwrap();
        let wrapper = config_dir.path().join(handler);
        common::write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\nexec '{}' --config '{}' \"$@\"\n",
                nexcage(),
                routing_path.display()
            ),
        );
        let table = format!("plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{handler}");
        text.push_str(&format!(
            "\n[{table}]\n  runtime_type = \"io.containerd.runc.v2\"\n[{table}.options]\n  BinaryName = \"{}\"\n",
            wrapper.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let containerd = Containerd::start(Some(&config));
    containerd.import("k8s.io");
    let logs = containerd.dir.join("pod-logs");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = unique("nxc-cri");
    let result: Result<(), Error> = runtime.block_on(async {
        use cri::*;
        let mut rt = cri_client(&containerd.sock).await?;
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: name.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: handler.into(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "c1".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), "echo cri-ok; exit 42".into()],
            log_path: "c1.log".into(),
            ..Default::default()
        };
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container),
                sandbox_config: Some(sandbox),
            })
            .await?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let status = rt
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .ok_or("no container status")?;
            if status.state == ContainerState::ContainerExited as i32 {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "container not exited: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.exit_code, 42, "{status:?}");
        let log = std::fs::read_to_string(logs.join("c1.log"))?;
        assert!(log.contains("cri-ok"), "{log:?}");
        // The sandbox runs through nexcage; the exited container's task was already
        // deleted by CRI, and nexcage with it.
        assert_eq!(pod.len(), 64, "{pod}");
        assert_eq!(nexcage_state(root, &pod)["status"], "running");
        assert_eq!(recorded_backend(root, &pod), backend);
        assert_forgotten(root, &id);

        rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        assert_forgotten(root, &id);
        assert_forgotten(root, &pod);
        Ok(())
    });
    result.unwrap();
}
