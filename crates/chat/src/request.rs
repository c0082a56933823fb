//! Maps an OpenAI chat-completions request onto the encoder (the `emesh chat-template` command).
//!
//! Besides the OpenAI fields it accepts the reference encoder's own option names in
//! `chat_template_kwargs` (`thinking_mode`, `reasoning_effort`, `drop_thinking`,
//! `add_default_bos_token`, `context`), the common `chat_template_kwargs` switches `thinking` /
//! `enable_thinking`, and the DeepSeek API's `thinking: {"type": "enabled"}`. The non-standard
//! `chat_template_kwargs.encoding_variant` (`v4-preview` | `v4-flash-0731`) overrides the configured
//! effort profile. Precedence, most specific first:
//! `chat_template_kwargs.thinking_mode` > `.thinking` > `.enable_thinking` > top-level `thinking` >
//! top-level `reasoning_effort: "none"` (chat) > the configured default.
//!
//! Tools are attached to a leading system message, or to a new empty one inserted first, which is the
//! layout of DeepSeek's own examples. `tool_choice: "none"` renders no tools and a named choice renders
//! only that tool. Content given as parts is flattened (text parts joined by a blank line); non-text
//! parts are rejected except in tool results, where the format has a placeholder for them. A top-level
//! `response_format` is left to constrained decoding and not rendered.

use serde_json::{Map, Value};

use crate::encode::{encode_messages, EffortProfile, EncodeOptions, ReasoningEffort, ThinkingMode};
use crate::message::{parse_tools, Message, Role};
use crate::pyjson::quote;
use crate::ChatError;

/// Server-side settings that a request cannot carry by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderConfig {
    /// Reasoning-effort block of the served checkpoint.
    pub effort_profile: EffortProfile,
    /// Mode used when the request does not say (the DeepSeek API defaults to thinking).
    pub default_thinking: bool,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig { effort_profile: EffortProfile::Preview, default_thinking: true }
    }
}

/// Renders the prompt for an OpenAI chat request with the default [`RenderConfig`].
pub fn render_chat_request(req: &Value) -> Result<String, ChatError> {
    render_chat_request_with(req, &RenderConfig::default())
}

pub fn render_chat_request_with(req: &Value, config: &RenderConfig) -> Result<String, ChatError> {
    let (messages, options) = request_to_encoder(req, config)?;
    encode_messages(&messages, &options)
}

/// The encoder input a request maps to (also useful to inspect the resolved options).
pub fn request_to_encoder(req: &Value, config: &RenderConfig) -> Result<(Vec<Message>, EncodeOptions), ChatError> {
    let req = req.as_object().ok_or_else(|| ChatError::invalid("request", "expected a JSON object"))?;
    let kwargs = match field(req, "chat_template_kwargs") {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ChatError::invalid("chat_template_kwargs", "expected a JSON object")),
    };
    let kw = |key: &str| field(&kwargs, key);
    let kw_path = |key: &str| format!("chat_template_kwargs.{key}");

    let messages = message_list(field(req, "messages"), "messages")?;
    if messages.is_empty() {
        return Err(ChatError::invalid("messages", "must not be empty"));
    }
    let mut messages = messages;
    attach_tools(req, &mut messages)?;

    let effort_profile = match kw("reasoning_effort_profile").or_else(|| kw("encoding_variant")) {
        None => config.effort_profile,
        Some(v) => {
            let key =
                if kw("reasoning_effort_profile").is_some() { "reasoning_effort_profile" } else { "encoding_variant" };
            let s = v.as_str().ok_or_else(|| ChatError::invalid(kw_path(key), "expected a string"))?;
            EffortProfile::parse(s)
                .ok_or_else(|| ChatError::invalid(kw_path(key), format!("unknown value {}", quote(s))))?
        }
    };

    let top_effort = match field(req, "reasoning_effort") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ChatError::invalid("reasoning_effort", "expected a string")),
    };

    let thinking = if let Some(v) = kw("thinking_mode") {
        match v.as_str() {
            Some("thinking") => true,
            Some("chat") => false,
            _ => return Err(ChatError::invalid(kw_path("thinking_mode"), "expected \"chat\" or \"thinking\"")),
        }
    } else if let Some(b) = bool_field(&kwargs, "thinking", "chat_template_kwargs.")? {
        b
    } else if let Some(b) = bool_field(&kwargs, "enable_thinking", "chat_template_kwargs.")? {
        b
    } else if let Some(v) = field(req, "thinking") {
        thinking_switch(v)?
    } else if top_effort == Some("none") {
        false
    } else {
        config.default_thinking
    };

    let reasoning_effort = if kwargs.contains_key("reasoning_effort") {
        match kw("reasoning_effort") {
            None => None,
            Some(Value::String(s)) => Some(ReasoningEffort::parse(s).ok_or_else(|| {
                ChatError::invalid(kw_path("reasoning_effort"), format!("unknown value {}", quote(s)))
            })?),
            Some(_) => return Err(ChatError::invalid(kw_path("reasoning_effort"), "expected a string")),
        }
    } else {
        match top_effort.map(normalize_effort) {
            None | Some(Some(None)) => None,
            Some(None) => {
                return Err(ChatError::invalid(
                    "reasoning_effort",
                    format!("unknown value {}", quote(top_effort.unwrap_or_default())),
                ))
            }
            Some(Some(Some(level))) => match (effort_profile, level) {
                (EffortProfile::Preview, ReasoningEffort::Max) => Some(ReasoningEffort::Max),
                (EffortProfile::Preview, _) => None,
                (EffortProfile::V0731, level) => Some(level),
            },
        }
    };
    if let (EffortProfile::Preview, Some(ReasoningEffort::Low)) = (effort_profile, reasoning_effort) {
        return Err(ChatError::invalid(
            kw_path("reasoning_effort"),
            "the preview encoder accepts only null, \"high\" or \"max\"",
        ));
    }

    let context = match kw("context") {
        None => Vec::new(),
        Some(v) => message_list(Some(v), &kw_path("context"))?,
    };
    let options = EncodeOptions {
        thinking_mode: if thinking { ThinkingMode::Thinking } else { ThinkingMode::Chat },
        reasoning_effort,
        effort_profile,
        drop_thinking: bool_field(&kwargs, "drop_thinking", "chat_template_kwargs.")?.unwrap_or(true),
        add_default_bos_token: bool_field(&kwargs, "add_default_bos_token", "chat_template_kwargs.")?.unwrap_or(true),
        context,
    };
    Ok((messages, options))
}

