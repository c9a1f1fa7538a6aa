//! `status.compressedNodes`: any text, and any bytes gzipped and base64-encoded (so that the
//! JSON reader behind the gzip layer is reached too), decoded without a panic.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kfp_event_bridge::derive::nodes::decompress(text);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("in memory");
    let packed = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("in memory"));
    let _ = kfp_event_bridge::derive::nodes::decompress(&packed);
});
