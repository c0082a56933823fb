//! Turns a finished completion back into an assistant message (reasoning, content, tool calls).
//!
//! [`parse_completion`] is strict: it accepts exactly what the reference parser accepts and reports
//! everything else as [`ChatError::Malformed`]. A server that must always answer uses
//! [`parse_completion_lenient`] (the same state machine as the streaming parser), which degrades instead.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{json, Value};

use crate::encode::ThinkingMode;
use crate::pyjson;
use crate::tokens::{
    EOS, FORBIDDEN_IN_TEXT, INVOKE_END, INVOKE_START, PARAM_END, PARAM_START, TAG_SEPARATOR, THINK_END, TOOL_CALLS_END,
    TOOL_CALLS_MARKER,
};
use crate::ChatError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// An OpenAI-shaped tool call produced by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

impl ToolCall {
    pub fn new(name: impl Into<String>, arguments: impl Into<String>) -> ToolCall {
        ToolCall {
            id: new_call_id(),
            kind: "function".to_string(),
            function: FunctionCall { name: name.into(), arguments: arguments.into() },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ParsedMessage {
    pub content: String,
    pub reasoning_content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl ParsedMessage {
    /// The OpenAI assistant message object.
    pub fn to_openai(&self) -> Value {
        json!({
            "role": "assistant",
            "content": self.content,
            "reasoning_content": self.reasoning_content,
            "tool_calls": self.tool_calls,
        })
    }

    /// `tool_calls` when at least one call was parsed, else `stop` (the engine reports `length` itself).
    pub fn finish_reason(&self) -> &'static str {
        if self.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
    }
}

/// A fresh `call_` id: 24 hex digits from a randomly keyed hash of a process-wide counter.
pub fn new_call_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    format!("call_{a:016x}{:08x}", b >> 32)
}

/// Finds the earliest of `stops` at or after `from`: `(end of the stop, text before it, which stop)`.
pub(crate) fn read_until<'a>(text: &'a str, from: usize, stops: &[&str]) -> (usize, &'a str, Option<usize>) {
    let best = stops.iter().enumerate().filter_map(|(k, s)| text[from..].find(s).map(|p| (from + p, k))).min();
    match best {
        Some((pos, k)) => (pos + stops[k].len(), &text[from..pos], Some(k)),
        None => (text.len(), &text[from..], None),
    }
}

fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// The invoke header `name="NAME">\n` (optionally one more `\n`), after optional whitespace.
pub(crate) fn parse_invoke_name(head: &str) -> Option<&str> {
    let rest = head.trim_start_matches(is_py_space).strip_prefix("name=\"")?;
    rest.strip_suffix("\">\n\n").or_else(|| rest.strip_suffix("\">\n"))
}

/// A parameter body ` name="K" string="true|false">V<` → `(K, is_string, V)`.
pub(crate) fn parse_param(body: &str) -> Option<(&str, bool, &str)> {
    let rest = body.strip_prefix(" name=\"")?;
    let (pos, is_str, flag_len) = [("\" string=\"true\">", true), ("\" string=\"false\">", false)]
        .iter()
        .filter_map(|(flag, is_str)| rest.find(flag).map(|p| (p, *is_str, flag.len())))
        .min_by_key(|(p, _, _)| *p)?;
    let value = &rest[pos + flag_len..];
    let value = value.strip_suffix("<\n").or_else(|| value.strip_suffix('<'))?;
    Some((&rest[..pos], is_str, value))
}

/// One `"K": V` member of the arguments object, as the reference builds it.
pub(crate) fn argument_member(key: &str, is_str: bool, value: &str) -> String {
    let mut out = pyjson::quote(key);
    out.push_str(": ");
    if is_str {
        pyjson::dump_str(value, &mut out);
    } else {
        out.push_str(value);
    }
    out
}

/// Strict parse of a completion that includes its EOS text (the reference parser's rules).
pub fn parse_completion(text: &str, mode: ThinkingMode) -> Result<ParsedMessage, ChatError> {
    let mut msg = ParsedMessage::default();
    let mut pos = 0;
    if mode == ThinkingMode::Thinking {
        let (next, reasoning, stop) = read_until(text, pos, &[THINK_END, TOOL_CALLS_MARKER]);
        if stop != Some(0) {
            return Err(ChatError::malformed("missing </think> after the reasoning"));
        }
        msg.reasoning_content = reasoning.to_string();
        pos = next;
    }
    let (next, content, stop) = read_until(text, pos, &[EOS, TOOL_CALLS_MARKER]);
    msg.content = content.to_string();
    pos = next;
    match stop {
        None => return Err(ChatError::malformed("missing EOS token")),
        Some(0) => {}
        Some(_) => {
            pos = parse_tool_calls(text, pos, &mut msg.tool_calls)?;
            let (next, tail, stop) = read_until(text, pos, &[EOS]);
            if !tail.is_empty() {
                return Err(ChatError::malformed("unexpected text after the tool calls"));
            }
            if stop.is_none() {
                return Err(ChatError::malformed("missing EOS token"));
            }
            pos = next;
        }
    }
    if pos != text.len() {
        return Err(ChatError::malformed("unexpected text after EOS"));
    }
    for token in FORBIDDEN_IN_TEXT {
        if msg.content.contains(token) || msg.reasoning_content.contains(token) {
            return Err(ChatError::malformed(format!("unexpected special token {token:?} in content")));
        }
    }
    Ok(msg)
}

fn expect_separator(between: &str, what: &str) -> Result<(), ChatError> {
    if between == TAG_SEPARATOR {
        Ok(())
    } else {
        Err(ChatError::malformed(format!("expected \">\\n\" {what}, found {between:?}")))
    }
}

fn parse_tool_calls(text: &str, mut pos: usize, calls: &mut Vec<ToolCall>) -> Result<usize, ChatError> {
    loop {
        let (next, between, stop) = read_until(text, pos, &[INVOKE_START, TOOL_CALLS_END]);
        expect_separator(between, "before an invoke")?;
        pos = next;
        match stop {
            None => return Err(ChatError::malformed("unterminated tool_calls block")),
            Some(1) => return Ok(pos),
            Some(_) => {}
        }
        let (next, head, mut stop) = read_until(text, pos, &[PARAM_START, INVOKE_END]);
        pos = next;
        if stop.is_none() {
            return Err(ChatError::malformed("unterminated invoke"));
        }
        let name = parse_invoke_name(head).ok_or_else(|| ChatError::malformed("bad invoke name"))?;
        let mut names: Vec<&str> = Vec::new();
        let mut members: Vec<String> = Vec::new();
        while stop == Some(0) {
            let (next, body, end) = read_until(text, pos, &[PARAM_END]);
            pos = next;
            if end.is_none() {
                return Err(ChatError::malformed("unterminated parameter"));
            }
            let (key, is_str, value) = parse_param(body).ok_or_else(|| ChatError::malformed("bad parameter"))?;
            if names.contains(&key) {
                return Err(ChatError::malformed(format!("duplicate parameter name {key:?}")));
            }
            names.push(key);
            members.push(argument_member(key, is_str, value));
            let (next, between, s) = read_until(text, pos, &[PARAM_START, INVOKE_END]);
            expect_separator(between, "after a parameter")?;
            if s.is_none() {
                return Err(ChatError::malformed("unterminated invoke"));
            }
            pos = next;
            stop = s;
        }
        calls.push(ToolCall::new(name, format!("{{{}}}", members.join(", "))));
    }
}

/// Best-effort parse that never fails (see [`crate::StreamParser`] for how it degrades).
pub fn parse_completion_lenient(text: &str, mode: ThinkingMode) -> ParsedMessage {
    let mut parser = crate::StreamParser::new(mode);
    parser.push(text);
    parser.finish();
    parser.message().clone()
}
