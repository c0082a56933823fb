//! The V4 tokenizer (`tokenizer.json`) and a streaming detokenizer.
//!
//! Prompts already contain their control tokens as text (BOS included), so encoding never adds special
//! tokens. The streaming detokenizer holds back bytes until they form whole UTF-8 characters, so a
//! client never sees a split character and the concatenated deltas equal the one-shot decode.

use std::path::Path;

use crate::tokens::{BOS, EOS};
use crate::ChatError;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: u32,
    eos_id: u32,
}

fn tok_err(e: impl std::fmt::Display) -> ChatError {
    ChatError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a model folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, ChatError> {
        Tokenizer::from_file(dir.as_ref().join("tokenizer.json"))
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, ChatError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ChatError::Io { path: path.to_path_buf(), source })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| ChatError::Tokenizer(format!("{}: {e}", path.display())))?;
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| ChatError::Tokenizer(format!("{}: no token {t:?}", path.display())))
        };
        Ok(Tokenizer { bos_id: id(BOS)?, eos_id: id(EOS)?, inner })
    }

    /// Token ids of `text`; control strings in the text become their single tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ChatError> {
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; `skip_special` drops BOS/EOS/pad but keeps `</think>`, DSML and role tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ChatError> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The stop token that ends every assistant turn.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Number of ids including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<&Tokenizer> {
        StreamDecoder::new(self, skip_special)
    }
}

/// Detokenizes ids one at a time (prefix/read offsets over a short window of recent ids). `T`
/// is how the tokenizer is held: borrowed, or shared (`Arc<Tokenizer>`) by a long-lived stream.
pub struct StreamDecoder<T: std::ops::Deref<Target = Tokenizer>> {
    tokenizer: T,
    skip_special: bool,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl<T: std::ops::Deref<Target = Tokenizer>> StreamDecoder<T> {
    pub fn new(tokenizer: T, skip_special: bool) -> Self {
        StreamDecoder { tokenizer, skip_special, ids: Vec::new(), prefix: 0, read: 0 }
    }

    /// Adds one id; returns the text it completes (possibly empty while a character is incomplete).
    pub fn push(&mut self, id: u32) -> Result<String, ChatError> {
        self.ids.push(id);
        self.advance(false)
    }

    /// Returns whatever is still held back (an incomplete character decodes to U+FFFD).
    pub fn finish(&mut self) -> Result<String, ChatError> {
        self.advance(true)
    }

    fn advance(&mut self, flush: bool) -> Result<String, ChatError> {
        let t = &*self.tokenizer;
        let before = t.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = t.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() <= before.len() || (!flush && now.ends_with('\u{FFFD}')) {
            return Ok(String::new());
        }
        let Some(delta) = now.strip_prefix(before.as_str()) else {
            return Ok(String::new());
        };
        let delta = delta.to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        if self.prefix > 0 {
            self.ids.drain(..self.prefix);
            self.read -= self.prefix;
            self.prefix = 0;
        }
        Ok(delta)
    }
}
