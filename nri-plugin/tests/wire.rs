//! The wire format, checked against hand-assembled bytes rather than this crate's own peer: mux
//! frames (conn id, length; big-endian) carrying ttrpc messages (length, stream id, type, flags),
//! the way containerd's Go implementation writes and reads them.

mod common;

use std::time::Duration;

use common::*;
use nri_plugin::api::{ConfigureRequest, ConfigureResponse, RegisterPluginRequest};
use nri_plugin::protobuf::Message;
use nri_plugin::testing::wire::{FrameDecoder, FrameHeader, MAX_WRITE_PAYLOAD};
use nri_plugin::EventMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;

fn ttrpc_message(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&stream_id.to_be_bytes());
    v.push(kind);
    v.push(0);
    v.extend_from_slice(body);
    v
}

fn frame(conn_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = FrameHeader { conn_id, len: payload.len() as u32 }.encode().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads frames until connection `conn_id` has delivered one whole ttrpc message.
async fn read_message(sock: &mut UnixStream, dec: &mut FrameDecoder, conn_id: u32) -> (u32, u8, Vec<u8>) {
    let mut stream = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        while let Some(f) = dec.next_frame().unwrap() {
            assert!(f.payload.len() <= MAX_WRITE_PAYLOAD);
            if f.conn_id == conn_id {
                stream.extend_from_slice(&f.payload);
            }
        }
        if stream.len() >= 10 {
            let len = u32::from_be_bytes(stream[0..4].try_into().unwrap()) as usize;
            if stream.len() >= 10 + len {
                assert_eq!(stream.len(), 10 + len, "one message expected");
                let sid = u32::from_be_bytes(stream[4..8].try_into().unwrap());
                return (sid, stream[8], stream[10..].to_vec());
            }
        }
        let n = tokio::time::timeout(WAIT, sock.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "plugin closed the socket");
        dec.push(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_assembled_runtime_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let mut h = Harness::start(&path);
    let (mut sock, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut dec = FrameDecoder::new();

    // 1. The plugin calls RegisterPlugin on the runtime's connection (2), stream id 1.
    let (sid, kind, body) = read_message(&mut sock, &mut dec, 2).await;
    assert_eq!((sid, kind), (1, REQUEST));
    let req = ttrpc::Request::parse_from_bytes(&body).unwrap();
    assert_eq!(req.service, "nri.pkg.api.v1alpha1.Runtime");
    assert_eq!(req.method, "RegisterPlugin");
    assert!(req.timeout_nano > 0);
    let reg = RegisterPluginRequest::parse_from_bytes(&req.payload).unwrap();
    assert_eq!((reg.plugin_name.as_str(), reg.plugin_idx.as_str()), ("driftguard", "10"));

    // Reply OK, as one frame, preceded by a frame for a connection nobody opened.
    let mut resp = ttrpc::Response::new();
    resp.status = Some(ttrpc::get_status(ttrpc::Code::OK, "")).into();
    let mut wire = frame(9, b"ignored");
    wire.extend(frame(2, &ttrpc_message(1, RESPONSE, &resp.write_to_bytes().unwrap())));
    sock.write_all(&wire).await.unwrap();

    // 2. The runtime calls Configure on the plugin's connection (1); the message is split over
    //    three frames, interleaved with an empty frame and one for another connection.
    let mut cfg = ConfigureRequest::new();
    cfg.runtime_name = "containerd".into();
    cfg.runtime_version = "2.3.0".into();
    cfg.NRI_version = "v0.12.0".into();
    cfg.request_timeout = 2000;
    let mut req = ttrpc::Request::new();
    req.service = "nri.pkg.api.v1alpha1.Plugin".into();
    req.method = "Configure".into();
    req.payload = cfg.write_to_bytes().unwrap();
    req.timeout_nano = 2_000_000_000;
    let msg = ttrpc_message(1, REQUEST, &req.write_to_bytes().unwrap());
    let mut wire = frame(1, &msg[..3]);
    wire.extend(frame(1, &[]));
    wire.extend(frame(7, b"other"));
    wire.extend(frame(1, &msg[3..12]));
    wire.extend(frame(1, &msg[12..]));
    for chunk in wire.chunks(5) {
        sock.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (sid, kind, body) = read_message(&mut sock, &mut dec, 1).await;
    assert_eq!((sid, kind), (1, RESPONSE));
    let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
    assert_eq!(resp.status.code.value(), 0);
    let cfg_resp = ConfigureResponse::parse_from_bytes(&resp.payload).unwrap();
    assert_eq!(cfg_resp.events as u32, EventMask::ALL.bits());
    match h.next_call().await {
        Call::Configure(got) => assert_eq!(got, cfg),
        other => panic!("expected Configure, got {other:?}"),
    }

    // 3. An unknown method answers with a non-OK status rather than closing.
    let mut req = ttrpc::Request::new();
    req.service = "nri.pkg.api.v1alpha1.Plugin".into();
    req.method = "NoSuchMethod".into();
    sock.write_all(&frame(1, &ttrpc_message(3, REQUEST, &req.write_to_bytes().unwrap()))).await.unwrap();
    let (sid, kind, body) = read_message(&mut sock, &mut dec, 1).await;
    assert_eq!((sid, kind), (3, RESPONSE));
    let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
    assert_eq!(resp.status.code.value(), ttrpc::Code::UNIMPLEMENTED as i32);
}
