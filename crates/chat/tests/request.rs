//! OpenAI request mapping: option precedence, tool placement, and errors that name the field.

use emesh_chat::{
    render_chat_request, render_chat_request_with, request_to_encoder, EffortProfile, RenderConfig, ThinkingMode,
};
use serde_json::{json, Value};

fn render(req: Value) -> String {
    render_chat_request(&req).unwrap_or_else(|e| panic!("{e}"))
}

fn error(req: Value) -> String {
    match render_chat_request(&req) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

const HI: &str = "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>";

#[test]
fn thinking_switches_and_their_precedence() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"messages": user}), "<think>"),
        (json!({"messages": user, "chat_template_kwargs": {"thinking": false}}), "</think>"),
        (json!({"messages": user, "chat_template_kwargs": {"enable_thinking": false}}), "</think>"),
        (json!({"messages": user, "thinking": {"type": "disabled"}}), "</think>"),
        (json!({"messages": user, "reasoning_effort": "none"}), "</think>"),
        (json!({"messages": user, "thinking": false, "chat_template_kwargs": {"thinking": true}}), "<think>"),
        (
            json!({"messages": user, "chat_template_kwargs": {"thinking": false, "thinking_mode": "thinking"}}),
            "<think>",
        ),
    ];
    for (req, end) in cases {
        assert_eq!(render(req.clone()), format!("{HI}{end}"), "{req}");
    }
    let chat_default = RenderConfig { default_thinking: false, ..RenderConfig::default() };
    let prompt = render_chat_request_with(&json!({"messages": user}), &chat_default).expect("renders");
    assert_eq!(prompt, format!("{HI}</think>"));
}

#[test]
fn reasoning_effort_mapping_per_profile() {
    let req = |effort: &str| json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort});
    let effort_text = |req: &Value, profile| {
        let cfg = RenderConfig { effort_profile: profile, default_thinking: true };
        let prompt = render_chat_request_with(req, &cfg).expect("renders");
        let start = "<｜begin▁of▁sentence｜>".len();
        let end = prompt.find("<｜User｜>").expect("user turn");
        prompt[start..end].lines().next().unwrap_or_default().to_string()
    };
    use EffortProfile::*;
    assert_eq!(effort_text(&req("medium"), Preview), "");
    assert_eq!(effort_text(&req("max"), Preview), "Reasoning Effort: Absolute maximum with no shortcuts permitted.");
    assert_eq!(effort_text(&req("low"), V0731), "");
    assert_eq!(effort_text(&req("xhigh"), V0731), "Reasoning Effort: Absolute maximum with no shortcuts permitted.");
    assert!(effort_text(&req("ultra"), V0731).starts_with("Reasoning Effort: Beyond maximum"));
    let (_, opts) = request_to_encoder(&req("none"), &RenderConfig::default()).expect("maps");
    assert_eq!((opts.thinking_mode, opts.reasoning_effort), (ThinkingMode::Chat, None));
}

#[test]
fn tools_are_attached_to_the_first_system_message() {
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
    let other = json!({"type": "function", "function": {"name": "g"}});
    let with_system = render(json!({
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        "tools": [tool, other],
        "tool_choice": {"type": "function", "function": {"name": "g"}},
    }));
    assert!(with_system.starts_with("<｜begin▁of▁sentence｜>S\n\n## Tools\n\n"));
    assert!(with_system.contains("\n\n{\"name\": \"g\"}\n\nYou MUST strictly follow"), "{with_system}");
    let without_system = render(json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}));
    assert!(without_system.starts_with("<｜begin▁of▁sentence｜>\n\n## Tools\n\n"));
    let none = render(json!({"messages": [{"role": "user", "content": "hi"}], "tools": [tool], "tool_choice": "none"}));
    assert_eq!(none, format!("{HI}<think>"));
}

