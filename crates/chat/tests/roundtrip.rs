//! Assistant turns from the encode vectors, rendered by the encoder and parsed back: what the encoder
//! writes for a turn is what the parsers read, in one piece and in streamed pieces.

mod common;

use emesh_chat::{
    encode_messages, parse_completion, EncodeOptions, Message, ParsedMessage, Role, StreamParser, ThinkingMode,
};
use serde_json::Value;

/// Arguments compared as JSON values; text that is not a JSON object is the single `arguments` string.
fn args_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "arguments": text }),
    }
}

fn streamed(text: &str, mode: ThinkingMode, step: usize) -> ParsedMessage {
    let mut parser = StreamParser::new(mode);
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(step) {
        parser.push(&piece.iter().collect::<String>());
    }
    parser.finish();
    parser.message().clone()
}

#[test]
fn rendered_assistant_turns_parse_back() {
    let doc = common::chat_vectors();
    let mut turns = 0;
    for v in common::vectors(&doc, "encode_vectors") {
        for (i, m) in v["messages"].as_array().into_iter().flatten().enumerate() {
            let msg = Message::from_json(m, &format!("messages[{i}]")).expect("valid message");
            if msg.role != Role::Assistant || msg.wo_eos || msg.task.is_some() {
                continue;
            }
            for mode in [ThinkingMode::Chat, ThinkingMode::Thinking] {
                let opts = EncodeOptions { thinking_mode: mode, drop_thinking: false, ..EncodeOptions::default() };
                let prompt = encode_messages(&[Message::user("q"), msg.clone()], &opts).expect("encodes");
                let opener = if mode == ThinkingMode::Thinking { "<think>" } else { "</think>" };
                let (_, completion) = prompt.split_once(&format!("<｜Assistant｜>{opener}")).expect("assistant turn");
                let parsed = parse_completion(completion, mode)
                    .unwrap_or_else(|e| panic!("{} message {i}: {e}\n{completion:?}", common::name(v)));
                assert_eq!(parsed.content, msg.text(), "{}", common::name(v));
                if mode == ThinkingMode::Thinking {
                    assert_eq!(parsed.reasoning_content, msg.reasoning_content.clone().unwrap_or_default());
                }
                let want: Vec<(String, Value)> = msg
                    .tool_calls
                    .iter()
                    .map(|c| match &c.arguments {
                        emesh_chat::Arguments::Text(t) => (c.name.clone(), args_value(t)),
                        emesh_chat::Arguments::Json(j) => (c.name.clone(), j.clone()),
                    })
                    .collect();
                let got: Vec<(String, Value)> = parsed
                    .tool_calls
                    .iter()
                    .map(|c| (c.function.name.clone(), args_value(&c.function.arguments)))
                    .collect();
                assert_eq!(got, want, "{} message {i}", common::name(v));
                for step in [1, 3, 7] {
                    let s = streamed(completion, mode, step);
                    assert_eq!(
                        (&s.content, &s.reasoning_content, s.tool_calls.len()),
                        (&parsed.content, &parsed.reasoning_content, parsed.tool_calls.len())
                    );
                    for (a, b) in s.tool_calls.iter().zip(&parsed.tool_calls) {
                        assert_eq!(a.function, b.function);
                    }
                }
                turns += 1;
            }
        }
    }
    assert!(turns > 20, "only {turns} assistant turns exercised");
}
