//! Encoder rules that the vectors leave implicit: cached context, result ordering, effort validation.

use emesh_chat::{
    effort_prefix, encode_messages, Arguments, EffortProfile, EncodeOptions, Message, ReasoningEffort, Role,
    ThinkingMode, ToolCallSpec,
};
use serde_json::json;

fn assistant(reasoning: &str, content: &str) -> Message {
    Message { reasoning_content: Some(reasoning.to_string()), ..Message::assistant(content) }
}

#[test]
fn context_delta_differs_from_a_fresh_encode_when_reasoning_is_dropped() {
    let opts = EncodeOptions::default();
    let full =
        encode_messages(&[Message::user("u1"), assistant("r1", "a1"), Message::user("u2")], &opts).expect("encodes");
    assert_eq!(
        full,
        "<｜begin▁of▁sentence｜><｜User｜>u1<｜Assistant｜></think>a1<｜end▁of▁sentence｜><｜User｜>u2<｜Assistant｜><think>"
    );
    let with_context = EncodeOptions { context: vec![Message::user("u1")], ..EncodeOptions::default() };
    let delta = encode_messages(&[assistant("r1", "a1"), Message::user("u2")], &with_context).expect("encodes");
    assert_eq!(delta, "a1<｜end▁of▁sentence｜><｜User｜>u2<｜Assistant｜><think>");
}

#[test]
fn tool_results_follow_call_order_and_text_keeps_its_slot() {
    let call = |id: &str| ToolCallSpec {
        id: Some(id.to_string()),
        name: "f".to_string(),
        arguments: Arguments::Json(json!({"n": 1.5e-7, "s": "x\ny"})),
    };
    let calls = Message { tool_calls: vec![call("a"), call("b")], ..Message::assistant("") };
    let messages = [
        Message::user("go"),
        calls,
        Message::tool("b", "B"),
        Message::tool("zz", "unknown"),
        Message::user("note"),
        Message::tool("a", "A"),
    ];
    let opts = EncodeOptions { thinking_mode: ThinkingMode::Chat, ..EncodeOptions::default() };
    let prompt = encode_messages(&messages, &opts).expect("encodes");
    assert!(prompt.contains("<｜DSML｜parameter name=\"n\" string=\"false\">1.5e-07</｜DSML｜parameter>\n<｜DSML｜parameter name=\"s\" string=\"true\">x\ny</｜DSML｜parameter>"));
    assert!(
        prompt.ends_with(
            "<｜User｜><tool_result>unknown</tool_result>\n\n<tool_result>A</tool_result>\n\nnote\n\n<tool_result>B</tool_result><｜Assistant｜></think>"
        ),
        "{prompt}"
    );
}

#[test]
fn developer_messages_before_the_last_user_turn_are_dropped() {
    let dev = Message::new(Role::Developer, "internal");
    let prompt = encode_messages(
        &[dev, Message::user("u1"), assistant("r", "a"), Message::user("u2")],
        &EncodeOptions::default(),
    )
    .expect("encodes");
    assert!(!prompt.contains("internal"));
    let kept = EncodeOptions { drop_thinking: false, ..EncodeOptions::default() };
    let dev = Message::new(Role::Developer, "internal");
    let prompt = encode_messages(&[dev, Message::user("u1")], &kept).expect("encodes");
    assert_eq!(prompt, "<｜begin▁of▁sentence｜><｜User｜>internal<｜User｜>u1<｜Assistant｜><think>");
}

#[test]
fn effort_values_per_profile() {
    use EffortProfile::*;
    use ReasoningEffort::*;
    assert!(effort_prefix(Preview, Some(Low)).is_err());
    assert_eq!(effort_prefix(Preview, Some(High)).ok(), Some(""));
    assert_eq!(effort_prefix(V0731, Some(Low)).ok(), Some(""));
    assert_eq!(effort_prefix(Preview, Some(Max)).ok(), effort_prefix(V0731, Some(High)).ok());
    let beyond = effort_prefix(V0731, Some(Max)).expect("valid");
    assert!(beyond.starts_with("Reasoning Effort: Beyond maximum \u{2014} exhaustive") && beyond.ends_with(".\n\n"));
}
