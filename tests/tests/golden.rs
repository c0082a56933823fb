//! Golden fixtures: every fixture folder must pass `verify` (logits within the stated
//! tolerance, greedy tokens, router and indexer choices exact) for each checkpoint it holds.

use emesh_model::verify::{fixture_pairs, verify_dir, LOGIT_TOLERANCE};

#[test]
fn every_fixture_folder_passes() {
    let folders = emesh_tests::fixture_folders();
    assert!(!folders.is_empty(), "no fixture folder found under {}", emesh_tests::fixtures_dir().display());
    for dir in folders {
        assert!(
            !fixture_pairs(&dir).is_empty(),
            "{} holds no fixture (model*.safetensors + expected*.safetensors)",
            dir.display()
        );
        let report = verify_dir(&dir, None).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        println!("{}", serde_json::to_string(&report).unwrap());
        for c in &report.checkpoints {
            assert!(c.prompts > 0, "{}: {} has no prompts", dir.display(), c.weights);
            assert!(
                c.prefill_max_abs_diff <= LOGIT_TOLERANCE,
                "{}: {} prefill diff {}",
                dir.display(),
                c.weights,
                c.prefill_max_abs_diff
            );
            assert!(
                c.decode_max_abs_diff <= LOGIT_TOLERANCE,
                "{}: {} decode diff {}",
                dir.display(),
                c.weights,
                c.decode_max_abs_diff
            );
            assert!(
                c.batch_max_abs_diff <= LOGIT_TOLERANCE,
                "{}: {} batch diff {}",
                dir.display(),
                c.weights,
                c.batch_max_abs_diff
            );
            assert!(c.greedy_tokens_match, "{}: {} greedy tokens differ", dir.display(), c.weights);
            assert_ne!(c.router_ids_match, Some(false), "{}: {} router ids differ", dir.display(), c.weights);
            assert_ne!(c.indexer_ids_match, Some(false), "{}: {} indexer ids differ", dir.display(), c.weights);
        }
        assert!(report.pass);
    }
}

#[test]
fn the_f32_fixture_exercises_router_and_indexer_checks() {
    // Guard against a fixture without debug tensors silently skipping the id checks.
    let dir = emesh_tests::fixtures_dir().join("tiny-a");
    let report = verify_dir(&dir, Some("model.safetensors")).unwrap();
    let c = &report.checkpoints[0];
    assert_eq!(c.router_ids_match, Some(true));
    assert_eq!(c.indexer_ids_match, Some(true));
    assert!(c.hidden_max_abs_diff.unwrap() < 1e-4);
}
