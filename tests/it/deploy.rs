//! The example configs in `deploy/` load, so they never rot.

use ferry_daemon::config::{Config, StorageConfig};

fn deploy(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name)
}

#[test]
fn ministry_example_config_loads() {
    let config = Config::load(&deploy("ministry.toml")).unwrap();
    assert_eq!(config.node_name, "ministry");
    assert!(config.admin_listen.is_some());
    assert!(config.tls.crl.is_some());
}

#[test]
fn province_example_config_loads_with_its_peer() {
    let config = Config::load(&deploy("province.toml")).unwrap();
    assert!(config.peers.contains_key("ministry"), "a province knows the ministry");
    assert!(matches!(config.storage, StorageConfig::Local(_) | StorageConfig::S3(_)));
}
