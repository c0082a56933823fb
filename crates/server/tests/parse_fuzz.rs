//! The request parsers over a few thousand seeded mutations of real requests: they never panic,
//! and every refusal is a 4xx naming a field.

use emesh_server::parse::{parse_chat_request, parse_completion_request};

const SEEDS: &[&str] = &[
    r#"{"model": "m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 5, "stop": ["\n", "."], "logprobs": 2, "stream": true, "stream_options": {"include_usage": true}}"#,
    r#"{"prompt": [1, 2, 3, 4], "max_completion_tokens": 3, "stop_token_ids": [7], "ignore_eos": true, "n": 2}"#,
    r#"{"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "logprobs": true, "top_logprobs": 3, "chat_template_kwargs": {"thinking": true}}"#,
    r#"{"messages": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "tool_choice": "auto", "reasoning_effort": "high"}"#,
];

const VALUES: &[&str] = &[
    "null",
    "true",
    "-1",
    "0",
    "1e400",
    "-9223372036854775809",
    "18446744073709551616",
    "0.5",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[[1]]",
    "[\"a\", 1]",
    "{\"a\": {\"b\": []}}",
    "\"\\ud800\"",
    "1.7976931348623157e308",
];

const KEYS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "n",
    "tools",
    "tool_choice",
    "chat_template_kwargs",
    "echo",
    "stop_token_ids",
    "presence_penalty",
    "best_of",
    "role",
    "content",
    "thinking",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(r: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + r.below(4) {
        let at = r.below(b.len() + 1);
        match r.below(7) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = r.next() as u8;
            }
            1 => b.insert(at, r.next() as u8),
            2 if !b.is_empty() => {
                let end = (at + r.below(12)).min(b.len());
                b.drain(at.min(end)..end);
            }
            3 => {
                let v = VALUES[r.below(VALUES.len())];
                b.splice(at..at, v.bytes());
            }
            4 => {
                // Replace a value after some `"key": ` with another JSON value.
                let text = String::from_utf8_lossy(&b).into_owned();
                let key = KEYS[r.below(KEYS.len())];
                if let Some(p) = text.find(&format!("\"{key}\": ")) {
                    let start = p + key.len() + 4;
                    let end = text[start..].find([',', '}']).map_or(text.len(), |e| start + e);
                    let v = VALUES[r.below(VALUES.len())];
                    b = format!("{}{v}{}", &text[..start], &text[end..]).into_bytes();
                }
            }
            5 => b.truncate(at),
            _ => {
                let end = (at + r.below(20)).min(b.len());
                let piece = b[at.min(end)..end].to_vec();
                b.splice(at..at, piece);
            }
        }
    }
    b
}

#[test]
fn mutated_requests_never_panic_and_fail_as_4xx() {
    let mut r = Rng(0x5eed);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..4000 {
        let seed = SEEDS[i % SEEDS.len()].as_bytes();
        let body = mutate(&mut r, seed);
        for result in [parse_completion_request(&body, "m").map(|_| ()), parse_chat_request(&body, "m").map(|_| ())] {
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    refused += 1;
                    assert!(e.status.is_client_error(), "{e} for {}", String::from_utf8_lossy(&body));
                    assert!(e.param.is_some() || e.status.as_u16() != 400, "{e}");
                    assert!(!e.message.is_empty());
                }
            }
        }
    }
    assert!(ok > 100 && refused > 1000, "the mutations must hit both paths: {ok} accepted, {refused} refused");
}
