//! From generated token ids to what a client sees, one token at a time: incremental
//! detokenization (whole UTF-8 characters only), stop strings (text that could still become one
//! is held back, and the output ends before it), and for chat the V4 output parser that splits
//! reasoning, content and tool calls. Streaming and non-streaming answers both go through this,
//! so they cannot disagree.

use crate::parse::GenParams;
use emesh_chat::{StreamDelta, StreamParser, ThinkingMode, Tokenizer};
use emesh_coordinator::TokenLogprobs;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The incremental detokenizer, holding its tokenizer for the whole stream. A decode error
/// (ids outside the vocabulary never reach here) shows as no text rather than ending the stream.
type Detok = emesh_chat::StreamDecoder<Arc<Tokenizer>>;

/// Holds back text that could still grow into a stop string; cuts the output before one.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    buf: String,
    pub hit: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        StopFilter { stops, buf: String::new(), hit: false }
    }

    /// Adds text; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.buf.push_str(text);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.buf.find(s.as_str())).min() {
            self.hit = true;
            self.buf.truncate(pos);
            return std::mem::take(&mut self.buf);
        }
        let keep = (0..self.buf.len())
            .filter(|&i| self.buf.is_char_boundary(i))
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.buf[i..])))
            .unwrap_or(self.buf.len());
        self.buf.drain(..keep).collect()
    }

    /// The end of output: whatever was held back is shown.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

/// One token's log-probabilities, as text.
#[derive(Clone, Debug)]
pub struct LogprobEntry {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What one step of output adds.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Delta(StreamDelta),
}

pub struct Output {
    tok: Option<Arc<Tokenizer>>,
    detok: Option<Detok>,
    stop: StopFilter,
    parser: Option<StreamParser>,
    /// Ids that end generation and are not shown (EOS and `stop_token_ids`).
    hidden: Vec<u32>,
    pub tokens: Vec<u32>,
    logprobs: Vec<LogprobEntry>,
    sent_logprobs: usize,
    done: bool,
}

impl Output {
    /// `chat`: the mode the prompt was rendered in (its output is parsed), else plain text.
    pub fn new(tok: Option<Arc<Tokenizer>>, p: &GenParams, eos: u32, chat: Option<ThinkingMode>) -> Output {
        let detok = tok.clone().map(|tok| Detok::new(tok, chat.is_none()));
        let mut hidden = p.stop_token_ids.clone();
        if !p.ignore_eos {
            hidden.push(eos);
        }
        Output {
            tok,
            detok,
            stop: StopFilter::new(p.stop.clone()),
            parser: chat.map(StreamParser::new),
            hidden,
            tokens: vec![],
            logprobs: vec![],
            sent_logprobs: 0,
            done: false,
        }
    }

    /// Whether a stop string ended the output (the caller stops generating).
    pub fn stopped(&self) -> bool {
        self.stop.hit
    }

    fn token_text(&self, id: u32) -> String {
        match &self.tok {
            Some(t) => t.decode(&[id], false).unwrap_or_default(),
            None => format!("token_id:{id}"),
        }
    }

    pub fn push(&mut self, id: u32, lp: Option<TokenLogprobs>) -> Vec<Piece> {
        if self.done || self.stop.hit {
            return vec![];
        }
        self.tokens.push(id);
        if let Some(lp) = lp {
            let top = lp.top_tokens.iter().zip(&lp.top_logprobs).map(|(&t, &l)| (self.token_text(t), l)).collect();
            self.logprobs.push(LogprobEntry { token: self.token_text(id), logprob: lp.logprob, top });
        }
        if self.hidden.contains(&id) {
            return vec![];
        }
        let text = match &mut self.detok {
            Some(d) => d.push(id).unwrap_or_default(),
            None => String::new(),
        };
        let shown = self.stop.push(&text);
        let mut out = self.feed(&shown);
        if self.stop.hit {
            out.extend(self.close());
        }
        out
    }

