//! Every encode vector, rendered both through the typed encoder and through the OpenAI request mapping.

mod common;

use emesh_chat::{
    encode_messages, parse_tools, render_chat_request, EffortProfile, EncodeOptions, Message, ReasoningEffort,
    ThinkingMode,
};
use serde_json::{json, Value};

fn profile(v: &Value) -> EffortProfile {
    let variant = v["encoding_variant"].as_str().expect("encoding_variant");
    EffortProfile::parse(variant).unwrap_or_else(|| panic!("unknown encoding_variant {variant}"))
}

fn messages(v: &Value, path: &str) -> Vec<Message> {
    v.as_array()
        .expect("message list")
        .iter()
        .enumerate()
        .map(|(i, m)| Message::from_json(m, &format!("{path}[{i}]")).expect("valid message"))
        .collect()
}

fn encode_typed(v: &Value) -> String {
    let mut msgs = messages(&v["messages"], "messages");
    if !v["tools"].is_null() {
        msgs[0].tools = parse_tools(&v["tools"], "tools").expect("valid tools");
    }
    let kw = &v["kwargs"];
    let opts = EncodeOptions {
        thinking_mode: match kw["thinking_mode"].as_str() {
            Some("chat") => ThinkingMode::Chat,
            Some("thinking") => ThinkingMode::Thinking,
            other => panic!("thinking_mode {other:?}"),
        },
        reasoning_effort: kw["reasoning_effort"].as_str().map(|s| ReasoningEffort::parse(s).expect("known effort")),
        effort_profile: profile(v),
        drop_thinking: kw["drop_thinking"].as_bool().unwrap_or(true),
        add_default_bos_token: kw["add_default_bos_token"].as_bool().unwrap_or(true),
        context: if kw["context"].is_null() { Vec::new() } else { messages(&kw["context"], "context") },
    };
    encode_messages(&msgs, &opts).expect("encodes")
}

fn encode_request(v: &Value) -> String {
    let mut kwargs = v["kwargs"].clone();
    kwargs["encoding_variant"] = v["encoding_variant"].clone();
    let req = json!({
        "model": "deepseek-v4",
        "messages": v["messages"],
        "tools": v["tools"],
        "chat_template_kwargs": kwargs,
    });
    render_chat_request(&req).expect("renders")
}

fn first_difference(got: &str, want: &str) -> String {
    let g: Vec<char> = got.chars().collect();
    let w: Vec<char> = want.chars().collect();
    let at = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
    let window =
        |s: &[char]| -> String { s[at.saturating_sub(60).min(s.len())..(at + 60).min(s.len())].iter().collect() };
    format!("at char {at}:\n  got:  {:?}\n  want: {:?}", window(&g), window(&w))
}

#[test]
fn every_encode_vector_matches_byte_for_byte() {
    let doc = common::chat_vectors();
    let vectors = common::vectors(&doc, "encode_vectors");
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in vectors {
        let want = v["expected_prompt"].as_str().expect("expected_prompt");
        for (how, got) in [("typed", encode_typed(v)), ("request", encode_request(v))] {
            if got != want {
                failures.push(format!("{} ({how}) {}", common::name(v), first_difference(&got, want)));
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, vectors.len());
    let variants: Vec<&str> = vectors.iter().filter_map(|v| v["encoding_variant"].as_str()).collect();
    assert!(variants.contains(&"v4-preview") && variants.contains(&"v4-flash-0731"));
}
