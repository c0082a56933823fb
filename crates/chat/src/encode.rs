//! Renders a conversation into the DeepSeek-V4 prompt string.
//!
//! V4 ships no chat template; the format is defined by DeepSeek's reference encoder and pinned by the
//! shared test vectors. The stages mirror it: tool messages are merged into user turns, tool results
//! are put back into call order, historical reasoning is dropped, and each turn is rendered followed by
//! the transition suffix that opens the next assistant turn.

use crate::message::{Arguments, Message, Role, Task, ToolCallSpec};
use crate::pyjson::{self, PyValue};
use crate::tokens::{ASSISTANT, BOS, DSML, EOS, LATEST_REMINDER, THINK_END, THINK_START, USER};
use crate::ChatError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThinkingMode {
    /// The prompt ends with `</think>`: reasoning is already closed.
    Chat,
    /// The prompt ends with `<think>`: the model reasons first.
    #[default]
    Thinking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningEffort {
    Low,
    High,
    Max,
}

impl ReasoningEffort {
    pub fn parse(s: &str) -> Option<ReasoningEffort> {
        Some(match s {
            "low" => ReasoningEffort::Low,
            "high" => ReasoningEffort::High,
            "max" => ReasoningEffort::Max,
            _ => return None,
        })
    }
}

/// Which revision's reasoning-effort block to use; the rest of the format is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EffortProfile {
    /// V4-Flash/Pro April release: `high` (default) or `max`.
    #[default]
    Preview,
    /// V4-Flash-0731: `low` (default), `high` or `max`, each with its own text.
    V0731,
}

impl EffortProfile {
    pub fn parse(s: &str) -> Option<EffortProfile> {
        match s {
            "preview" | "v4-preview" | "legacy" => Some(EffortProfile::Preview),
            "0731" | "v4-flash-0731" => Some(EffortProfile::V0731),
            _ => None,
        }
    }
}

const EFFORT_ABSOLUTE: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\nYou MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\nExplicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";
const EFFORT_BEYOND: &str = "Reasoning Effort: Beyond maximum \u{2014} exhaustive, relentless, and uncompromising.\nYou MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: exhaustively decompose the problem into its most fundamental components, trace every causal chain to its root, and resolve the underlying cause rather than any surface symptom.\nDo not stop reasoning until you have independently verified the solution from multiple angles and are certain that no assumption remains unchecked and no error remains undiscovered.\n\n";

/// The text put before the system prompt for an effort level; errors where the revision rejects it.
pub fn effort_prefix(profile: EffortProfile, effort: Option<ReasoningEffort>) -> Result<&'static str, ChatError> {
    use ReasoningEffort::*;
    match (profile, effort) {
        (EffortProfile::Preview, None | Some(High)) => Ok(""),
        (EffortProfile::Preview, Some(Max)) => Ok(EFFORT_ABSOLUTE),
        (EffortProfile::Preview, Some(Low)) => {
            Err(ChatError::invalid("reasoning_effort", "the preview encoder accepts only null, \"high\" or \"max\""))
        }
        (EffortProfile::V0731, None | Some(Low)) => Ok(""),
        (EffortProfile::V0731, Some(High)) => Ok(EFFORT_ABSOLUTE),
        (EffortProfile::V0731, Some(Max)) => Ok(EFFORT_BEYOND),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    pub thinking_mode: ThinkingMode,
    pub reasoning_effort: Option<ReasoningEffort>,
    pub effort_profile: EffortProfile,
    /// Drop reasoning of turns before the last user message (forced off when any message has tools).
    pub drop_thinking: bool,
    /// Start with BOS (only when `context` is empty).
    pub add_default_bos_token: bool,
    /// Earlier messages whose rendering is already cached: used for look-ups only, not rendered.
    pub context: Vec<Message>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            thinking_mode: ThinkingMode::Thinking,
            reasoning_effort: None,
            effort_profile: EffortProfile::Preview,
            drop_thinking: true,
            add_default_bos_token: true,
            context: Vec::new(),
        }
    }
}

enum Block {
    Text(String),
    ToolResult { id: String, content: String },
}

/// A message after tool results were folded into user turns.
struct Turn<'a> {
    role: Role,
    msg: &'a Message,
    blocks: Vec<Block>,
    task: Option<Task>,
    keep_reasoning: bool,
    origin: String,
}

fn merge_tool_messages<'a>(messages: &'a [Message], list: &str) -> Vec<Turn<'a>> {
    let mut turns: Vec<Turn<'a>> = Vec::with_capacity(messages.len());
    for (i, msg) in messages.iter().enumerate() {
        let block = match msg.role {
            Role::Tool => Block::ToolResult { id: msg.tool_call_id.clone().unwrap_or_default(), content: msg.text() },
            Role::User => Block::Text(msg.text()),
            _ => {
                turns.push(Turn {
                    role: msg.role,
                    msg,
                    blocks: Vec::new(),
                    task: msg.task,
                    keep_reasoning: true,
                    origin: format!("{list}[{i}]"),
                });
                continue;
            }
        };
        let joins = match turns.last() {
            Some(prev) if prev.role == Role::User => msg.role == Role::Tool || prev.task.is_none(),
            _ => false,
        };
        match turns.last_mut() {
            Some(prev) if joins => prev.blocks.push(block),
            _ => turns.push(Turn {
                role: Role::User,
                msg,
                blocks: vec![block],
                task: if msg.role == Role::User { msg.task } else { None },
                keep_reasoning: true,
                origin: format!("{list}[{i}]"),
            }),
        }
    }
    turns
}

