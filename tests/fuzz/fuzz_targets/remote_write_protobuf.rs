#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_distributor::fuzz::remote_write_protobuf(data));
