//! Drives a plugin through the runtime-side test peer over a real unix socket.

mod common;

use std::time::Duration;

use common::*;
use nri_plugin::api::*;
use nri_plugin::protobuf::MessageField;
use nri_plugin::testing::{Delivery, EventReply, LifecycleEvent, PeerConnection, RuntimePeer};
use nri_plugin::{ConnectionEvent, Error, EventMask, NRI_API_VERSION};

async fn connect(dir: &tempfile::TempDir) -> (RuntimePeer, Harness, PeerConnection) {
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let harness = Harness::start(peer.path());
    let conn = peer.accept().await.unwrap();
    (peer, harness, conn)
}

async fn handshake(h: &mut Harness, conn: &mut PeerConnection) {
    let (reg, cfg) = conn.handshake().await.unwrap();
    assert_eq!(reg.plugin_name, "driftguard");
    assert_eq!(reg.plugin_idx, "10");
    assert_eq!(reg.NRI_version, NRI_API_VERSION);
    assert_eq!(cfg.events as u32, EventMask::ALL.bits());
    assert_eq!(conn.events(), Some(EventMask::ALL));
    match h.next_call().await {
        Call::Configure(req) => assert_eq!(req, PeerConnection::default_configure_request()),
        other => panic!("expected Configure, got {other:?}"),
    }
}

