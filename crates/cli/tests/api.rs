//! The OpenAI API of `emesh up` end to end: streaming against non-streaming, seeded sampling
//! alone and in a mixed batch, stop strings, log-probabilities, tokenize, metrics, the API key,
//! `n` choices (greedy, seeded, streamed), bad input and a client that disconnects mid-stream.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn text_of(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect()
}

fn tokens(v: &Value) -> Vec<u64> {
    v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect()
}

#[test]
fn streaming_sampling_stop_strings_and_logprobs() {
    let tmp = tempfile::tempdir().unwrap();
    text_model(tmp.path(), 4096);
    let srv = Server::start(tmp.path(), &[], &[]);
    let a = srv.addr.as_str();
    let prompt = "The capital of France is";
    let sampled = json!({"prompt": prompt, "max_tokens": 10, "temperature": 0.8, "seed": 42, "ignore_eos": true});

    // Streaming gives the text and tokens of the same request without streaming.
    let whole = ok(a, "/v1/completions", &sampled);
    let mut s = sampled.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let events = stream(a, "/v1/completions", &s);
    assert_eq!(text_of(&events), whole["choices"][0]["text"].as_str().unwrap());
    let finish: Vec<&Value> =
        events.iter().map(|e| &e["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, vec!["length"]);
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 10);
    assert_eq!(last["usage"], whole["usage"]);

    // The same seed gives the same tokens inside a batch of 8 mixed requests; greedy too.
    let greedy = json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    let greedy_alone = tokens(&ok(a, "/v1/completions", &greedy));
    let mut mixed: Vec<Value> = vec![sampled.clone(), greedy.clone()];
    for i in 0..6 {
        mixed.push(json!({"prompt": format!("request number {i} says"), "max_tokens": 4 + 2 * i,
            "temperature": 0.3 * i as f64, "top_p": 0.9, "top_k": 50 * i, "seed": i, "ignore_eos": true}));
    }
    let handles: Vec<_> = mixed
        .into_iter()
        .map(|r| {
            let a = a.to_string();
            std::thread::spawn(move || ok(&a, "/v1/completions", &r))
        })
        .collect();
    let results: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(tokens(&results[0]), tokens(&whole), "the seeded request in a batch");
    assert_eq!(tokens(&results[1]), greedy_alone, "the greedy request in a batch");
    let mut other = sampled.clone();
    other["seed"] = json!(43);
    other["temperature"] = json!(1.5);
    let mut again = other.clone();
    assert_ne!(tokens(&ok(a, "/v1/completions", &other)), tokens(&whole), "another seed draws other tokens");
    again["seed"] = json!(42);
    assert_ne!(tokens(&ok(a, "/v1/completions", &again)), tokens(&ok(a, "/v1/completions", &other)));

    // Temperature 0 takes the most likely token at every step; log-probabilities are consistent.
    let mut lp = greedy.clone();
    lp["logprobs"] = json!(3);
    let v = ok(a, "/v1/completions", &lp);
    assert_eq!(tokens(&v), greedy_alone);
    let l = &v["choices"][0]["logprobs"];
    let toks = l["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), 8);
    for i in 0..8 {
        let top = l["top_logprobs"][i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3);
        let best = top.values().map(|x| x.as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        let mine = l["token_logprobs"][i].as_f64().unwrap();
        assert!(mine <= 0.0);
        assert_eq!(mine, best, "step {i}: the greedy token is the most likely one");
        assert_eq!(top[toks[i].as_str().unwrap()].as_f64().unwrap(), mine);
    }
    let mut slp = sampled.clone();
    slp["logprobs"] = json!(2);
    let v = ok(a, "/v1/completions", &slp);
    assert_eq!(tokens(&v), tokens(&whole), "asking for logprobs changes no token");
    let sum: f64 = v["choices"][0]["logprobs"]["top_logprobs"][0]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_f64().unwrap().exp())
        .sum();
    assert!(sum > 0.0 && sum <= 1.0 + 1e-6);

    // A stop string ends the text before it, streaming or not.
    let long = json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": true});
    let full = ok(a, "/v1/completions", &long)["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 4, "{full:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let want = &full[..full.find(&stop).unwrap()];
    let mut r = long.clone();
    r["stop"] = json!([stop, "never-generated-zzz"]);
    let v = ok(a, "/v1/completions", &r);
    assert_eq!(v["choices"][0]["text"], want);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    r["stream"] = json!(true);
    assert_eq!(text_of(&stream(a, "/v1/completions", &r)), want);

    // Chat in thinking mode streams reasoning apart from content, and matches the whole answer.
    let chat = json!({"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 12, "temperature": 0.7,
        "seed": 9, "chat_template_kwargs": {"thinking": true}});
    let whole = ok(a, "/v1/chat/completions", &chat);
    let mut c = chat.clone();
    c["stream"] = json!(true);
    let events = stream(a, "/v1/chat/completions", &c);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events.iter().all(|e| e["object"] == "chat.completion.chunk"));
    let part = |k: &str| -> String { events.iter().filter_map(|e| e["choices"][0]["delta"][k].as_str()).collect() };
    let msg = &whole["choices"][0]["message"];
    assert!(!part("reasoning_content").is_empty(), "thinking output starts as reasoning");
    assert_eq!(part("reasoning_content"), msg["reasoning_content"].as_str().unwrap());
    assert_eq!(part("content"), msg["content"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);

    let mut c = chat.clone();
    c["logprobs"] = json!(true);
    c["top_logprobs"] = json!(2);
    let v = ok(a, "/v1/chat/completions", &c);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    assert!(content
        .iter()
        .all(|e| e["top_logprobs"].as_array().unwrap().len() == 2 && e["logprob"].as_f64().unwrap() <= 0.0));
}

#[test]
fn tokenize_metrics_api_key_bad_input_and_disconnects() {
    let tmp = tempfile::tempdir().unwrap();
    text_model(tmp.path(), 4096);
    let srv = Server::start(tmp.path(), &[], &[("EMESH_API_KEY", "sekret")]);
    let a = srv.addr.as_str();
    let key = [("Authorization", "Bearer sekret")];
    let call = |path: &str, body: &Value| request(a, "POST", path, &key, body.to_string().as_bytes());

    // The key guards /v1/* and tokenize; health, readiness and metrics stay open.
    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(request(a, "GET", path, &[], b"").0, 200, "{path}");
    }
    for (path, method) in
        [("/v1/models", "GET"), ("/v1/completions", "POST"), ("/tokenize", "POST"), ("/detokenize", "POST")]
    {
        let (s, b) = request(a, method, path, &[], b"{}");
        assert_eq!(s, 401, "{path}: {b}");
        assert_eq!(json_of(&b)["error"]["code"], "invalid_api_key");
        assert_eq!(request(a, method, path, &[("Authorization", "Bearer wrong")], b"{}").0, 401);
    }
    assert_eq!(request(a, "GET", "/v1/models", &key, b"").0, 200);

    // Tokenize and detokenize round-trip; messages tokenize to the rendered chat prompt.
    let (s, b) = call("/tokenize", &json!({"prompt": "Hello world", "add_special_tokens": false}));
    assert_eq!(s, 200, "{b}");
    let t = json_of(&b);
    assert_eq!(t["count"].as_u64().unwrap() as usize, t["tokens"].as_array().unwrap().len());
    assert_eq!(t["max_model_len"], 4096);
    let (_, b) = call("/detokenize", &json!({"tokens": t["tokens"]}));
    assert_eq!(json_of(&b)["prompt"], "Hello world");
    let with_bos = json_of(&call("/tokenize", &json!({"prompt": "Hello world"})).1);
    assert_eq!(with_bos["count"].as_u64().unwrap(), t["count"].as_u64().unwrap() + 1);
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let m = json_of(&call("/tokenize", &json!({"messages": messages})).1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_emesh"))
        .arg("chat-template")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(json!({"messages": messages}).to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let rendered = String::from_utf8(out.stdout).unwrap();
    let r = json_of(&call("/tokenize", &json!({"prompt": rendered, "add_special_tokens": false})).1);
    assert_eq!(m["tokens"], r["tokens"]);
    assert_eq!(call("/detokenize", &json!({"tokens": [999999999]})).0, 400);
    assert_eq!(call("/tokenize", &json!({"prompt": 5})).0, 400);

    // Every serving metric is exported once something ran.
    let (s, b) = call("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 3, "ignore_eos": true}));
    assert_eq!(s, 200, "{b}");
    let (_, metrics) = request(a, "GET", "/metrics", &[], b"");
    use emesh_common::metrics as m;
    for name in [
        m::NUM_REQUESTS_RUNNING,
        m::NUM_REQUESTS_WAITING,
        m::TIME_TO_FIRST_TOKEN_SECONDS,
        m::INTER_TOKEN_LATENCY_SECONDS,
        m::E2E_REQUEST_LATENCY_SECONDS,
        m::PROMPT_TOKENS_TOTAL,
        m::GENERATION_TOKENS_TOTAL,
        m::CACHE_USAGE_RATIO,
        m::PLACEMENT_EPOCH,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    assert!(metrics.contains(&format!("{} 3", m::GENERATION_TOKENS_TOTAL)), "{metrics}");

    // Bad input: the right status, the field named.
    let huge: Vec<u32> = vec![5; 5000];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/completions", b"{\"prompt\": \"a\"".to_vec(), 400, "body"),
        ("/v1/completions", vec![b'"', 0xc3, 0x28, b'"'], 400, "body"),
        ("/v1/completions", br#"{"prompt": "a", "temperature": -0.5}"#.to_vec(), 400, "temperature"),
        ("/v1/completions", br#"{"prompt": "a", "temperature": "warm"}"#.to_vec(), 400, "temperature"),
        ("/v1/completions", br#"{"prompt": "a", "top_p": 7}"#.to_vec(), 400, "top_p"),
        ("/v1/completions", br#"{"prompt": "a", "top_k": -9}"#.to_vec(), 400, "top_k"),
        ("/v1/completions", br#"{"prompt": "a", "n": 0}"#.to_vec(), 400, "n"),
        ("/v1/completions", br#"{"prompt": "a", "n": 17}"#.to_vec(), 400, "n"),
        ("/v1/chat/completions", br#"{"messages": [{"role": "user", "content": "x"}], "n": 17}"#.to_vec(), 400, "n"),
        ("/v1/completions", br#"{"prompt": "a", "best_of": 2}"#.to_vec(), 400, "best_of"),
        ("/v1/completions", br#"{"prompt": "a", "seed": "abc"}"#.to_vec(), 400, "seed"),
        ("/v1/completions", br#"{"prompt": "a", "stop": {"x": 1}}"#.to_vec(), 400, "stop"),
        ("/v1/completions", br#"{"prompt": "a", "logprobs": 1000}"#.to_vec(), 400, "logprobs"),
        ("/v1/completions", br#"{"prompt": "a", "max_tokens": 1e30}"#.to_vec(), 400, "max_tokens"),
        ("/v1/completions", br#"{"prompt": "a", "max_tokens": -1}"#.to_vec(), 400, "max_tokens"),
        ("/v1/completions", br#"{"prompt": [1, -2]}"#.to_vec(), 400, "prompt"),
        ("/v1/completions", br#"{"prompt": [4294967295]}"#.to_vec(), 400, "prompt"),
        ("/v1/completions", br#"{"prompt": "a", "stream_options": 5}"#.to_vec(), 400, "stream_options"),
        ("/v1/completions", br#"{"prompt": "a", "model": "nope"}"#.to_vec(), 404, "model"),
        ("/v1/completions", json!({"prompt": huge}).to_string().into_bytes(), 413, "prompt"),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": 5}], "max_tokens": 1}"#.to_vec(),
            400,
            "messages[0]",
        ),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": "x"}], "tools": 3, "max_tokens": 1}"#.to_vec(),
            400,
            "tools",
        ),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": "x"}], "logprobs": "yes", "max_tokens": 1}"#.to_vec(),
            400,
            "logprobs",
        ),
    ];
    for (path, body, want, param) in cases {
        let (s, b) = request(a, "POST", path, &key, &body);
        assert_eq!(s, want, "{path} {}: {b}", String::from_utf8_lossy(&body));
        let e = json_of(&b);
        assert!(e["error"]["param"].as_str().unwrap_or("").starts_with(param), "{param}: {b}");
    }

    // A client that goes away mid-stream is cancelled, every choice of it; the server goes on.
    {
        use std::io::{Read, Write};
        let body =
            json!({"prompt": "Tell me everything", "max_tokens": 3000, "ignore_eos": true, "stream": true, "n": 3})
                .to_string();
        let mut s = std::net::TcpStream::connect(a).unwrap();
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("data: {") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let until = Instant::now() + Duration::from_secs(20);
    let gauge = format!("{} 0", m::NUM_REQUESTS_RUNNING);
    loop {
        let (_, metrics) = request(a, "GET", "/metrics", &[], b"");
        if metrics.contains(&gauge) {
            break;
        }
        assert!(Instant::now() < until, "the abandoned stream still runs:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, b) =
        call("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}));
    assert_eq!(s, 200, "{b}");
}

fn choice_tokens(v: &Value, i: usize) -> Vec<u64> {
    v["choices"][i]["token_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect()
}

#[test]
fn n_choices_greedy_seeded_streamed_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    text_model(tmp.path(), 4096);
    let srv = Server::start(tmp.path(), &[], &[]);
    let a = srv.addr.as_str();

    // Greedy: three identical choices, each the n = 1 answer; usage counts the prompt once.
    let greedy = json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "ignore_eos": true});
    let one = ok(a, "/v1/completions", &greedy);
    let mut r = greedy.clone();
    r["n"] = json!(3);
    let three = ok(a, "/v1/completions", &r);
    let choices = three["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], one["choices"][0]["text"], "greedy choice {i}");
        assert_eq!(choice_tokens(&three, i), tokens(&one));
    }
    let prompt_tokens = one["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(three["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(three["usage"]["completion_tokens"], 18);
    assert_eq!(three["usage"]["total_tokens"], prompt_tokens + 18);

    // Seeded: choice i is the n = 1 request with seed + i, and the choices differ.
    let sampled = json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 1.0, "seed": 7,
        "ignore_eos": true});
    let mut r = sampled.clone();
    r["n"] = json!(3);
    let many = ok(a, "/v1/completions", &r);
    for i in 0..3 {
        let mut alone = sampled.clone();
        alone["seed"] = json!(7 + i);
        assert_eq!(choice_tokens(&many, i), tokens(&ok(a, "/v1/completions", &alone)), "choice {i}");
    }
    assert_ne!(choice_tokens(&many, 0), choice_tokens(&many, 1), "choices draw with different seeds");

    // Streaming n = 2: per-index deltas add up to the non-streaming choices, each ends once,
    // and the usage chunk sums both.
    let mut r = sampled.clone();
    r["n"] = json!(2);
    let whole = ok(a, "/v1/completions", &r);
    r["stream"] = json!(true);
    r["stream_options"] = json!({"include_usage": true});
    let events = stream(a, "/v1/completions", &r);
    for i in 0..2u64 {
        let mine: Vec<&Value> = events.iter().filter(|e| e["choices"][0]["index"] == i).collect();
        let text: String = mine.iter().filter_map(|e| e["choices"][0]["text"].as_str()).collect();
        assert_eq!(text, whole["choices"][i as usize]["text"].as_str().unwrap(), "choice {i}");
        let finish: Vec<&Value> =
            mine.iter().map(|e| &e["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
        assert_eq!(finish, vec!["length"], "choice {i}");
        assert!(!mine.last().unwrap()["choices"][0]["finish_reason"].is_null(), "choice {i} ends with its finish");
    }
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], whole["usage"]);
    assert_eq!(last["usage"]["completion_tokens"], 16);

    // Chat, streaming n = 2: a role chunk per choice, per-index content matching the whole answer.
    let chat = json!({"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "temperature": 0.9,
        "seed": 3, "n": 2, "chat_template_kwargs": {"thinking": true}});
    let whole = ok(a, "/v1/chat/completions", &chat);
    assert_eq!(whole["choices"].as_array().unwrap().len(), 2);
    let mut c = chat.clone();
    c["stream"] = json!(true);
    let events = stream(a, "/v1/chat/completions", &c);
    for i in 0..2u64 {
        let mine: Vec<&Value> = events.iter().filter(|e| e["choices"][0]["index"] == i).collect();
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        let part = |k: &str| -> String { mine.iter().filter_map(|e| e["choices"][0]["delta"][k].as_str()).collect() };
        let msg = &whole["choices"][i as usize]["message"];
        assert_eq!(part("reasoning_content"), msg["reasoning_content"].as_str().unwrap_or(""), "choice {i}");
        assert_eq!(part("content"), msg["content"].as_str().unwrap_or(""), "choice {i}");
    }
}
