//! The 4096-byte frame limit, observed on the wire between a plugin and the test peer through a
//! recording proxy, with a Synchronize of 1,000 pods and 1,000 containers.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use nri_plugin::api::SynchronizeRequest;
use nri_plugin::protobuf::Message;
use nri_plugin::testing::wire::{FrameDecoder, MAX_WRITE_PAYLOAD, PLUGIN_SERVICE_CONN};
use nri_plugin::testing::RuntimePeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

type Log = Arc<Mutex<Vec<(u32, usize)>>>;

/// Copies `from` to `to`, recording (conn id, payload length) of every frame that passes.
async fn pump(mut from: tokio::net::unix::OwnedReadHalf, mut to: tokio::net::unix::OwnedWriteHalf, log: Log) {
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        dec.push(&buf[..n]);
        while let Some(frame) = dec.next_frame().expect("valid frames") {
            log.lock().unwrap().push((frame.conn_id, frame.payload.len()));
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_synchronize_is_split_into_small_frames() {
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("runtime.sock")).unwrap();
    let proxy_path = dir.path().join("proxy.sock");
    let proxy = UnixListener::bind(&proxy_path).unwrap();
    let to_runtime: Log = Arc::default();
    let to_plugin: Log = Arc::default();
    {
        let (to_runtime, to_plugin) = (to_runtime.clone(), to_plugin.clone());
        let runtime_path = peer.path().to_path_buf();
        tokio::spawn(async move {
            let (plugin_side, _) = proxy.accept().await.unwrap();
            let runtime_side = UnixStream::connect(&runtime_path).await.unwrap();
            let (pr, pw) = plugin_side.into_split();
            let (rr, rw) = runtime_side.into_split();
            tokio::spawn(pump(pr, rw, to_runtime));
            tokio::spawn(pump(rr, pw, to_plugin));
        });
    }

    // The plugin answers the final chunk with an update for each of the 1,000 containers, so the
    // plugin -> runtime direction carries a large message too.
    let mut h = Harness::start_with(&proxy_path, 1000);
    let mut conn = peer.accept().await.unwrap();
    conn.handshake().await.unwrap();
    assert!(matches!(h.next_call().await, Call::Configure(_)));

    let pods: Vec<_> = (0..1000).map(pod).collect();
    let ctrs: Vec<_> = (0..1000).map(|i| container(i, &pods[i])).collect();
    let mut whole = SynchronizeRequest::new();
    whole.pods = pods.clone();
    whole.containers = ctrs.clone();
    let size = whole.write_to_bytes().unwrap().len();
    assert!(size > 512 << 10, "the test message should be large, is {size} bytes");

    // One single message, not chunked by the peer.
    let updates = conn.synchronize(pods.clone(), ctrs.clone(), 1000).await.unwrap();
    assert_eq!(updates.len(), 1000);
    assert_eq!(updates[999].container_id, ctrs[999].id);
    // Arrived intact.
    match h.next_call().await {
        Call::Synchronize(p, c) => {
            assert!(p == pods, "pods differ");
            assert!(c == ctrs, "containers differ");
        }
        other => panic!("expected Synchronize, got {other:?}"),
    }

    // runtime->plugin carries the ~1 MB request, plugin->runtime the reply with 1,000 updates.
    for (dir, log, min_bytes) in
        [("runtime->plugin", &to_plugin, 512 << 10), ("plugin->runtime", &to_runtime, 32 << 10)]
    {
        let log = log.lock().unwrap();
        let max = log.iter().map(|(_, len)| *len).max().unwrap_or(0);
        let on_plugin_conn: usize = log.iter().filter(|(id, _)| *id == PLUGIN_SERVICE_CONN).map(|(_, len)| *len).sum();
        assert!(max <= MAX_WRITE_PAYLOAD, "{dir}: frame of {max} bytes");
        assert!(on_plugin_conn > min_bytes, "{dir}: only {on_plugin_conn} bytes seen");
        assert!(log.len() > min_bytes / MAX_WRITE_PAYLOAD, "{dir}: only {} frames", log.len());
    }
}