/// Re-orders the tool results of each user turn to the call order of the latest assistant tool calls.
fn sort_tool_results(turns: &mut [Turn<'_>]) {
    let mut order: Vec<(&str, usize)> = Vec::new();
    for turn in turns.iter_mut() {
        if turn.role == Role::Assistant && !turn.msg.tool_calls.is_empty() {
            order.clear();
            for (idx, tc) in turn.msg.tool_calls.iter().enumerate() {
                if let Some(id) = tc.id.as_deref().filter(|id| !id.is_empty()) {
                    match order.iter_mut().find(|(k, _)| *k == id) {
                        Some(slot) => slot.1 = idx,
                        None => order.push((id, idx)),
                    }
                }
            }
        } else if turn.role == Role::User && !order.is_empty() {
            let slots: Vec<usize> =
                (0..turn.blocks.len()).filter(|&i| matches!(turn.blocks[i], Block::ToolResult { .. })).collect();
            if slots.len() < 2 {
                continue;
            }
            let rank = |b: &Block| match b {
                Block::ToolResult { id, .. } => order.iter().find(|(k, _)| *k == id.as_str()).map_or(0, |(_, v)| *v),
                Block::Text(_) => 0,
            };
            let mut results: Vec<Block> = Vec::with_capacity(slots.len());
            for &i in slots.iter().rev() {
                results.push(turn.blocks.remove(i));
            }
            results.reverse();
            results.sort_by_key(|b| rank(b));
            for (&slot, block) in slots.iter().zip(results) {
                turn.blocks.insert(slot, block);
            }
        }
    }
}

fn last_user_index(turns: &[Turn<'_>]) -> Option<usize> {
    turns.iter().rposition(|t| matches!(t.role, Role::User | Role::Developer))
}

/// Encodes `messages` into the prompt string, byte-for-byte as the reference encoder does.
pub fn encode_messages(messages: &[Message], opts: &EncodeOptions) -> Result<String, ChatError> {
    let effort = effort_prefix(opts.effort_profile, opts.reasoning_effort)?;
    let mut turns = merge_tool_messages(&opts.context, "context");
    let n_context = turns.len();
    turns.extend(merge_tool_messages(messages, "messages"));
    sort_tool_results(&mut turns);

    let has_tools = turns.iter().any(|t| !t.msg.tools.is_empty() && t.role != Role::User);
    let drop = opts.drop_thinking && !has_tools;
    let thinking = opts.thinking_mode == ThinkingMode::Thinking;

    let mut start = n_context;
    if thinking && drop {
        if let Some(last_user) = last_user_index(&turns) {
            let mut kept = Vec::with_capacity(turns.len());
            for (i, mut turn) in turns.into_iter().enumerate() {
                if i < last_user {
                    match turn.role {
                        Role::Developer => {
                            if i < n_context {
                                start -= 1;
                            }
                            continue;
                        }
                        Role::Assistant => turn.keep_reasoning = false,
                        _ => {}
                    }
                }
                kept.push(turn);
            }
            turns = kept;
        }
    }

    let mut prompt = String::new();
    if opts.add_default_bos_token && opts.context.is_empty() {
        prompt.push_str(BOS);
    }
    let last_user = last_user_index(&turns);
    for i in start..turns.len() {
        if i == 0 && thinking {
            prompt.push_str(effort);
        }
        render_turn(&turns, i, last_user, thinking, drop, &mut prompt)?;
    }
    Ok(prompt)
}

fn render_turn(
    turns: &[Turn<'_>],
    i: usize,
    last_user: Option<usize>,
    thinking: bool,
    drop: bool,
    out: &mut String,
) -> Result<(), ChatError> {
    let turn = &turns[i];
    let msg = turn.msg;
    let after_last_user = last_user.is_none_or(|u| i > u);
    match turn.role {
        Role::System => {
            out.push_str(&msg.text());
            render_system_extras(msg, out);
        }
        Role::Developer => {
            let text = msg.text();
            if text.is_empty() {
                return Err(ChatError::invalid(
                    format!("{}.content", turn.origin),
                    "a developer message needs non-empty content",
                ));
            }
            out.push_str(USER);
            out.push_str(&text);
            render_system_extras(msg, out);
        }
        Role::User | Role::Tool => {
            out.push_str(USER);
            for (k, block) in turn.blocks.iter().enumerate() {
                if k > 0 {
                    out.push_str("\n\n");
                }
                match block {
                    Block::Text(t) => out.push_str(t),
                    Block::ToolResult { content, .. } => {
                        out.push_str("<tool_result>");
                        out.push_str(content);
                        out.push_str("</tool_result>");
                    }
                }
            }
        }
        Role::LatestReminder => {
            out.push_str(LATEST_REMINDER);
            out.push_str(&msg.text());
        }
        Role::Assistant => {
            let prev_has_task = i > 0 && turns[i - 1].task.is_some();
            if thinking && !prev_has_task && turn.keep_reasoning && (!drop || after_last_user) {
                out.push_str(msg.reasoning_content.as_deref().unwrap_or(""));
                out.push_str(THINK_END);
            }
            out.push_str(&msg.text());
            if !msg.tool_calls.is_empty() {
                out.push_str("\n\n<");
                out.push_str(DSML);
                out.push_str("tool_calls>\n");
                for (k, call) in msg.tool_calls.iter().enumerate() {
                    if k > 0 {
                        out.push('\n');
                    }
                    render_tool_call(call, &format!("{}.tool_calls[{k}]", turn.origin), out)?;
                }
                out.push_str("\n</");
                out.push_str(DSML);
                out.push_str("tool_calls>");
            }
            if !msg.wo_eos {
                out.push_str(EOS);
            }
        }
    }

    if turns.get(i + 1).is_some_and(|next| !matches!(next.role, Role::Assistant | Role::LatestReminder)) {
        return Ok(());
    }
    match turn.task {
        Some(Task::Action) => {
            out.push_str(ASSISTANT);
            out.push_str(if thinking { THINK_START } else { THINK_END });
            out.push_str(Task::Action.token());
        }
        Some(task) => out.push_str(task.token()),
        None if matches!(turn.role, Role::User | Role::Developer) => {
            out.push_str(ASSISTANT);
            let open = thinking && (!drop || last_user.is_some_and(|u| i >= u));
            out.push_str(if open { THINK_START } else { THINK_END });
        }
        None => {}
    }
    Ok(())
}

fn render_system_extras(msg: &Message, out: &mut String) {
    if !msg.tools.is_empty() {
        out.push_str("\n\n");
        render_tools(&msg.tools, out);
    }
    if let Some(rf) = msg.response_format.as_ref().filter(|v| is_truthy(v)) {
        out.push_str("\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n");
        pyjson::dump_value(rf, out);
    }
}

/// Python truthiness, which decides whether the reference renders an optional section.
fn is_truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn render_tools(functions: &[serde_json::Value], out: &mut String) {
    let t = DSML;
    out.push_str(&format!(
        "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<{t}tool_calls>\" block like the following:\n\n<{t}tool_calls>\n<{t}invoke name=\"$TOOL_NAME\">\n<{t}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</{t}parameter>\n...\n</{t}invoke>\n<{t}invoke name=\"$TOOL_NAME2\">\n...\n</{t}invoke>\n</{t}tool_calls>\n\nString parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\nIf thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\nOtherwise, output directly after </think> with tool calls or final response.\n\n### Available Tool Schemas\n\n"
    ));
    for (k, f) in functions.iter().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        pyjson::dump_value(f, out);
    }
    out.push_str(
        "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n",
    );
}

fn render_param(out: &mut String, key: &str, value: ParamValue<'_>) {
    out.push('<');
    out.push_str(DSML);
    out.push_str("parameter name=\"");
    out.push_str(key);
    out.push_str("\" string=\"");
    match value {
        ParamValue::Raw(s) => {
            out.push_str("true\">");
            out.push_str(s);
        }
        ParamValue::Py(v) => {
            out.push_str("false\">");
            pyjson::dump_py(v, out);
        }
        ParamValue::Json(v) => {
            out.push_str("false\">");
            pyjson::dump_value(v, out);
        }
    }
    out.push_str("</");
    out.push_str(DSML);
    out.push_str("parameter>");
}

enum ParamValue<'a> {
    Raw(&'a str),
    Py(&'a PyValue),
    Json(&'a serde_json::Value),
}

fn render_tool_call(call: &ToolCallSpec, path: &str, out: &mut String) -> Result<(), ChatError> {
    out.push('<');
    out.push_str(DSML);
    out.push_str("invoke name=\"");
    out.push_str(&call.name);
    out.push_str("\">\n");
    let not_object = || ChatError::invalid(format!("{path}.function.arguments"), "expected a JSON object");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
    };
    match &call.arguments {
        Arguments::Text(text) => match pyjson::loads(text) {
            None => render_param(out, "arguments", ParamValue::Raw(text)),
            Some(PyValue::Object(items)) => {
                for (k, v) in &items {
                    sep(out);
                    match v {
                        PyValue::Str(s) => render_param(out, k, ParamValue::Raw(s)),
                        other => render_param(out, k, ParamValue::Py(other)),
                    }
                }
            }
            Some(_) => return Err(not_object()),
        },
        Arguments::Json(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                sep(out);
                match v {
                    serde_json::Value::String(s) => render_param(out, k, ParamValue::Raw(s)),
                    other => render_param(out, k, ParamValue::Json(other)),
                }
            }
        }
        Arguments::Json(_) => return Err(not_object()),
    }
    out.push_str("\n</");
    out.push_str(DSML);
    out.push_str("invoke>");
    Ok(())
}
