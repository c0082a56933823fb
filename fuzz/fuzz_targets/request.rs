//! Any bytes as a request body: the parsers must return a request or a 4xx error, never panic.
#![no_main]

use emesh_server::parse::{parse_chat_request, parse_completion_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for status in [
        parse_completion_request(data, "m").err().map(|e| e.status),
        parse_chat_request(data, "m").err().map(|e| e.status),
    ]
    .into_iter()
    .flatten()
    {
        assert!(status.is_client_error(), "{status}");
    }
});