    /// The end of generation; returns the rest.
    pub fn finish(&mut self) -> Vec<Piece> {
        if self.done {
            return vec![];
        }
        let mut out = vec![];
        if !self.stop.hit {
            let rest = self.detok.as_mut().and_then(|d| d.finish().ok()).unwrap_or_default();
            let shown = self.stop.push(&rest);
            out = self.feed(&shown);
            if !self.stop.hit {
                let held = self.stop.finish();
                out.extend(self.feed(&held));
            }
        }
        out.extend(self.close());
        out
    }

    fn feed(&mut self, text: &str) -> Vec<Piece> {
        if text.is_empty() {
            return vec![];
        }
        match &mut self.parser {
            Some(p) => p.push(text).into_iter().map(Piece::Delta).collect(),
            None => vec![Piece::Text(text.to_string())],
        }
    }

    fn close(&mut self) -> Vec<Piece> {
        self.done = true;
        match &mut self.parser {
            Some(p) => p.finish().into_iter().map(Piece::Delta).collect(),
            None => vec![],
        }
    }

    /// `tool_calls` when the chat output holds calls, else `stop` or the engine's `length`.
    pub fn finish_reason(&self, engine: &str) -> &'static str {
        if self.parser.as_ref().is_some_and(|p| !p.message().tool_calls.is_empty()) {
            return "tool_calls";
        }
        if self.stop.hit || engine == "stop" {
            "stop"
        } else {
            "length"
        }
    }

    /// The whole chat message so far.
    pub fn message(&self) -> Value {
        self.parser.as_ref().map(|p| p.message().to_openai()).unwrap_or(Value::Null)
    }

    /// Log-probabilities not yet sent, in the chat shape (`None` when none were asked for).
    pub fn chat_logprobs(&mut self, all: bool) -> Option<Value> {
        let entries = self.take_logprobs(all)?;
        let item = |t: &str, l: f32| json!({"token": t, "logprob": l, "bytes": t.as_bytes()});
        let content: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = item(&e.token, e.logprob);
                v["top_logprobs"] = e.top.iter().map(|(t, l)| item(t, *l)).collect();
                v
            })
            .collect();
        Some(json!({ "content": content }))
    }

    /// Log-probabilities not yet sent, in the legacy completions shape.
    pub fn completion_logprobs(&mut self, all: bool) -> Option<Value> {
        let entries = self.take_logprobs(all)?;
        let mut offset = 0;
        let mut offsets = vec![];
        for e in &entries {
            offsets.push(offset);
            offset += e.token.len();
        }
        let top: Vec<Value> = entries
            .iter()
            .map(|e| Value::Object(e.top.iter().map(|(t, l)| (t.clone(), json!(l))).collect::<Map<_, _>>()))
            .collect();
        Some(json!({
            "tokens": entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
            "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": offsets,
        }))
    }

    fn take_logprobs(&mut self, all: bool) -> Option<Vec<LogprobEntry>> {
        if self.logprobs.is_empty() {
            return None;
        }
        let from = if all { 0 } else { self.sent_logprobs };
        self.sent_logprobs = self.logprobs.len();
        Some(self.logprobs[from..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_before_the_stop_on_any_split() {
        let text = "hello wor|ld and more";
        for split in 1..text.len() {
            let mut f = StopFilter::new(vec!["ld a".into(), "zzz".into()]);
            let (a, b) = text.split_at(split);
            let mut shown = f.push(a);
            shown += &f.push(b);
            if !f.hit {
                shown += &f.finish();
            }
            assert!(f.hit);
            assert_eq!(shown, "hello wor|");
        }
        let mut f = StopFilter::new(vec!["abc".into()]);
        assert_eq!(f.push("xxab"), "xx");
        assert_eq!(f.push("d"), "abd");
        assert_eq!(f.push("ab"), "");
        assert_eq!(f.finish(), "ab");
        assert!(!f.hit);
    }
}
