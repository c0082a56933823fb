//! Every parse vector through the strict parser, the lenient parser and the streaming parser, the
//! latter fed at every split point and one character at a time.

mod common;

use emesh_chat::{parse_completion, parse_completion_lenient, ParsedMessage, StreamDelta, StreamParser, ThinkingMode};
use serde_json::{json, Value};

fn mode(v: &Value) -> ThinkingMode {
    match v["thinking_mode"].as_str() {
        Some("thinking") => ThinkingMode::Thinking,
        Some("chat") => ThinkingMode::Chat,
        other => panic!("thinking_mode {other:?}"),
    }
}

/// The message as the vectors spell it: call ids are generated, so they are left out.
fn without_ids(m: &ParsedMessage) -> Value {
    json!({
        "role": "assistant",
        "content": m.content,
        "reasoning_content": m.reasoning_content,
        "tool_calls": m.tool_calls.iter().map(|c| json!({
            "type": c.kind,
            "function": {"name": c.function.name, "arguments": c.function.arguments},
        })).collect::<Vec<_>>(),
    })
}

/// Rebuilds a message from deltas alone, checking their order (start before arguments, no reuse).
fn from_deltas(deltas: &[StreamDelta]) -> ParsedMessage {
    let mut m = ParsedMessage::default();
    for d in deltas {
        match d {
            StreamDelta::Reasoning(s) => m.reasoning_content.push_str(s),
            StreamDelta::Content(s) => m.content.push_str(s),
            StreamDelta::ToolCallStart { index, id, name } => {
                assert_eq!(*index, m.tool_calls.len(), "tool call indices are dense");
                let mut call = emesh_chat::ToolCall::new(name.clone(), "");
                call.id = id.clone();
                m.tool_calls.push(call);
            }
            StreamDelta::ToolCallArguments { index, arguments } => {
                m.tool_calls[*index].function.arguments.push_str(arguments);
            }
        }
    }
    m
}

fn stream(text: &str, mode: ThinkingMode, cuts: &[usize]) -> ParsedMessage {
    let mut parser = StreamParser::new(mode);
    let mut deltas = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
        deltas.extend(parser.push(&text[last..cut]));
        last = cut;
    }
    deltas.extend(parser.finish());
    let rebuilt = from_deltas(&deltas);
    assert_eq!(&rebuilt, parser.message(), "deltas add up to the parser's message");
    for call in &rebuilt.tool_calls {
        assert!(call.id.starts_with("call_"), "generated id {}", call.id);
    }
    rebuilt
}

#[test]
fn every_parse_vector() {
    let doc = common::chat_vectors();
    let vectors = common::vectors(&doc, "parse_vectors");
    let mut checked = 0;
    let mut errors = 0;
    for v in vectors {
        let name = common::name(v);
        let text = v["completion_text"].as_str().expect("completion_text");
        let mode = mode(v);
        let strict = parse_completion(text, mode);
        let lenient = parse_completion_lenient(text, mode);
        if v["expected_error"].as_bool() == Some(true) {
            assert!(strict.is_err(), "{name}: the reference rejects this output");
            errors += 1;
        } else {
            let strict = strict.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(without_ids(&strict), v["expected_message"], "{name} (strict)");
            assert_eq!(without_ids(&lenient), v["expected_message"], "{name} (lenient)");
            let ids: Vec<&str> = strict.tool_calls.iter().map(|c| c.id.as_str()).collect();
            let mut unique = ids.clone();
            unique.dedup();
            assert_eq!(ids.len(), unique.len(), "{name}: ids are unique");
        }
        let whole = without_ids(&lenient);
        let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &cut in &boundaries {
            assert_eq!(without_ids(&stream(text, mode, &[cut])), whole, "{name}: split at byte {cut}");
        }
        assert_eq!(without_ids(&stream(text, mode, &boundaries)), whole, "{name}: one char at a time");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ checked as u64;
        for _ in 0..50 {
            let mut cuts: Vec<usize> = (0..6)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    boundaries[(seed >> 33) as usize % boundaries.len()]
                })
                .collect();
            cuts.sort_unstable();
            assert_eq!(without_ids(&stream(text, mode, &cuts)), whole, "{name}: cuts {cuts:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, vectors.len());
    assert!(errors > 0 && errors < checked);
}

#[test]
fn content_never_leaks_the_tool_call_marker() {
    let text = "Sure.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"false\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
    let mut parser = StreamParser::new(ThinkingMode::Chat);
    let mut content = String::new();
    for c in text.chars() {
        for d in parser.push(&c.to_string()) {
            if let StreamDelta::Content(s) = d {
                content.push_str(&s);
            }
        }
    }
    parser.finish();
    assert_eq!(content, "Sure.");
    assert_eq!(parser.message().tool_calls[0].function.arguments, "{\"a\": 1}");
}

#[test]
fn lenient_parse_degrades() {
    let m = parse_completion_lenient("still thinking", ThinkingMode::Thinking);
    assert_eq!((m.reasoning_content.as_str(), m.content.as_str()), ("still thinking", ""));

    let m = parse_completion_lenient("cut off by max_tokens", ThinkingMode::Chat);
    assert_eq!(m.content, "cut off by max_tokens");

    let broken = "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nam=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let m = parse_completion_lenient(&format!("{broken}<｜end▁of▁sentence｜>"), ThinkingMode::Chat);
    assert_eq!(m.content, broken, "a broken block stays visible as content");
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.finish_reason(), "stop");

    let truncated = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x</｜DSML｜parameter>\n<｜DSML｜parameter name=\"b\" str";
    let m = parse_completion_lenient(truncated, ThinkingMode::Chat);
    assert_eq!(m.tool_calls.len(), 1);
    assert_eq!(m.tool_calls[0].function.arguments, "{\"a\": \"x\"}");
    assert_eq!(m.finish_reason(), "tool_calls");

    let dup = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
    let m = parse_completion_lenient(dup, ThinkingMode::Chat);
    assert_eq!(m.tool_calls[0].function.arguments, "{\"a\": \"1\"}");
    assert!(m.content.starts_with("<｜DSML｜parameter name=\"a\""), "{:?}", m.content);
}

#[test]
fn strict_parse_rejects_leftovers() {
    for (text, mode) in [
        ("a<｜end▁of▁sentence｜>b", ThinkingMode::Chat),
        ("r</think>a\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls>x<｜end▁of▁sentence｜>", ThinkingMode::Thinking),
        ("\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n", ThinkingMode::Chat),
        ("r\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>", ThinkingMode::Thinking),
    ] {
        assert!(parse_completion(text, mode).is_err(), "{text:?}");
    }
}
