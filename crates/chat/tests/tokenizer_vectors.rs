//! The tokenizer wrapper against every tokenizer vector, and the streaming detokenizer against the
//! one-shot decode of each.

mod common;

use emesh_chat::Tokenizer;

fn tokenizer() -> Tokenizer {
    let dir = common::tokenizer_dir();
    Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("tokenizer in {} is required: {e}", dir.display()))
}

#[test]
fn tokenizer_vectors_and_streaming_decode() {
    let tok = tokenizer();
    let doc = common::load_json("chat-encoding/tokenizer-vectors.json");
    assert_eq!(tok.vocab_size() as u64, doc["meta"]["vocab_size_with_added"].as_u64().expect("vocab size"));
    assert_eq!((tok.bos_id(), tok.eos_id()), (0, 1));

    let specials = doc["meta"]["special_token_ids"].as_object().expect("special_token_ids");
    assert!(!specials.is_empty());
    for (token, id) in specials {
        assert_eq!(tok.token_id(token).map(u64::from), id.as_u64(), "{token}");
    }

    let vectors = common::vectors(&doc, "vectors");
    let mut checked = 0;
    for v in vectors {
        let name = common::name(v);
        let text = v["text"].as_str().expect("text");
        let want: Vec<u32> = v["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()).expect("u32 id"))
            .collect();
        let ids = tok.encode(text).expect("encodes");
        assert_eq!(ids, want, "{name}: ids");
        if let Some(tokens) = v["tokens"].as_array() {
            let got: Vec<Option<String>> = ids.iter().map(|&id| tok.id_token(id)).collect();
            let want: Vec<Option<String>> = tokens.iter().map(|t| t.as_str().map(str::to_string)).collect();
            assert_eq!(got, want, "{name}: tokens");
        }
        let decoded = tok.decode(&ids, false).expect("decodes");
        if v["decode_roundtrip_exact"].as_bool() == Some(true) {
            assert_eq!(decoded, text, "{name}: round trip");
        }
        for skip in [false, true] {
            let mut stream = tok.stream_decoder(skip);
            let mut joined = String::new();
            for &id in &ids {
                let delta = stream.push(id).expect("push");
                assert!(!delta.contains('\u{FFFD}'), "{name}: a delta split a character");
                joined.push_str(&delta);
            }
            joined.push_str(&stream.finish().expect("finish"));
            assert_eq!(joined, tok.decode(&ids, skip).expect("decodes"), "{name}: stream (skip={skip})");
        }
        checked += 1;
    }
    assert_eq!(checked, vectors.len());

    let ids = tok.encode("<｜begin▁of▁sentence｜>a</think>b<｜end▁of▁sentence｜>").expect("encodes");
    assert_eq!(tok.decode(&ids, true).expect("decodes"), "a</think>b", "skip drops BOS/EOS only");
}

#[test]
fn rendered_encode_vectors_tokenize_to_their_control_tokens() {
    let tok = tokenizer();
    let doc = common::chat_vectors();
    let user = tok.token_id("<｜User｜>").expect("User token");
    for v in common::vectors(&doc, "encode_vectors") {
        let prompt = v["expected_prompt"].as_str().expect("expected_prompt");
        let ids = tok.encode(prompt).expect("encodes");
        assert_eq!(tok.decode(&ids, false).expect("decodes"), prompt, "{}", common::name(v));
        let users = prompt.matches("<｜User｜>").count();
        assert_eq!(ids.iter().filter(|&&id| id == user).count(), users, "{}", common::name(v));
    }
}

#[test]
fn missing_tokenizer_is_an_error() {
    let err = Tokenizer::from_dir("/nonexistent/model").err().expect("must fail");
    assert!(err.to_string().contains("/nonexistent/model/tokenizer.json"), "{err}");
}