/// `Some(None)` is "none" (no effort), `None` an unknown word.
fn normalize_effort(s: &str) -> Option<Option<ReasoningEffort>> {
    Some(match s {
        "none" => None,
        "minimal" | "low" => Some(ReasoningEffort::Low),
        "medium" | "high" | "xhigh" => Some(ReasoningEffort::High),
        "max" | "ultra" => Some(ReasoningEffort::Max),
        _ => return None,
    })
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn bool_field(obj: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<bool>, ChatError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ChatError::invalid(format!("{prefix}{key}"), "expected a boolean")),
    }
}

/// Top-level `thinking`: a boolean or the DeepSeek API's `{"type": "enabled" | "disabled"}`.
fn thinking_switch(v: &Value) -> Result<bool, ChatError> {
    if let Some(b) = v.as_bool() {
        return Ok(b);
    }
    match v.get("type").and_then(Value::as_str) {
        Some("enabled") => Ok(true),
        Some("disabled") => Ok(false),
        _ => Err(ChatError::invalid("thinking.type", "expected \"enabled\" or \"disabled\"")),
    }
}

fn message_list(v: Option<&Value>, path: &str) -> Result<Vec<Message>, ChatError> {
    let items = match v {
        None => return Err(ChatError::invalid(path, "missing")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ChatError::invalid(path, "expected an array")),
    };
    items.iter().enumerate().map(|(i, m)| Message::from_json(m, &format!("{path}[{i}]"))).collect()
}

fn attach_tools(req: &Map<String, Value>, messages: &mut Vec<Message>) -> Result<(), ChatError> {
    let mut tools = match field(req, "tools") {
        None => return Ok(()),
        Some(v) => parse_tools(v, "tools")?,
    };
    match field(req, "tool_choice") {
        None => {}
        Some(Value::String(s)) => match s.as_str() {
            "none" => tools.clear(),
            "auto" | "required" => {}
            other => return Err(ChatError::invalid("tool_choice", format!("unknown value {}", quote(other)))),
        },
        Some(Value::Object(choice)) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ChatError::invalid("tool_choice.function.name", "expected a string"))?;
            tools.retain(|t| t.get("name").and_then(Value::as_str) == Some(name));
            if tools.is_empty() {
                return Err(ChatError::invalid("tool_choice.function.name", format!("no tool named {}", quote(name))));
            }
        }
        Some(_) => return Err(ChatError::invalid("tool_choice", "expected a string or an object")),
    }
    if tools.is_empty() {
        return Ok(());
    }
    match messages.first_mut() {
        Some(first) if first.role == Role::System => first.tools.extend(tools),
        _ => {
            let mut system = Message::system("");
            system.tools = tools;
            messages.insert(0, system);
        }
    }
    Ok(())
}
