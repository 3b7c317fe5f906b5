//! Feeds arbitrary bytes, in arbitrary chunk sizes, to the mux frame decoder. It must never panic,
//! never buffer more than one frame's worth of data, and must return exactly the frames a
//! straightforward reference parser finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nri_plugin::testing::wire::{FrameDecoder, FrameHeader, HEADER_LEN, MAX_FRAME_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let chunk = usize::from(split).max(1);

    let mut dec = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut failed = false;
    'outer: for piece in bytes.chunks(chunk) {
        dec.push(piece);
        assert!(dec.buffered() <= HEADER_LEN + MAX_FRAME_PAYLOAD + chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'outer;
                }
            }
        }
    }

    // Reference parse of the whole input.
    let mut expected = Vec::new();
    let mut rest = bytes;
    let mut ref_failed = false;
    while let Some(hdr) = rest.first_chunk::<HEADER_LEN>() {
        match FrameHeader::parse(hdr) {
            Ok(h) => {
                let end = HEADER_LEN + h.len as usize;
                if rest.len() < end {
                    break;
                }
                expected.push((h.conn_id, rest[HEADER_LEN..end].to_vec()));
                rest = &rest[end..];
            }
            Err(_) => {
                ref_failed = true;
                break;
            }
        }
    }
    assert_eq!(failed, ref_failed);
    let got: Vec<_> = frames.into_iter().map(|f| (f.conn_id, f.payload)).collect();
    assert_eq!(got, expected);
    if !failed {
        assert_eq!(dec.finish().is_err(), !rest.is_empty());
    }
});
