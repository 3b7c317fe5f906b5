//! Runs the `logger` example against the test peer and checks its JSON lines.

mod common;

use std::process::Stdio;

use common::*;
use nri_plugin::testing::{Delivery, LifecycleEvent, RuntimePeer};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_prints_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let mut child = example_command("logger", peer.path()).arg("--all-events").stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut conn = peer.accept().await.unwrap();
    let (reg, _) = conn.handshake().await.unwrap();
    assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("logger", "99"));
    let p = pod(1);
    let c = container(1, &p);
    conn.synchronize(vec![p.clone()], vec![c.clone()], 10).await.unwrap();
    conn.send(Delivery::StateChange, LifecycleEvent::StartContainer(p.clone(), c.clone())).await.unwrap();

    let mut seen = Vec::new();
    while !seen.iter().any(|e: &serde_json::Value| e["event"] == "StartContainer") {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().expect("output");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        assert!(v["ts"].is_number());
        seen.push(v);
    }
    let events: Vec<_> = seen.iter().map(|v| v["event"].as_str().unwrap().to_string()).collect();
    assert!(events.contains(&"Configure".to_string()), "{events:?}");
    assert!(events.contains(&"Synchronize".to_string()), "{events:?}");
    let start = seen.iter().find(|v| v["event"] == "StartContainer").unwrap();
    assert_eq!(start["container"]["id"], c.id.as_str());
    assert_eq!(start["container"]["linux"]["cgroupsPath"], c.linux.cgroups_path.as_str());
    assert_eq!(start["pod"]["annotations"]["driftguard.io/policy"], "strict");
    let _ = child.kill().await;
}
