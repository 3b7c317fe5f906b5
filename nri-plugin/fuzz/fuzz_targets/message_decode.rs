//! Decodes arbitrary bytes as each NRI request message the plugin accepts, and as ttrpc-framed
//! mux traffic. Decoding must never panic; whatever decodes must re-encode and decode to the same
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nri_plugin::api::*;
use nri_plugin::protobuf::Message;

fn roundtrip<M: Message + PartialEq>(bytes: &[u8]) {
    if let Ok(m) = M::parse_from_bytes(bytes) {
        let again = m.write_to_bytes().expect("decoded message re-encodes");
        let m2 = M::parse_from_bytes(&again).expect("re-encoded message decodes");
        assert!(m == m2, "roundtrip changed the message");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 20 {
        0 => roundtrip::<ConfigureRequest>(bytes),
        1 => roundtrip::<SynchronizeRequest>(bytes),
        2 => roundtrip::<RunPodSandboxRequest>(bytes),
        3 => roundtrip::<UpdatePodSandboxRequest>(bytes),
        4 => roundtrip::<PostUpdatePodSandboxRequest>(bytes),
        5 => roundtrip::<StopPodSandboxRequest>(bytes),
        6 => roundtrip::<RemovePodSandboxRequest>(bytes),
        7 => roundtrip::<CreateContainerRequest>(bytes),
        8 => roundtrip::<PostCreateContainerRequest>(bytes),
        9 => roundtrip::<StartContainerRequest>(bytes),
        10 => roundtrip::<PostStartContainerRequest>(bytes),
        11 => roundtrip::<UpdateContainerRequest>(bytes),
        12 => roundtrip::<PostUpdateContainerRequest>(bytes),
        13 => roundtrip::<StopContainerRequest>(bytes),
        14 => roundtrip::<RemoveContainerRequest>(bytes),
        15 => roundtrip::<StateChangeEvent>(bytes),
        16 => roundtrip::<ValidateContainerAdjustmentRequest>(bytes),
        17 => roundtrip::<RegisterPluginRequest>(bytes),
        18 => roundtrip::<UpdateContainersRequest>(bytes),
        _ => {
            // Mux frames whose payloads are read as ttrpc messages (10-byte header + body).
            let mut dec = nri_plugin::testing::wire::FrameDecoder::new();
            dec.push(bytes);
            while let Ok(Some(frame)) = dec.next_frame() {
                if let Some((hdr, body)) = frame.payload.split_first_chunk::<10>() {
                    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
                    if len == body.len() {
                        roundtrip::<StartContainerRequest>(body);
                    }
                }
            }
        }
    }
});
