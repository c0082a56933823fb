//! A build without the `etcd` feature has no etcd tests: say so, and fail when etcd is required.

#[cfg(not(feature = "etcd"))]
#[test]
fn without_the_feature() {
    let required = std::env::var(emesh_common::names::ENV_REQUIRE_ETCD).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "EMESH_REQUIRE_ETCD=1 but emesh-store was built without the `etcd` feature: \
         run `cargo test --workspace --release --features emesh-cli/etcd` (as .ci/run does)"
    );
    eprintln!("SKIPPED: etcd store tests (emesh-store built without the `etcd` feature)");
}
