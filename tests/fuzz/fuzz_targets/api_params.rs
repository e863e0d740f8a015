#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_querier::fuzz::api_params(data));
