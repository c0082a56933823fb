//! The coordinator's batcher over a real cluster: queued requests all finish, in any mix of
//! lengths, each with exactly the tokens one process generates for it.

use emesh_coordinator::{Batcher, Cluster, ClusterOptions, Request};
use emesh_model::{argmax, Engine, LoadOptions, Logits, Seq};

fn greedy(e: &Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut c = e.new_cache();
    let mut out = Vec::new();
    let mut feed = prompt.to_vec();
    for _ in 0..n {
        let l = e.forward(&mut [Seq { tokens: &feed, cache: &mut c, logits: Logits::Last }], None).unwrap();
        let t = argmax(&l[0]);
        out.push(t);
        feed = vec![t];
    }
    out
}

#[test]
fn queued_requests_finish_with_single_process_tokens() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = emesh_model::gen::preset("tiny").unwrap();
    emesh_model::gen::generate(tmp.path(), &cfg, emesh_model::gen::GenDtype::F32, 9, 1 << 30, |_| {}).unwrap();
    let engine = Engine::load(tmp.path(), &LoadOptions::default()).unwrap();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        rt.spawn(emesh_worker::serve(emesh_worker::WorkerConfig::default(), l, std::future::pending()));
    }
    let opts = ClusterOptions { model_dir: tmp.path().display().to_string(), ..Default::default() };
    let mut cluster = rt.block_on(Cluster::start(&addrs, cfg, &opts)).unwrap();
    // One running sequence per group: five requests must queue.
    let mut b = Batcher::new(1);
    let reqs: Vec<(Vec<u32>, usize)> =
        (0..5u32).map(|i| ((0..3 + 7 * i).map(|k| (k * 31 + i * 7) % 990 + 5).collect(), 2 + i as usize)).collect();
    for (p, n) in &reqs {
        b.submit(Request::greedy(p.clone(), *n)).unwrap();
    }
    assert_eq!(b.waiting(), 5);
    let done = rt.block_on(b.run_to_completion(&mut cluster)).unwrap();
    assert_eq!(done.len(), 5);
    assert!(b.is_idle());
    for (f, (p, n)) in done.iter().zip(&reqs) {
        assert_eq!(f.tokens, greedy(&engine, p, *n), "request {}", f.id);
        assert_eq!(f.prompt_tokens, p.len());
    }
    assert!(done.iter().any(|f| f.first_token_step > 0), "some requests waited for a free slot");
    // A stop token ends a request early, the token included.
    let want = greedy(&engine, &reqs[0].0, 6);
    let stop = want[2];
    let id = b.submit(Request { stop_token: Some(stop), ..Request::greedy(reqs[0].0.clone(), 6) }).unwrap();
    let done = rt.block_on(b.run_to_completion(&mut cluster)).unwrap();
    let cut = want.iter().position(|&t| t == stop).unwrap() + 1;
    assert_eq!(done[0].id, id);
    assert_eq!(done[0].tokens, want[..cut]);
    assert!(b.submit(Request::greedy(vec![], 1)).is_err());
}
