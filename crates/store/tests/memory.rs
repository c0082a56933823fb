#[tokio::test]
async fn memory_store_conforms() {
    emesh_store::conformance::run(&emesh_store::MemoryStore::new()).await;
}
