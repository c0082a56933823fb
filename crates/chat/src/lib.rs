//! DeepSeek-V4 chat format for ExpertMesh: prompt encoding, completion parsing and the tokenizer.
//!
//! V4 defines its prompt format in code rather than a chat template, so the server renders prompts
//! itself ([`encode_messages`], or [`render_chat_request`] straight from an OpenAI request) and parses the
//! model's output back into reasoning, content and DSML tool calls, either at once
//! ([`parse_completion`]) or while streaming ([`StreamParser`]). The byte-level behaviour is pinned by the
//! shared chat-encoding test vectors.

mod encode;
mod error;
mod message;
mod parse;
mod pyjson;
mod request;
mod stream;
mod tokenizer;
pub mod tokens;

pub use encode::{effort_prefix, encode_messages, EffortProfile, EncodeOptions, ReasoningEffort, ThinkingMode};
pub use error::ChatError;
pub use message::{parse_tools, Arguments, Content, ContentPart, Message, Role, Task, ToolCallSpec};
pub use parse::{new_call_id, parse_completion, parse_completion_lenient, FunctionCall, ParsedMessage, ToolCall};
pub use request::{render_chat_request, render_chat_request_with, request_to_encoder, RenderConfig};
pub use stream::{StreamDelta, StreamParser};
pub use tokenizer::{StreamDecoder, Tokenizer};
