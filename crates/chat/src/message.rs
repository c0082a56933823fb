//! Conversation types the encoder works on, and their checked construction from OpenAI-style JSON.
//!
//! JSON from clients is untrusted, so every accessor here returns an error naming the offending field
//! (`messages[2].role: unknown role "foo"`) instead of panicking; `null` is treated like an absent field,
//! as OpenAI clients send both.

use serde_json::{Map, Value};

use crate::ChatError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    /// Date/locale block (`<｜latest_reminder｜>`); not an OpenAI role.
    LatestReminder,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" => Role::System,
            "developer" => Role::Developer,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            "latest_reminder" => Role::LatestReminder,
            _ => return None,
        })
    }
}

/// Quick-instruction tasks (DeepSeek-internal features that the format supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Action,
    Query,
    Authority,
    Domain,
    Title,
    ReadUrl,
}

impl Task {
    pub fn parse(s: &str) -> Option<Task> {
        Some(match s {
            "action" => Task::Action,
            "query" => Task::Query,
            "authority" => Task::Authority,
            "domain" => Task::Domain,
            "title" => Task::Title,
            "read_url" => Task::ReadUrl,
            _ => return None,
        })
    }

    pub fn token(self) -> &'static str {
        match self {
            Task::Action => "<｜action｜>",
            Task::Query => "<｜query｜>",
            Task::Authority => "<｜authority｜>",
            Task::Domain => "<｜domain｜>",
            Task::Title => "<｜title｜>",
            Task::ReadUrl => "<｜read_url｜>",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text(String),
    /// A non-text part, kept only by its `type`; rendered as `[Unsupported <type>]`.
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// Text parts joined by a blank line, non-text parts as `[Unsupported <type>]`.
    pub fn render(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match p {
                    ContentPart::Text(t) => t.clone(),
                    ContentPart::Other(kind) => format!("[Unsupported {kind}]"),
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Arguments {
    /// The OpenAI form: a JSON document as text (rendered verbatim as one parameter if it is not JSON).
    Text(String),
    /// Arguments already given as a JSON value.
    Json(Value),
}

/// A tool call on an assistant message of the conversation being encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallSpec {
    pub id: Option<String>,
    pub name: String,
    pub arguments: Arguments,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Option<Content>,
    pub reasoning_content: Option<String>,
    pub tool_calls: Vec<ToolCallSpec>,
    pub tool_call_id: Option<String>,
    /// Tool definitions (the inner OpenAI `function` objects) on a system or developer message.
    pub tools: Vec<Value>,
    pub response_format: Option<Value>,
    pub task: Option<Task>,
    /// Leave the assistant turn open (no EOS) so generation continues it.
    pub wo_eos: bool,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: Some(Content::Text(content.into())),
            reasoning_content: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            tools: Vec::new(),
            response_format: None,
            task: None,
            wo_eos: false,
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }

    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message { tool_call_id: Some(tool_call_id.into()), ..Message::new(Role::Tool, content) }
    }

    /// Text content, `""` when absent.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::render).unwrap_or_default()
    }

    /// Reads one OpenAI-style message; `path` (e.g. `messages[3]`) prefixes every error.
    ///
    /// Accepts the encoder's own extensions (`tools`, `response_format`, `task`, `wo_eos`, the
    /// `latest_reminder` role) and `reasoning` as an alias of `reasoning_content`.
    pub fn from_json(v: &Value, path: &str) -> Result<Message, ChatError> {
        let obj = v.as_object().ok_or_else(|| ChatError::invalid(path, "expected a JSON object"))?;
        let role_path = format!("{path}.role");
        let role_name = opt_str(obj, "role", &role_path)?.ok_or_else(|| ChatError::invalid(&role_path, "missing"))?;
        let role = Role::parse(role_name).ok_or_else(|| {
            ChatError::invalid(&role_path, format!("unknown role {}", crate::pyjson::quote(role_name)))
        })?;
        let content = parse_content(obj.get("content"), &format!("{path}.content"), role == Role::Tool)?;
        let reasoning_content = match opt_str(obj, "reasoning_content", &format!("{path}.reasoning_content"))? {
            Some(r) => Some(r.to_string()),
            None => opt_str(obj, "reasoning", &format!("{path}.reasoning"))?.map(str::to_string),
        };
        let tool_calls = match non_null(obj, "tool_calls") {
            None => Vec::new(),
            Some(v) => {
                let items = v
                    .as_array()
                    .ok_or_else(|| ChatError::invalid(format!("{path}.tool_calls"), "expected an array"))?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, tc)| parse_tool_call(tc, &format!("{path}.tool_calls[{i}]")))
                    .collect::<Result<_, _>>()?
            }
        };
        let tool_call_id = opt_str(obj, "tool_call_id", &format!("{path}.tool_call_id"))?.map(str::to_string);
        let tools = match non_null(obj, "tools") {
            None => Vec::new(),
            Some(v) => parse_tools(v, &format!("{path}.tools"))?,
        };
        let task = match opt_str(obj, "task", &format!("{path}.task"))? {
            None => None,
            Some(t) => Some(Task::parse(t).ok_or_else(|| {
                ChatError::invalid(format!("{path}.task"), format!("unknown task {}", crate::pyjson::quote(t)))
            })?),
        };
        let wo_eos = match non_null(obj, "wo_eos") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| ChatError::invalid(format!("{path}.wo_eos"), "expected a boolean"))?,
        };
        Ok(Message {
            role,
            content,
            reasoning_content,
            tool_calls,
            tool_call_id,
            tools,
            response_format: non_null(obj, "response_format").cloned(),
            task,
            wo_eos,
        })
    }
}