#[test]
fn openai_message_shapes() {
    let prompt = render(json!({
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "reasoning": "r", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": [1, 2.0]}}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": null},
        ],
        "chat_template_kwargs": {"thinking": true},
    }));
    // No `tools` in the request, so the reasoning of the call turn is dropped once the results arrive.
    assert!(prompt.starts_with("<｜begin▁of▁sentence｜><｜User｜>a\n\nb<｜Assistant｜></think>\n\n"), "{prompt}");
    assert!(prompt.contains("<｜DSML｜parameter name=\"x\" string=\"false\">[1, 2.0]</｜DSML｜parameter>"));
    assert!(prompt.ends_with("<｜User｜><tool_result></tool_result><｜Assistant｜><think>"));
}

#[test]
fn errors_name_the_offending_field() {
    let cases = [
        (json!([]), "request: expected a JSON object"),
        (json!({}), "messages: missing"),
        (json!({"messages": []}), "messages: must not be empty"),
        (
            json!({"messages": [{"role": "user"}, {"role": "user"}, {"role": "foo"}]}),
            "messages[2].role: unknown role \"foo\"",
        ),
        (json!({"messages": [{"content": "x"}]}), "messages[0].role: missing"),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content: expected a string, an array of parts or null",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages[0].content[0].type: unsupported content part \"image_url\"",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]}),
            "messages[0].tool_calls[0].function.name: missing",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]}),
            "messages[0].tool_calls[0].function.arguments: expected a JSON object",
        ),
        (
            json!({"messages": [{"role": "developer", "content": ""}]}),
            "messages[0].content: a developer message needs non-empty content",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "task": "nap"}]}),
            "messages[0].task: unknown task \"nap\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
            "tools[0].function: missing",
        ),
        (json!({"messages": [{"role": "user", "content": "x"}], "tools": {}}), "tools: expected an array"),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice.function.name: no tool named \"f\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "extreme"}),
            "reasoning_effort: unknown value \"extreme\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"reasoning_effort": "low"}}),
            "chat_template_kwargs.reasoning_effort: the preview encoder accepts only null, \"high\" or \"max\"",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"drop_thinking": "yes"}}),
            "chat_template_kwargs.drop_thinking: expected a boolean",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"context": [{"role": 1}]}}),
            "chat_template_kwargs.context[0].role: expected a string",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "thinking": {"type": "auto"}}),
            "thinking.type: expected \"enabled\" or \"disabled\"",
        ),
    ];
    for (req, want) in cases {
        assert_eq!(error(req), want);
    }
}

/// Every field of a valid request replaced by values of every JSON type must give Ok or Err, never panic.
#[test]
fn arbitrary_json_never_panics() {
    let base = json!({
        "messages": [
            {"role": "system", "content": "s", "tools": [], "response_format": {"type": "json_object"}},
            {"role": "user", "content": [{"type": "text", "text": "q"}], "task": "action"},
            {"role": "assistant", "content": "a", "reasoning_content": "r", "wo_eos": false,
             "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "t"}]},
            {"role": "latest_reminder", "content": "today"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "auto",
        "reasoning_effort": "high",
        "thinking": {"type": "enabled"},
        "chat_template_kwargs": {"thinking_mode": "thinking", "drop_thinking": true, "context": [], "reasoning_effort": null},
    });
    let replacements = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(1.5),
        json!(""),
        json!("foo"),
        json!([]),
        json!([null, 1, "x", {}]),
        json!({}),
        json!({"type": "text"}),
    ];
    let mut paths = Vec::new();
    collect_paths(&base, &mut Vec::new(), &mut paths);
    assert!(paths.len() > 40);
    let mut seen = 0;
    for path in &paths {
        for r in &replacements {
            let mut req = base.clone();
            if let Some(slot) = pointer(&mut req, path) {
                *slot = r.clone();
                let _ = render_chat_request(&req);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, paths.len() * replacements.len());
    assert!(render_chat_request(&base).is_ok());
}

fn collect_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn pointer<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let ptr: String = path.iter().map(|p| format!("/{p}")).collect();
    v.pointer_mut(&ptr)
}
