//! The literal control strings of the V4 prompt format.
//!
//! They live in one place because the encoder, the completion parser and the tests must agree on every
//! byte; each is a single token in the V4 vocabulary except the DSML tag texts built around `DSML`.

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const USER: &str = "<｜User｜>";
pub const ASSISTANT: &str = "<｜Assistant｜>";
pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";
pub const DSML: &str = "｜DSML｜";
pub const LATEST_REMINDER: &str = "<｜latest_reminder｜>";

pub(crate) const TOOL_CALLS_MARKER: &str = "\n\n<｜DSML｜tool_calls";
pub(crate) const TOOL_CALLS_END: &str = "</｜DSML｜tool_calls>";
pub(crate) const INVOKE_START: &str = "<｜DSML｜invoke";
pub(crate) const INVOKE_END: &str = "</｜DSML｜invoke";
pub(crate) const PARAM_START: &str = "<｜DSML｜parameter";
pub(crate) const PARAM_END: &str = "/｜DSML｜parameter";
pub(crate) const TAG_SEPARATOR: &str = ">\n";

/// Strings that may never appear inside parsed `content` or `reasoning_content`.
pub(crate) const FORBIDDEN_IN_TEXT: [&str; 5] = [BOS, EOS, THINK_START, THINK_END, DSML];
