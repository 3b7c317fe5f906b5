//! Re-registration is triggered by the runtime's socket appearing, not by a timer.

mod common;

use std::time::Duration;

use common::*;
use nri_plugin::testing::RuntimePeer;
use nri_plugin::{Backoff, ConnectionEvent, Runner};
use tokio::sync::mpsc;

/// The fallback retry is an hour away: only the socket's appearance can bring the plugin back.
fn hour_backoff() -> Backoff {
    Backoff { initial: Duration::from_secs(3600), max: Duration::from_secs(3600), multiplier: 1.0 }
}

async fn wait_for(events: &mut mpsc::UnboundedReceiver<ConnectionEvent>, what: impl Fn(&ConnectionEvent) -> bool) {
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if what(&ev) {
                return;
            }
        }
        panic!("runner stopped");
    })
    .await
    .expect("event in time");
}

/// A runner for `path` (an hour between retries, no environment) with a [`Recorder`] plugin,
/// running; its connection events come out of the receiver.
fn spawn_runner(
    path: &std::path::Path,
) -> (tokio::task::JoinHandle<Result<(), nri_plugin::Error>>, mpsc::UnboundedReceiver<ConnectionEvent>) {
    let (etx, events) = mpsc::unbounded_channel();
    let runner = Runner::builder("driftguard", "10")
        .socket_path(path)
        .use_env(false)
        .backoff(hour_backoff())
        .on_connection_event(move |ev| {
            let _ = etx.send(ev.clone());
        })
        .build()
        .unwrap();
    let (ctx, _calls) = mpsc::unbounded_channel();
    let task = tokio::spawn(runner.run(Recorder { calls: ctx, release: Default::default(), sync_updates: 0 }));
    (task, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregisters_when_the_socket_reappears_not_at_the_fallback() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // The socket's directory does not exist at first either (containerd creates /var/run/nri).
    let path = dir.path().join("nri/nri.sock");
    let (task, mut events) = spawn_runner(&path);

    // Boot: no runtime yet. The runner tried once and now waits.
    wait_for(&mut events, |e| matches!(e, ConnectionEvent::ConnectFailed { attempt: 1, .. })).await;
    std::fs::create_dir(dir.path().join("nri")).unwrap();
    let peer = RuntimePeer::bind(&path).unwrap();
    let mut conn = peer.accept().await.expect("connected when the socket appeared");
    conn.handshake().await.unwrap();
    wait_for(&mut events, |e| matches!(e, ConnectionEvent::Configured { connection: 1, .. })).await;

    // The runtime restarts: its socket goes away, the runner's immediate attempt fails and it
    // waits (the barrier: its ConnectFailed), then the socket comes back.
    peer.close();
    conn.close();
    wait_for(&mut events, |e| matches!(e, ConnectionEvent::ConnectFailed { .. })).await;
    let peer = RuntimePeer::bind(&path).unwrap();
    let mut conn = peer.accept().await.expect("reconnected when the socket reappeared");
    conn.handshake().await.unwrap();
    wait_for(&mut events, |e| matches!(e, ConnectionEvent::Configured { connection: 2, .. })).await;
    assert!(!task.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_waited_out_until_the_runtime_binds_a_new_one() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    // A socket file nobody listens on (a runtime that died without cleaning up).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let (_task, mut events) = spawn_runner(&path);
    wait_for(&mut events, |e| matches!(e, ConnectionEvent::ConnectFailed { attempt: 1, .. })).await;
    // The runtime starts: removes the stale socket and binds a new one.
    let peer = RuntimePeer::bind(&path).unwrap();
    let mut conn = peer.accept().await.expect("connected to the new socket");
    conn.handshake().await.unwrap();
}
