//! The example configs in `deploy/` load, so they never rot (their `[[subscription]]`,
//! `[[schedule]]` and bandwidth `[limits]` examples too), and agree with the README's
//! "Running nodes" recipe and `deploy/pki-bootstrap.sh` (certificates in `./pki`, the ministry
//! running the control plane, the province following it). `deploy/try-recipe.sh` runs the
//! recipe itself; these checks fail first, without binaries.

use ferry_daemon::config::{Config, PolicySource, StorageConfig};
use ferry_daemon::schedule::Target;
use ferry_daemon::subscribe::SubscriptionTarget;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(name: &str) -> PathBuf {
    repo().join("deploy").join(name)
}

/// `path` without `.` and `..` components, so two spellings of one place compare equal.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the recipe's `deploy/pki-bootstrap.sh ./pki` writes, run from the repository root.
fn recipe_pki() -> PathBuf {
    lexical(&repo().join("pki"))
}

fn readme_recipe() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## Running nodes").nth(1).expect("a Running nodes section");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn ministry_example_config_loads_and_runs_the_control_plane() {
    let config = Config::load(&deploy("ministry.toml")).unwrap();
    assert_eq!(config.node_name, "ministry");
    assert!(config.admin_listen.is_some());
    assert!(config.tls.crl.is_some());
    let control = config.control.expect("the ministry runs [control]");
    assert_eq!(lexical(&control.signing_cert), recipe_pki().join("control.pem"));
    assert_eq!(config.policy.expect("a policy source").source, PolicySource::Local);
}

#[test]
fn province_example_config_loads_and_follows_the_ministry() {
    let config = Config::load(&deploy("province.toml")).unwrap();
    assert!(config.peers.contains_key("ministry"), "a province knows the ministry");
    assert!(matches!(config.storage, StorageConfig::Local(_) | StorageConfig::S3(_)));
    let policy = config.policy.expect("a province enforces the catalog");
    assert_eq!(policy.source, PolicySource::Ministry { peer: "ministry".into() });
    assert_eq!(policy.ministry_dept.map(|d| d.to_string()).as_deref(), Some("ministry"));
    assert!(config.control.is_none());
}

#[test]
fn example_configs_show_subscriptions_schedules_and_bandwidth_limits() {
    let province = Config::load(&deploy("province.toml")).unwrap();
    let subscription = province.subscriptions.first().expect("an example [[subscription]]");
    assert_eq!((subscription.dataset.as_str(), subscription.from.as_str()), ("vehicle-registry", "ministry"));
    assert_eq!(subscription.target, SubscriptionTarget::Store);
    let job = province.schedules.first().expect("an example [[schedule]]");
    assert_eq!((job.dataset.as_str(), job.from.as_str()), ("vehicle-registry", "ministry"));
    let Target::Directory(dir) = &job.into else { panic!("the example downloads into a directory") };
    assert_eq!(lexical(dir), lexical(&repo().join("nodes/guangdong/exports")), "relative to the config");
    assert_eq!((job.retries, job.catch_up, job.enabled), (3, true, true));
    let priorities = (subscription.priority, job.priority);
    assert_eq!(priorities, (ferry_proto::JobPriority::High, ferry_proto::JobPriority::Low));
    assert!(province.limits.bandwidth.pull.is_some(), "a pull-bwlimit timetable");
    let ministry = Config::load(&deploy("ministry.toml")).unwrap().limits.bandwidth;
    assert!(ministry.serve.is_some() && ministry.serve_per_peer.is_some(), "{ministry:?}");
    assert!(ministry.serve_by_dept.values().any(Option::is_some), "{ministry:?}");
}

#[test]
fn configs_read_the_certificates_the_recipe_bootstraps() {
    let recipe = readme_recipe();
    assert!(recipe.contains("deploy/pki-bootstrap.sh ./pki"), "{recipe}");
    let bootstrap = std::fs::read_to_string(deploy("pki-bootstrap.sh")).unwrap();
    for name in ["ministry", "province"] {
        let config = Config::load(&deploy(&format!("{name}.toml"))).unwrap();
        assert!(recipe.contains(&format!("deploy/{name}.toml")), "the recipe starts {name}");
        for path in [&config.tls.ca, &config.tls.cert, &config.tls.key] {
            let path = lexical(path);
            assert_eq!(path.parent(), Some(recipe_pki().as_path()), "{name}: {}", path.display());
            let file = path.file_name().unwrap().to_str().unwrap();
            let issued = file == "ca.pem" || bootstrap.contains(&format!("\"$dir/{file}\""));
            let issued = issued || bootstrap.contains(&format!("\"$dir/$p.{}\"", &file[file.len() - 3..]));
            assert!(issued, "{name}: the bootstrap writes no {file}");
        }
    }
    assert!(bootstrap.contains("--role control"), "the bootstrap issues the control-plane key");
}

#[test]
fn the_recipe_registers_the_catalog_entry_before_publishing() {
    let recipe = readme_recipe();
    let register = recipe.find("ferry catalog register deploy/catalog/vehicle-registry.toml");
    let publish = recipe.find("ferry publish");
    assert!(register.is_some() && register < publish, "{recipe}");
    assert!(deploy("catalog/vehicle-registry.toml").exists());
}
