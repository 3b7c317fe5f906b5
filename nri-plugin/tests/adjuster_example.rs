//! Runs the `adjuster` example against the test peer: its subscription, its answer to
//! CreateContainer and its namespace filter. (The same example against a real containerd, with
//! the env var and mount checked inside the container, is `tests/nri_example.rs` of the
//! driftguard crate.)

mod common;

use common::*;
use nri_plugin::api::Event;
use nri_plugin::testing::{Delivery, EventReply, LifecycleEvent, RuntimePeer};
use nri_plugin::EventMask;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjuster_answers_create_container_with_env_and_mount() {
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let mut child = example_command("adjuster", peer.path())
        .args(["--index", "42", "--namespace", "team-a"])
        .args(["--env", "GREETING=hello world", "--env", "EMPTY="])
        .args(["--mount", "/srv/data:/data:ro", "--mount", "/srv/scratch:/scratch"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut conn = peer.accept().await.unwrap();
    let (reg, _) = conn.handshake().await.unwrap();
    assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("adjuster", "42"));
    assert_eq!(conn.events(), Some(EventMask::of(&[Event::CREATE_CONTAINER])));
    conn.synchronize(Vec::new(), Vec::new(), 10).await.unwrap();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().expect("output");
    assert_eq!(line, "synchronized pods=0 containers=0");

    let mut p = pod(1);
    p.namespace = "team-a".into();
    let c = container(1, &p);
    let reply = conn.send(Delivery::Dedicated, LifecycleEvent::CreateContainer(p.clone(), c.clone())).await.unwrap();
    let EventReply::CreateContainer(resp) = reply else { panic!("unexpected reply {reply:?}") };
    let env: Vec<(&str, &str)> = resp.adjust.env.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(env, [("GREETING", "hello world"), ("EMPTY", "")]);
    let mounts: Vec<(&str, &str, &str, Vec<&str>)> = resp
        .adjust
        .mounts
        .iter()
        .map(|m| {
            (
                m.source.as_str(),
                m.destination.as_str(),
                m.type_.as_str(),
                m.options.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("/srv/data", "/data", "bind", vec!["rbind", "ro"]),
            ("/srv/scratch", "/scratch", "bind", vec!["rbind", "rw"])
        ]
    );
    assert!(resp.update.is_empty() && resp.evict.is_empty());
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().expect("output");
    assert_eq!(line, format!("adjusted team-a/{}/{} id={}", p.name, c.name, c.id));

    // Another namespace: no adjustment.
    let mut other = pod(2);
    other.namespace = "elsewhere".into();
    let c2 = container(2, &other);
    let reply = conn.send(Delivery::Dedicated, LifecycleEvent::CreateContainer(other, c2)).await.unwrap();
    let EventReply::CreateContainer(resp) = reply else { panic!("unexpected reply {reply:?}") };
    assert!(resp.adjust.is_none(), "{resp:?}");
    let _ = child.kill().await;
}

#[test]
fn adjuster_rejects_bad_arguments() {
    for args in [&["--env", "NOVALUE"][..], &["--mount", "relative:/x"], &["--mount", "/a"], &["--bogus"], &["--name"]]
    {
        let out = std::process::Command::new(example_binary("adjuster")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: adjuster"), "{args:?}: {err}");
    }
}