fn non_null<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, ChatError> {
    match non_null(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ChatError::invalid(path, "expected a string")),
    }
}

fn parse_content(v: Option<&Value>, path: &str, allow_non_text: bool) -> Result<Option<Content>, ChatError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => return Ok(Some(Content::Text(s.clone()))),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ChatError::invalid(path, "expected a string, an array of parts or null")),
    };
    let mut parts = Vec::with_capacity(items.len());
    for (i, part) in items.iter().enumerate() {
        let part_path = format!("{path}[{i}]");
        let obj = part.as_object().ok_or_else(|| ChatError::invalid(&part_path, "expected a JSON object"))?;
        let kind = opt_str(obj, "type", &format!("{part_path}.type"))?
            .ok_or_else(|| ChatError::invalid(format!("{part_path}.type"), "missing"))?;
        if kind == "text" {
            let text = opt_str(obj, "text", &format!("{part_path}.text"))?.unwrap_or_default();
            parts.push(ContentPart::Text(text.to_string()));
        } else if allow_non_text {
            parts.push(ContentPart::Other(kind.to_string()));
        } else {
            return Err(ChatError::invalid(
                format!("{part_path}.type"),
                format!("unsupported content part {}", crate::pyjson::quote(kind)),
            ));
        }
    }
    Ok(Some(Content::Parts(parts)))
}

fn parse_tool_call(v: &Value, path: &str) -> Result<ToolCallSpec, ChatError> {
    let obj = v.as_object().ok_or_else(|| ChatError::invalid(path, "expected a JSON object"))?;
    let id = opt_str(obj, "id", &format!("{path}.id"))?.map(str::to_string);
    let fpath = format!("{path}.function");
    let function = non_null(obj, "function")
        .ok_or_else(|| ChatError::invalid(&fpath, "missing"))?
        .as_object()
        .ok_or_else(|| ChatError::invalid(&fpath, "expected a JSON object"))?;
    let name = opt_str(function, "name", &format!("{fpath}.name"))?
        .ok_or_else(|| ChatError::invalid(format!("{fpath}.name"), "missing"))?;
    let arguments = match non_null(function, "arguments") {
        None => Arguments::Json(Value::Object(Map::new())),
        Some(Value::String(s)) => Arguments::Text(s.clone()),
        Some(other) => Arguments::Json(other.clone()),
    };
    Ok(ToolCallSpec { id, name: name.to_string(), arguments })
}

/// OpenAI tool definitions (`[{"type":"function","function":{...}}]`) → the inner function objects.
pub fn parse_tools(v: &Value, path: &str) -> Result<Vec<Value>, ChatError> {
    let items = v.as_array().ok_or_else(|| ChatError::invalid(path, "expected an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let tpath = format!("{path}[{i}]");
            let obj = tool.as_object().ok_or_else(|| ChatError::invalid(&tpath, "expected a JSON object"))?;
            match opt_str(obj, "type", &format!("{tpath}.type"))? {
                None | Some("function") => {}
                Some(other) => {
                    return Err(ChatError::invalid(
                        format!("{tpath}.type"),
                        format!("unsupported tool type {}", crate::pyjson::quote(other)),
                    ))
                }
            }
            let function =
                non_null(obj, "function").ok_or_else(|| ChatError::invalid(format!("{tpath}.function"), "missing"))?;
            let fobj = function
                .as_object()
                .ok_or_else(|| ChatError::invalid(format!("{tpath}.function"), "expected a JSON object"))?;
            if !matches!(fobj.get("name"), Some(Value::String(_))) {
                return Err(ChatError::invalid(format!("{tpath}.function.name"), "expected a string"));
            }
            Ok(function.clone())
        })
        .collect()
}
