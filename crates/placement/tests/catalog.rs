mod common;

use emesh_placement::catalog::{builtin, profile_from_config, BUILTINS};
use emesh_placement::{ModelProfile, V3Config, WeightForm};

#[test]
fn builtin_configs_are_the_official_files() {
    for b in &BUILTINS {
        assert_eq!(b.config, common::read_config_text(&format!("{}.json", b.name)), "{}", b.name);
    }
    assert!(builtin("DeepSeek-V4-Pro").is_some());
    assert!(builtin("deepseek-v5").is_none());
}

#[test]
fn model_type_selects_the_profile() {
    let pro = profile_from_config("p", builtin("deepseek-v4-pro").unwrap().config).unwrap();
    assert_eq!(pro, ModelProfile::from_v4("p", &common::pro(), WeightForm::Release).unwrap());
    let text = builtin("deepseek-v3").unwrap().config;
    let v3 = profile_from_config("v", text).unwrap();
    assert_eq!(v3, ModelProfile::from_v3("v", &V3Config::from_json_str(text).unwrap()));
    for bad in ["", "[]", "{}", r#"{"model_type": "llama"}"#, r#"{"model_type": "deepseek_v4"}"#] {
        assert!(profile_from_config("x", bad).is_err(), "{bad}");
    }
}
