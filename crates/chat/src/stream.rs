//! Incremental completion parser: text deltas in, reasoning / content / tool-call deltas out.
//!
//! The parser is a state machine over the text (not the token ids), so it works on any split of the
//! output, including splits inside `</think>` or a DSML tag. Text that could still turn into a
//! delimiter is held back until it cannot. Every decision depends only on the text seen so far, never on
//! where it was split, so feeding the output in any chunks ends in the same message as
//! [`crate::parse_completion_lenient`], and for well-formed output the same as [`crate::parse_completion`].
//!
//! A tool call is announced (index, id, name) once its invoke header is complete, and its arguments grow
//! by one finished `"key": value` member at a time, opened with `{` and closed with `}` at `</invoke>`.
//!
//! Degrading on malformed output: missing `</think>` leaves everything as reasoning; text after EOS is
//! ignored; a broken DSML block closes any open call (keeping its arguments valid JSON) and the unparsed
//! rest goes to `content`; output cut off inside a tool call drops the unfinished part.

use serde::Serialize;

use crate::encode::ThinkingMode;
use crate::parse::{argument_member, new_call_id, parse_invoke_name, parse_param, ParsedMessage, ToolCall};
use crate::tokens::{
    EOS, INVOKE_END, INVOKE_START, PARAM_END, PARAM_START, TAG_SEPARATOR, THINK_END, TOOL_CALLS_END, TOOL_CALLS_MARKER,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamDelta {
    Reasoning(String),
    Content(String),
    ToolCallStart { index: usize, id: String, name: String },
    ToolCallArguments { index: usize, arguments: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reasoning,
    Content,
    /// Inside `<tool_calls>`, expecting `>\n` then an invoke or the end tag.
    Between,
    /// After `<invoke`, expecting the name header.
    Head,
    /// After `<parameter`, expecting its body up to `/parameter`.
    ParamBody,
    /// After a parameter, expecting `>\n` then the next parameter or `</invoke`.
    ParamSep,
    /// After `</tool_calls>`: only EOS is expected.
    AfterCalls,
    /// Content after a broken DSML block.
    Raw,
    Done,
}

struct OpenCall {
    index: usize,
    names: Vec<String>,
}

pub struct StreamParser {
    state: State,
    buf: String,
    text: String,
    message: ParsedMessage,
    out: Vec<StreamDelta>,
    call: Option<OpenCall>,
    /// Raw text of the DSML block consumed before the first call started.
    block_raw: String,
    /// The last tag consumed inside the DSML block.
    last_tag: &'static str,
    finished: bool,
}

impl StreamParser {
    /// `mode` is the mode the prompt was rendered in: thinking output starts inside the reasoning.
    pub fn new(mode: ThinkingMode) -> StreamParser {
        StreamParser {
            state: match mode {
                ThinkingMode::Thinking => State::Reasoning,
                ThinkingMode::Chat => State::Content,
            },
            buf: String::new(),
            text: String::new(),
            message: ParsedMessage::default(),
            out: Vec::new(),
            call: None,
            block_raw: String::new(),
            last_tag: "",
            finished: false,
        }
    }

    /// Feeds the next piece of output; returns the deltas it settles.
    pub fn push(&mut self, delta: &str) -> Vec<StreamDelta> {
        if !self.finished {
            self.text.push_str(delta);
            self.buf.push_str(delta);
            while self.step(false) {}
        }
        std::mem::take(&mut self.out)
    }

    /// Declares the end of output (EOS seen or generation stopped); returns the remaining deltas.
    pub fn finish(&mut self) -> Vec<StreamDelta> {
        if !self.finished {
            while self.step(true) {}
            self.finished = true;
        }
        std::mem::take(&mut self.out)
    }

    /// The message built from every delta emitted so far.
    pub fn message(&self) -> &ParsedMessage {
        &self.message
    }

    /// All text pushed so far (e.g. for a strict [`crate::parse_completion`] at the end).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn emit(&mut self, delta: StreamDelta) {
        match &delta {
            StreamDelta::Reasoning(s) | StreamDelta::Content(s) if s.is_empty() => return,
            StreamDelta::Reasoning(s) => self.message.reasoning_content.push_str(s),
            StreamDelta::Content(s) => self.message.content.push_str(s),
            StreamDelta::ToolCallStart { id, name, .. } => {
                let mut call = ToolCall::new(name.clone(), String::new());
                call.id = id.clone();
                self.message.tool_calls.push(call);
            }
            StreamDelta::ToolCallArguments { index, arguments } => {
                if let Some(call) = self.message.tool_calls.get_mut(*index) {
                    call.function.arguments.push_str(arguments);
                }
            }
        }
        match (self.out.last_mut(), delta) {
            (Some(StreamDelta::Reasoning(a)), StreamDelta::Reasoning(b))
            | (Some(StreamDelta::Content(a)), StreamDelta::Content(b)) => a.push_str(&b),
            (
                Some(StreamDelta::ToolCallArguments { index: i, arguments: a }),
                StreamDelta::ToolCallArguments { index: j, arguments: b },
            ) if *i == j => a.push_str(&b),
            (_, delta) => self.out.push(delta),
        }
    }

    /// Streams free text up to the earliest of `stops`; returns which stop ended it, if any did.
    fn stream_text(&mut self, stops: &[&str], eof: bool, as_reasoning: bool) -> Option<Option<usize>> {
        let wrap = |s: String| {
            if as_reasoning {
                StreamDelta::Reasoning(s)
            } else {
                StreamDelta::Content(s)
            }
        };
        if let Some((pos, k)) = find_first(&self.buf, stops) {
            let text = self.buf[..pos].to_string();
            self.buf.drain(..pos + stops[k].len());
            self.emit(wrap(text));
            return Some(Some(k));
        }
        let keep_from = if eof { self.buf.len() } else { holdback_start(&self.buf, stops) };
        let text: String = self.buf.drain(..keep_from).collect();
        self.emit(wrap(text));
        eof.then_some(None)
    }

    /// One transition; `false` when nothing more can be decided without more text.
    fn step(&mut self, eof: bool) -> bool {
        match self.state {
            State::Reasoning => match self.stream_text(&[THINK_END, EOS], eof, true) {
                Some(Some(0)) => self.goto(State::Content),
                Some(_) => self.goto(State::Done),
                None => false,
            },
            State::Content => match self.stream_text(&[EOS, TOOL_CALLS_MARKER], eof, false) {
                Some(Some(1)) => self.goto(State::Between),
                Some(_) => self.goto(State::Done),
                None => false,
            },
            State::Raw => match self.stream_text(&[EOS], eof, false) {
                Some(_) => self.goto(State::Done),
                None => false,
            },
            State::Between => self.tag_step(&[INVOKE_START, TOOL_CALLS_END], true, eof, |_, k, _| {
                Some(if k == 0 { State::Head } else { State::AfterCalls })
            }),
            State::Head => self.tag_step(&[PARAM_START, INVOKE_END], false, eof, |p, k, head| {
                let name = parse_invoke_name(head)?;
                let index = p.message.tool_calls.len();
                p.emit(StreamDelta::ToolCallStart { index, id: new_call_id(), name: name.to_string() });
                p.call = Some(OpenCall { index, names: Vec::new() });
                Some(p.after_member(k))
            }),
            State::ParamBody => self.tag_step(&[PARAM_END], false, eof, |p, _, body| {
                let (key, is_str, value) = parse_param(body)?;
                let call = p.call.as_mut()?;
                if call.names.iter().any(|n| n == key) {
                    return None;
                }
                let lead = if call.names.is_empty() { "{" } else { ", " };
                call.names.push(key.to_string());
                let index = call.index;
                p.emit(StreamDelta::ToolCallArguments {
                    index,
                    arguments: format!("{lead}{}", argument_member(key, is_str, value)),
                });
                Some(State::ParamSep)
            }),
            State::ParamSep => self.tag_step(&[PARAM_START, INVOKE_END], true, eof, |p, k, _| Some(p.after_member(k))),
            State::AfterCalls => {
                if let Some((pos, _)) = find_first(&self.buf, &[EOS]) {
                    self.buf.drain(..pos + EOS.len());
                    return self.goto(State::Done);
                }
                if eof {
                    return self.goto(State::Done);
                }
                let keep_from = holdback_start(&self.buf, &[EOS]);
                self.buf.drain(..keep_from);
                false
            }
            State::Done => {
                self.buf.clear();
                false
            }
        }
    }

    /// Waits for the earliest of `stops` inside the DSML block and hands the text before it to `then`,
    /// which validates it and names the next state (`None`: malformed). With `separated`, that text must
    /// be exactly `>\n`, and a violation is reported as soon as it shows.
    fn tag_step(
        &mut self,
        stops: &[&'static str],
        separated: bool,
        eof: bool,
        then: impl FnOnce(&mut Self, usize, &str) -> Option<State>,
    ) -> bool {
        if let Some((pos, k)) = find_first(&self.buf, stops) {
            if separated && &self.buf[..pos] != TAG_SEPARATOR {
                return self.fail();
            }
            let before = self.buf[..pos].to_string();
            return match then(self, k, &before) {
                Some(next) => {
                    let end = pos + stops[k].len();
                    if self.message.tool_calls.is_empty() {
                        self.block_raw.push_str(&self.buf[..end]);
                    }
                    self.buf.drain(..end);
                    self.last_tag = stops[k];
                    self.goto(next)
                }
                None => self.fail(),
            };
        }
        if separated && !could_be_separated(&self.buf, stops) {
            return self.fail();
        }
        if eof {
            self.close_call();
            self.buf.clear();
            return self.goto(State::Done);
        }
        false
    }

    /// After the invoke header or a parameter: `k == 0` opened another parameter, else `</invoke`.
    fn after_member(&mut self, k: usize) -> State {
        if k == 0 {
            State::ParamBody
        } else {
            self.close_call();
            State::Between
        }
    }

    fn close_call(&mut self) {
        if let Some(call) = self.call.take() {
            let arguments = if call.names.is_empty() { "{}" } else { "}" };
            self.emit(StreamDelta::ToolCallArguments { index: call.index, arguments: arguments.to_string() });
        }
    }

    /// Broken DSML: keep the calls parsed so far, send the unparsed rest to `content` (the whole block
    /// when no call was parsed).
    fn fail(&mut self) -> bool {
        let head = if self.message.tool_calls.is_empty() {
            format!("{TOOL_CALLS_MARKER}{}", self.block_raw)
        } else {
            self.last_tag.to_string()
        };
        self.close_call();
        self.buf.insert_str(0, &head);
        self.goto(State::Raw)
    }

    fn goto(&mut self, state: State) -> bool {
        self.state = state;
        true
    }
}

fn find_first(buf: &str, stops: &[&str]) -> Option<(usize, usize)> {
    stops.iter().enumerate().filter_map(|(k, s)| buf.find(s).map(|p| (p, k))).min()
}

/// Start of the longest suffix of `buf` that is a proper prefix of one of `stops` (else `buf.len()`).
fn holdback_start(buf: &str, stops: &[&str]) -> usize {
    let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
    let from = buf.len().saturating_sub(longest);
    (from..buf.len())
        .filter(|&i| buf.is_char_boundary(i))
        .find(|&i| stops.iter().any(|s| s.starts_with(&buf[i..])))
        .unwrap_or(buf.len())
}

/// Whether `buf` can still grow into `>\n` followed by one of `stops`.
fn could_be_separated(buf: &str, stops: &[&str]) -> bool {
    match buf.strip_prefix(TAG_SEPARATOR) {
        Some(rest) => stops.iter().any(|s| s.starts_with(rest)),
        None => TAG_SEPARATOR.starts_with(buf),
    }
}
