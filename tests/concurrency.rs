//! Many containers created, started and deleted at once: no lost or corrupt records.

mod common;

use common::{Bundle, Env, unique};

#[test]
fn twenty_containers_in_parallel() {
    let env = Env::two_backends();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let ids: Vec<String> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                unique("r-par")
            } else {
                unique("par")
            }
        })
        .collect();
    std::thread::scope(|s| {
        for id in &ids {
            let (env, bundle) = (&env, &bundle);
            s.spawn(move || {
                env.detached(&["create", "--bundle", bundle.path(), id]);
                env.ok(&["start", id]);
                assert_eq!(env.status(id), "running");
            });
        }
    });
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(listed.len(), 20);
    assert!(
        listed.iter().all(|c| c["status"] == "running"),
        "{listed:?}"
    );
    let mut listed_ids: Vec<&str> = listed.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    listed_ids.sort();
    want.sort();
    assert_eq!(listed_ids, want);
    std::thread::scope(|s| {
        for id in &ids {
            let env = &env;
            s.spawn(move || env.ok(&["delete", "--force", id]));
        }
    });
    assert_eq!(env.ok(&["list", "--format", "json"]), "null\n");
    env.assert_clean();
}

/// The same id claimed by many at once: exactly one wins.
#[test]
fn racing_creates_of_one_id() {
    let env = Env::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique("race");
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let log = tempfile::NamedTempFile::new().unwrap();
                let ok = env
                    .cmd()
                    .args(["create", "--bundle", bundle.path(), &id])
                    .stdout(log.reopen().unwrap())
                    .stderr(log.reopen().unwrap())
                    .status()
                    .unwrap()
                    .success();
                if ok {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                } else {
                    let err = std::fs::read_to_string(log.path()).unwrap();
                    assert!(err.contains("already exists"), "{err}");
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
    assert_eq!(env.status(&id), "created");
    env.ok(&["delete", &id]);
    env.assert_clean();
}
