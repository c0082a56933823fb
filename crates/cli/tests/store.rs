//! The coordinator publishes the placement through the store: workers registered, the plan
//! written by compare-and-swap on a growing epoch, every rank recorded ready for it.

use emesh_coordinator::{Cluster, ClusterOptions};
use emesh_store::{MemoryStore, PlacementStore};

#[test]
fn placement_goes_through_the_store_with_growing_epochs() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = emesh_model::gen::preset("tiny").unwrap();
    emesh_model::gen::generate(tmp.path(), &cfg, emesh_model::gen::GenDtype::F32, 1, 1 << 30, |_| {}).unwrap();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let l = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
        let wc = emesh_worker::WorkerConfig { worker_id: format!("w{i}"), ..Default::default() };
        rt.spawn(emesh_worker::serve(wc, l, std::future::pending()));
    }
    let store = MemoryStore::new();
    let opts = ClusterOptions { model_dir: tmp.path().display().to_string(), ..Default::default() };
    rt.block_on(async {
        let c = Cluster::start_with(&addrs, cfg.clone(), &opts, &store).await.unwrap();
        let p = store.placement().await.unwrap().unwrap();
        assert_eq!(p.epoch, c.plan.epoch);
        let stored: emesh_placement::Plan = serde_json::from_str(&p.plan_json).unwrap();
        assert_eq!(stored, c.plan, "the stored plan is the one the workers loaded");
        assert_eq!(store.workers().await.unwrap().len(), 3);
        assert_eq!(store.ready(p.epoch).await.unwrap(), ["w0", "w1", "w2"]);
        // Placing again is a new epoch; the old one's readiness is gone.
        let c2 = Cluster::start_with(&addrs, cfg.clone(), &opts, &store).await.unwrap();
        assert_eq!(c2.plan.epoch.0, p.epoch.0 + 1);
        assert!(store.ready(p.epoch).await.unwrap().is_empty());
        assert_eq!(store.ready(c2.plan.epoch).await.unwrap().len(), 3);
    });
}