async fn lifecycle(delivery: Delivery) {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    h.wait_event(|e| matches!(e, ConnectionEvent::Configured { connection: 1, .. })).await;

    // Chunked synchronize: 5 pods and 7 containers, at most 2 of each per message.
    let pods: Vec<_> = (0..5).map(pod).collect();
    let ctrs: Vec<_> = (0..7).map(|i| container(i, &pods[i % 5])).collect();
    let updates = conn.synchronize(pods.clone(), ctrs.clone(), 2).await.unwrap();
    assert!(updates.is_empty());
    assert_eq!(h.next_call().await, Call::Synchronize(pods, ctrs));
    h.wait_event(|e| matches!(e, ConnectionEvent::Synchronized { pods: 5, containers: 7, .. })).await;

    // A pod's full lifecycle.
    let p = pod_named(42, "web");
    let c = container_named(42, &p, "nginx");
    assert!(!c.linux.cgroups_path.is_empty());
    for ev in LifecycleEvent::pod_lifecycle(&p, &c) {
        let reply = conn.send(delivery, ev.clone()).await.unwrap();
        let call = h.next_call().await;
        assert_eq!(call, expected_call(&ev), "{:?}", ev.event());
        if let Call::StartContainer(pp, cc) = &call {
            assert_eq!(pp.annotations["driftguard.io/policy"], "strict");
            assert_eq!(cc.annotations["driftguard.io/allow"], "/usr/bin/app-42");
            assert_eq!(cc.linux.cgroups_path, c.linux.cgroups_path);
            assert_eq!(pp.linux.cgroups_path, p.linux.cgroups_path);
        }
        if let EventReply::CreateContainer(resp) = reply {
            assert_eq!(resp.adjust.annotations["driftguard.io/seen"], c.id);
        }
    }

    // Events only NRI v0.10+ runtimes send.
    let mut upd = UpdatePodSandboxRequest::new();
    upd.pod = MessageField::some(p.clone());
    upd.linux_resources = c.linux.resources.clone();
    conn.send(delivery, LifecycleEvent::UpdatePodSandbox(upd.clone())).await.unwrap();
    assert_eq!(h.next_call().await, Call::UpdatePodSandbox(upd));
    conn.send(delivery, LifecycleEvent::PostUpdatePodSandbox(p.clone())).await.unwrap();
    assert_eq!(h.next_call().await, Call::PostUpdatePodSandbox(p.clone()));
    let mut val = ValidateContainerAdjustmentRequest::new();
    val.pod = MessageField::some(p.clone());
    val.container = MessageField::some(c.clone());
    let reply = conn.send(delivery, LifecycleEvent::ValidateContainerAdjustment(val.clone())).await.unwrap();
    assert_eq!(reply, EventReply::ValidateContainerAdjustment(ValidateContainerAdjustmentResponse::new()));
    assert_eq!(h.next_call().await, Call::ValidateContainerAdjustment(val));

    // Shutdown.
    conn.shutdown().await.unwrap();
    assert_eq!(h.next_call().await, Call::Shutdown);
    h.wait_event(|e| matches!(e, ConnectionEvent::ShutdownRequested { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_dedicated_rpcs() {
    lifecycle(Delivery::Dedicated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_state_change() {
    lifecycle(Delivery::StateChange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_change_reaches_start_container() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    let p = pod(1);
    let c = container(1, &p);
    conn.state_change(Event::START_CONTAINER, p.clone(), Some(c.clone())).await.unwrap();
    assert_eq!(h.next_call().await, Call::StartContainer(p.clone(), c.clone()));
    // A StateChange without pod and container still reaches the handler, with empty messages.
    let mut sc = StateChangeEvent::new();
    sc.event = Event::REMOVE_CONTAINER.into();
    let _: Empty = conn.call("StateChange", &sc).await.unwrap();
    assert_eq!(h.next_call().await, Call::RemoveContainer(PodSandbox::new(), Container::new()));
    // An unknown event number is ignored, not an error.
    let mut sc = StateChangeEvent::new();
    sc.event = nri_plugin::protobuf::EnumOrUnknown::from_i32(99);
    let _: Empty = conn.call("StateChange", &sc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_reaches_the_runtime_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    let p = pod(3);
    let bad = container_named(3, &p, "refuse-me");
    for delivery in [Delivery::Dedicated, Delivery::StateChange] {
        let err = conn
            .send(delivery, LifecycleEvent::StartContainer(p.clone(), bad.clone()))
            .await
            .expect_err("start must be refused");
        match err {
            Error::Rpc { code, message, method } => {
                assert_eq!(code, 2, "UNKNOWN");
                assert!(message.contains("driftguard refuses container refuse-me"), "{message}");
                assert_eq!(method, if delivery == Delivery::Dedicated { "StartContainer" } else { "StateChange" });
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(matches!(h.next_call().await, Call::StartContainer(..)));
    }
    let err = conn
        .send(Delivery::Dedicated, LifecycleEvent::CreateContainer(p.clone(), bad.clone()))
        .await
        .expect_err("create must be refused");
    assert!(matches!(err, Error::Rpc { code: 2, .. }), "{err:?}");
    // The connection is still fine afterwards.
    let good = container(4, &p);
    conn.send(Delivery::Dedicated, LifecycleEvent::StartContainer(p.clone(), good)).await.unwrap();
    assert!(!conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resynchronizes() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    conn.synchronize(vec![pod(1)], vec![], 10).await.unwrap();
    assert!(matches!(h.next_call().await, Call::Synchronize(p, _) if p.len() == 1));
    assert!(h.client.is_connected());

    // The runtime goes away: its socket is removed first, then the connection closes. (In the
    // other order the runner's immediate retry can reach the old listener before it is gone.)
    let path = peer.path().to_path_buf();
    peer.close();
    conn.close();
    h.wait_event(|e| matches!(e, ConnectionEvent::Disconnected { connection: 1, .. })).await;
    assert!(!h.client.is_connected());
    // Connecting fails while the socket is absent, with growing delays.
    h.wait_event(|e| matches!(e, ConnectionEvent::ConnectFailed { attempt: 2, .. })).await;

    // The runtime comes back.
    let peer = RuntimePeer::bind(&path).unwrap();
    let mut conn = peer.accept().await.unwrap();
    handshake(&mut h, &mut conn).await;
    let pods = vec![pod(1), pod(2)];
    let ctrs = vec![container(1, &pods[0])];
    conn.synchronize(pods.clone(), ctrs.clone(), 1).await.unwrap();
    assert_eq!(h.next_call().await, Call::Synchronize(pods, ctrs));
    h.wait_event(|e| matches!(e, ConnectionEvent::Connected { connection: 2 })).await;
    // Registration reply and synchronization may be reported in either order.
    let (mut registered, mut synchronized) = (false, false);
    while !(registered && synchronized) {
        match h.wait_event(|_| true).await {
            ConnectionEvent::Registered { connection: 2 } => registered = true,
            ConnectionEvent::Synchronized { connection: 2, .. } => synchronized = true,
            _ => {}
        }
    }
    assert!(h.client.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let mut h = Harness::start(&path);
    h.wait_event(|e| matches!(e, ConnectionEvent::ConnectFailed { attempt: 3, .. })).await;
    let peer = RuntimePeer::bind(&path).unwrap();
    let mut conn = peer.accept().await.unwrap();
    handshake(&mut h, &mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_does_not_stall_others() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    let slow = pod_named(1, "slow");
    let fast = pod_named(2, "fast");
    let slow_start = conn.send(Delivery::Dedicated, LifecycleEvent::StartContainer(slow.clone(), container(1, &slow)));
    tokio::pin!(slow_start);
    tokio::select! {
        _ = &mut slow_start => panic!("slow handler finished before being released"),
        r = async {
            conn.send(Delivery::Dedicated, LifecycleEvent::StartContainer(fast.clone(), container(2, &fast))).await?;
            conn.send(Delivery::StateChange, LifecycleEvent::RemovePodSandbox(fast.clone())).await
        } => { r.unwrap(); }
    }
    assert!(matches!(h.next_call().await, Call::StartContainer(p, _) if p.name == "fast"));
    assert!(matches!(h.next_call().await, Call::RemovePodSandbox(p) if p.name == "fast"));
    h.release.notify_one();
    slow_start.await.unwrap();
    assert!(matches!(h.next_call().await, Call::StartContainer(p, _) if p.name == "slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_containers_from_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    let mut failed = ContainerUpdate::new();
    failed.container_id = "b".into();
    conn.set_update_containers_reply(vec![failed.clone()]);
    let client = h.client.clone();
    let call = tokio::spawn(async move {
        let mut a = ContainerUpdate::new();
        a.container_id = "a".into();
        let mut b = ContainerUpdate::new();
        b.container_id = "b".into();
        let mut ev = ContainerEviction::new();
        ev.container_id = "c".into();
        ev.reason = "drift".into();
        client.update_containers(vec![a, b], vec![ev]).await
    });
    let req = conn.next_update_containers().await.unwrap();
    assert_eq!(req.update.len(), 2);
    assert_eq!(req.evict[0].reason, "drift");
    assert_eq!(call.await.unwrap().unwrap(), vec![failed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_protobuf_is_an_error_and_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, mut h, mut conn) = connect(&dir).await;
    handshake(&mut h, &mut conn).await;
    // Field 1 with wire type 7 (invalid), then a truncated varint.
    let err =
        conn.call_raw("StartContainer", vec![0x0f, 0xff, 0xff, 0xff]).await.expect_err("garbage must be rejected");
    assert!(matches!(err, Error::Rpc { code: 3, .. }), "INVALID_ARGUMENT expected, got {err:?}");
    conn.closed().await.expect("plugin must hang up");
    let ev = h.wait_event(|e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    assert!(matches!(ev, ConnectionEvent::Disconnected { error: Some(ref m), .. } if m.contains("protocol")), "{ev:?}");
    // ... and comes back.
    let mut conn = peer.accept().await.unwrap();
    handshake(&mut h, &mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_sync_replies_follow_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let peer = RuntimePeer::bind(dir.path().join("nri.sock")).unwrap();
    let mut h = Harness::start_with(peer.path(), 3);
    let mut conn = peer.accept().await.unwrap();
    handshake(&mut h, &mut conn).await;
    let pods: Vec<_> = (0..3).map(pod).collect();
    let ctrs: Vec<_> = (0..4).map(|i| container(i, &pods[i % 3])).collect();
    // Intermediate chunk by hand: {more: true} and no updates.
    let mut first = SynchronizeRequest::new();
    first.pods = pods[..2].to_vec();
    first.containers = ctrs[..2].to_vec();
    first.more = true;
    let resp: SynchronizeResponse = conn.call("Synchronize", &first).await.unwrap();
    assert!(resp.more);
    assert!(resp.update.is_empty());
    let mut last = SynchronizeRequest::new();
    last.pods = pods[2..].to_vec();
    last.containers = ctrs[2..].to_vec();
    let resp: SynchronizeResponse = conn.call("Synchronize", &last).await.unwrap();
    assert!(!resp.more);
    assert_eq!(resp.update.len(), 3);
    assert_eq!(h.next_call().await, Call::Synchronize(pods, ctrs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_without_reconnect_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let runner =
        nri_plugin::Runner::builder("once", "01").socket_path(&path).use_env(false).reconnect(false).build().unwrap();
    struct Nop;
    impl nri_plugin::Plugin for Nop {}
    let res = tokio::time::timeout(Duration::from_secs(5), runner.run(Nop)).await.unwrap();
    assert!(matches!(res, Err(Error::Connect { .. })), "{res:?}");
}
