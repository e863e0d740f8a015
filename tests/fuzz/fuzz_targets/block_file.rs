#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_storage::fuzz::block_file(data));
