use emesh_placement::simulate::{compare, simulate, Policy, SimConfig};

fn cluster() -> SimConfig {
    SimConfig {
        tp: 8,
        dp: 8,
        mtbf_hours: 2000.0,
        repair_hours: 4.0,
        lease_ttl_s: 10.0,
        reload_gbps: 2.0,
        expert_bytes_per_rank: 12_800_000_000,
        rank_bytes: 22_000_000_000,
        replica_coverage: 0.9,
        spare_workers: 2,
        tolerated_failures: 6,
        requests_per_s: 50.0,
        request_seconds: 20.0,
        horizon_hours: 24.0 * 365.0,
    }
}

#[test]
fn same_seed_same_result() {
    let c = cluster();
    assert_eq!(compare(&c, 42).unwrap(), compare(&c, 42).unwrap());
    assert_ne!(simulate(&c, Policy::Reload, 42).unwrap(), simulate(&c, Policy::Reload, 43).unwrap());
}

#[test]
fn policies_rank_as_expected() {
    let c = cluster();
    let r = compare(&c, 7).unwrap();
    for x in &r {
        println!("{x}");
        assert!((0.0..=1.0).contains(&x.availability));
        assert!((0.0..=1.0).contains(&x.throughput_lost));
        assert_eq!(x.failures, r[0].failures);
    }
    let (replicas, reload, spares) = (&r[0], &r[1], &r[2]);
    // 64 ranks x 8760 h / 2000 h: about 280 failures a year.
    assert!((200..400).contains(&replicas.failures), "{}", replicas.failures);
    assert!(replicas.stall_hours < reload.stall_hours);
    assert!(replicas.mean_recovery_s < reload.mean_recovery_s);
    assert!(spares.degraded_hours < reload.degraded_hours);
    assert!(spares.throughput_lost < reload.throughput_lost);
    assert!(replicas.requests_delayed < reload.requests_delayed);
}

#[test]
fn too_many_dead_ranks_take_the_cluster_down() {
    let mut c = cluster();
    c.mtbf_hours = 20.0;
    c.repair_hours = 10.0;
    c.tolerated_failures = 2;
    let r = simulate(&c, Policy::Replicas, 1).unwrap();
    assert!(r.down_hours > 0.0 && r.availability < 0.9, "{r}");
}

#[test]
fn invalid_configs_are_errors() {
    for f in [
        |c: &mut SimConfig| c.mtbf_hours = 0.0,
        |c: &mut SimConfig| c.reload_gbps = f64::NAN,
        |c: &mut SimConfig| c.replica_coverage = 2.0,
        |c: &mut SimConfig| c.dp = 0,
        |c: &mut SimConfig| c.mtbf_hours = 1e-9,
    ] {
        let mut c = cluster();
        f(&mut c);
        assert!(simulate(&c, Policy::Spares, 0).is_err());
    }
}
