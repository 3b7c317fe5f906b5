//! A plugin launched by the runtime: socket, name and index come from NRI_PLUGIN_SOCKET,
//! NRI_PLUGIN_NAME and NRI_PLUGIN_IDX. (Own test binary: it sets process environment variables.)

mod common;

use std::os::fd::IntoRawFd;
use std::time::Duration;

use common::*;
use nri_plugin::testing::{Delivery, LifecycleEvent, PeerConnection};
use nri_plugin::{Runner, PLUGIN_IDX_ENV, PLUGIN_NAME_ENV, PLUGIN_SOCKET_ENV};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_the_inherited_socket_and_stops_when_it_closes() {
    init_tracing();
    let (runtime_end, plugin_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = plugin_end.into_raw_fd();
    std::env::set_var(PLUGIN_SOCKET_ENV, fd.to_string());
    std::env::set_var(PLUGIN_NAME_ENV, "launched");
    std::env::set_var(PLUGIN_IDX_ENV, "05");

    let runner = Runner::builder("ignored", "99").socket_path("/nonexistent/nri.sock").build().unwrap();
    assert_eq!((runner.name(), runner.index()), ("launched", "05"));
    let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let plugin = Recorder { calls: tx, release: Default::default(), sync_updates: 0 };
    let task = tokio::spawn(runner.run(plugin));

    runtime_end.set_nonblocking(true).unwrap();
    let mut conn = PeerConnection::from_stream(tokio::net::UnixStream::from_std(runtime_end).unwrap()).await.unwrap();
    let (reg, _) = conn.handshake().await.unwrap();
    assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("launched", "05"));
    let p = pod(1);
    let c = container(1, &p);
    conn.send(Delivery::StateChange, LifecycleEvent::StartContainer(p.clone(), c.clone())).await.unwrap();
    let mut got_start = false;
    while let Ok(Some(call)) = tokio::time::timeout(WAIT, calls.recv()).await {
        if call == Call::StartContainer(p.clone(), c.clone()) {
            got_start = true;
            break;
        }
    }
    assert!(got_start);

    // No reconnecting with an inherited socket: run() returns once it closes.
    conn.close();
    let res = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert!(res.is_ok(), "{res:?}");

    // A malformed NRI_PLUGIN_SOCKET is a build error.
    std::env::set_var(PLUGIN_SOCKET_ENV, "not-a-number");
    assert!(Runner::builder("x", "01").build().is_err());
    assert!(Runner::builder("x", "01").use_env(false).build().is_ok());
}
