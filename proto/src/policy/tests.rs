use super::*;
use crate::authz::ReadPart;

mod for_grant;
mod grants;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn dept(s: &str) -> DeptId {
    DeptId::new(s).unwrap()
}

fn ds(s: &str) -> DatasetId {
    DatasetId::new(s).unwrap()
}

fn entry(
    version: u64,
    from: i64,
    stage: PolicyStage,
    share_type: ShareType,
    methods: &[ServiceMethod],
) -> PolicyEntry {
    PolicyEntry {
        catalog_version: version,
        effective_from_ms: from,
        stage,
        share_type,
        methods: methods.to_vec(),
        schema_fingerprint: format!("fp{version}"),
        definition: String::new(),
    }
}

const ALL: &[ServiceMethod] =
    &[ServiceMethod::OnlineQuery, ServiceMethod::Subscription, ServiceMethod::Download];

/// The catalog states of the decision table: one dataset each, all provided by the node's
/// department `zj` except `foreign` (provided by `gd`); `absent` is not in the catalog.
fn snapshot() -> PolicySnapshot {
    use PolicyStage::{Formal, PreCatalog};
    use ShareType::{Conditional, NotShared, Unconditional};
    let mut datasets = vec![
        ("uncond", "zj", vec![entry(1, 0, Formal, Unconditional, ALL)]),
        (
            "cond",
            "zj",
            vec![entry(2, 0, Formal, Conditional, &[ServiceMethod::OnlineQuery, ServiceMethod::Download])],
        ),
        ("notshared", "zj", vec![entry(1, 0, Formal, NotShared, &[])]),
        ("precat", "zj", vec![entry(1, 0, PreCatalog, Unconditional, &[ServiceMethod::Download])]),
        ("queryonly", "zj", vec![entry(1, 0, Formal, Unconditional, &[ServiceMethod::OnlineQuery])]),
        ("foreign", "gd", vec![entry(1, 0, Formal, Unconditional, ALL)]),
        ("future", "zj", vec![entry(1, NOW + DAY, Formal, Unconditional, ALL)]),
    ]
    .into_iter()
    .map(|(id, provider, versions)| PolicyDataset { id: ds(id), provider: dept(provider), versions })
    .collect::<Vec<_>>();
    datasets.sort_by(|a, b| a.id.cmp(&b.id));
    PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial: 5,
        issued_at_ms: NOW,
        ministry: dept("mot"),
        datasets,
        grants: vec![],
    }
}

fn peer(name: &str) -> Principal {
    let (d, role) = match name {
        "zj-op" => ("zj", Role::Operator),
        "zj-node" => ("zj", Role::Province),
        "gd-op" => ("gd", Role::Operator),
        "gd-node" => ("gd", Role::Province),
        "mot-hub" => ("mot", Role::Ministry),
        "mot-op" => ("mot", Role::Operator),
        "ctl" => ("mot", Role::Control),
        other => panic!("no requester {other}"),
    };
    Principal { dept: dept(d), role, name: name.into(), serial: "01".into(), fingerprint: "00".into() }
}

fn outcome(result: Result<Access, Denial>) -> String {
    match result {
        Ok(Access::Full) => "ok".into(),
        Ok(Access::Restricted { grant, .. }) => format!("restricted:{grant}"),
        Err(d) => {
            let code = match d.code {
                crate::ErrorCode::NotFound => "hidden",
                crate::ErrorCode::PermissionDenied => "denied",
                _ => "other",
            };
            format!("{code}:{}", d.reason)
        }
    }
}

/// Every cell of (catalog state × requester × request kind), on the node of `zj`, with no
/// grants in force: only providers and the ministry's hub read, unconditional data included
/// (its grant is made at once on application, but an application it takes).
/// Columns: requesters zj-op, zj-node, gd-op, gd-node, mot-hub, mot-op, ctl.
/// `list` is whether the dataset shows in the requester's listing; `read` a download of its
/// chunks; `query` an online-query read; `publish`; `replicate` (the node pulls it).
#[test]
fn decision_table() {
    const REQUESTERS: [&str; 7] = ["zj-op", "zj-node", "gd-op", "gd-node", "mot-hub", "mot-op", "ctl"];
    let h_absent = "hidden:not_in_catalog";
    let ng = "denied:no_grant";
    let h_ns = "hidden:not_shared";
    let role = "denied:wrong_role";
    let other = "denied:other_department";
    let method = "denied:method_not_offered";
    #[rustfmt::skip]
    let table: &[(&str, &str, [&str; 7])] = &[
        // state       kind         zj-op      zj-node    gd-op      gd-node    mot-hub    mot-op     ctl
        ("absent",    "list",      ["no", "no", "no", "no", "no", "no", "no"]),
        ("absent",    "read",      [h_absent, h_absent, h_absent, h_absent, h_absent, h_absent, role]),
        ("absent",    "publish",   ["denied:not_in_catalog", role, other, role, role, other, role]),
        ("absent",    "replicate", [h_absent, role, other, role, role, other, role]),
        ("uncond",    "list",      ["yes", "yes", "no", "no", "yes", "no", "no"]),
        ("uncond",    "read",      ["ok", "ok", ng, ng, "ok", ng, role]),
        ("uncond",    "query",     ["ok", "ok", ng, ng, "ok", ng, role]),
        ("uncond",    "publish",   ["ok", role, other, role, role, other, role]),
        ("uncond",    "replicate", ["ok", role, other, role, role, other, role]),
        ("cond",      "list",      ["yes", "yes", "no", "no", "yes", "no", "no"]),
        ("cond",      "read",      ["ok", "ok", ng, ng, "ok", ng, role]),
        ("cond",      "publish",   ["ok", role, other, role, role, other, role]),
        ("cond",      "replicate", ["ok", role, other, role, role, other, role]),
        ("notshared", "list",      ["yes", "yes", "no", "no", "no", "no", "no"]),
        ("notshared", "read",      ["ok", "ok", h_ns, h_ns, h_ns, h_ns, role]),
        ("notshared", "publish",   ["ok", role, other, role, role, other, role]),
        ("precat",    "list",      ["yes", "yes", "no", "no", "yes", "no", "no"]),
        ("precat",    "read",      ["ok", "ok", ng, ng, "ok", ng, role]),
        ("precat",    "publish",   ["denied:pre_catalog", role, other, role, role, other, role]),
        ("queryonly", "read",      ["ok", "ok", method, method, method, method, role]),
        ("queryonly", "query",     ["ok", "ok", ng, ng, "ok", ng, role]),
        ("foreign",   "list",      ["no", "no", "yes", "yes", "yes", "no", "no"]),
        ("foreign",   "read",      [ng, ng, "ok", "ok", "ok", ng, role]),
        ("foreign",   "publish",   ["denied:not_provider", role, other, role, role, other, role]),
        ("foreign",   "replicate", [ng, role, other, role, role, other, role]),
        ("future",    "list",      ["no", "no", "no", "no", "no", "no", "no"]),
        ("future",    "read",      [h_absent, h_absent, h_absent, h_absent, h_absent, h_absent, role]),
        ("future",    "publish",   ["denied:not_in_catalog", role, other, role, role, other, role]),
    ];
    let policy = snapshot();
    let node = dept("zj");
    let mut wrong = Vec::new();
    for (state, kind, expected) in table {
        for (requester, want) in REQUESTERS.iter().zip(expected) {
            let who = peer(requester);
            let dataset = ds(state);
            let read = |method| Request::Read {
                dataset: dataset.clone(),
                version: None,
                method,
                part: ReadPart::Chunks,
            };
            let got = match *kind {
                "list" => {
                    if policy.visible(&who, &dataset, NOW) {
                        "yes".into()
                    } else {
                        "no".into()
                    }
                }
                "read" => outcome(policy.decide(&node, &who, &read(ServiceMethod::Download), NOW)),
                "query" => outcome(policy.decide(&node, &who, &read(ServiceMethod::OnlineQuery), NOW)),
                "publish" => outcome(policy.decide(
                    &node,
                    &who,
                    &Request::Publish {
                        dataset: dataset.clone(),
                        provider: node.clone(),
                        share_type: ShareType::Unconditional,
                    },
                    NOW,
                )),
                "replicate" => outcome(policy.decide(
                    &node,
                    &who,
                    &Request::Replicate {
                        source: "ministry".into(),
                        dataset: dataset.clone(),
                        version: None,
                    },
                    NOW,
                )),
                other => panic!("no kind {other}"),
            };
            if got != *want {
                wrong.push(format!("{state} × {requester} × {kind}: expected {want}, got {got}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} cells differ:\n{}", wrong.len(), wrong.join("\n"));
    // A listing request itself is always allowed (its contents are filtered), except for the
    // control key.
    assert_eq!(outcome(policy.decide(&node, &peer("gd-node"), &Request::List, NOW)), "ok");
    assert_eq!(outcome(policy.decide(&node, &peer("ctl"), &Request::List, NOW)), role);
}

#[test]
fn hidden_and_absent_datasets_get_the_same_answer() {
    let policy = snapshot();
    let node = dept("zj");
    let read = |d: &str| Request::Read {
        dataset: ds(d),
        version: None,
        method: ServiceMethod::Download,
        part: ReadPart::Manifest,
    };
    let absent = policy.decide(&node, &peer("gd-op"), &read("absent"), NOW).unwrap_err();
    let hidden = policy.decide(&node, &peer("gd-op"), &read("notshared"), NOW).unwrap_err();
    assert_eq!(absent.code, hidden.code);
    assert_eq!(hidden.message, crate::authz::absent_message(&ds("notshared")));
    assert_eq!(absent.message, crate::authz::absent_message(&ds("absent")));
}

#[test]
fn an_upcoming_version_takes_effect_on_its_date() {
    let mut policy = snapshot();
    let record = policy.datasets.iter_mut().find(|d| d.id == ds("uncond")).unwrap();
    record.versions.push(entry(2, NOW + 90 * DAY, PolicyStage::Formal, ShareType::Unconditional, ALL));
    let id = ds("uncond");
    assert_eq!(policy.in_effect(&id, NOW).unwrap().1.catalog_version, 1);
    assert_eq!(policy.in_effect(&id, NOW + 90 * DAY - 1).unwrap().1.catalog_version, 1);
    assert_eq!(policy.in_effect(&id, NOW + 90 * DAY).unwrap().1.catalog_version, 2);
    policy.validate().unwrap();
}

#[test]
fn acceptance_refuses_rollback_stale_refresh_and_conflicts() {
    let held = snapshot();
    let mut newer = held.clone();
    newer.serial += 1;
    assert_eq!(newer.accept(Some(&held)), Ok(Acceptance::Newer));
    assert_eq!(held.accept(None), Ok(Acceptance::Newer));
    assert_eq!(held.accept(Some(&newer)), Err(PolicyError::Rollback { held: 6, offered: 5 }));
    let mut refresh = held.clone();
    refresh.issued_at_ms += 1000;
    assert_eq!(refresh.accept(Some(&held)), Ok(Acceptance::Refresh));
    assert!(matches!(held.accept(Some(&refresh)), Err(PolicyError::StaleRefresh { .. })));
    let mut conflict = refresh.clone();
    conflict.datasets.pop();
    assert_eq!(conflict.accept(Some(&held)), Err(PolicyError::Conflict { serial: 5 }));
}

#[test]
fn parse_checks_structure_and_bounds() {
    let policy = snapshot();
    assert_eq!(PolicySnapshot::parse(&policy.to_json()).unwrap(), policy);
    let mut unordered = policy.clone();
    unordered.datasets.swap(0, 1);
    assert!(matches!(PolicySnapshot::parse(&unordered.to_json()), Err(PolicyError::Unordered(_))));
    let mut format = policy.clone();
    format.format = "ferry-policy/9".into();
    assert!(matches!(PolicySnapshot::parse(&format.to_json()), Err(PolicyError::UnsupportedFormat(_))));
    let mut json: serde_json::Value = serde_json::from_slice(&policy.to_json()).unwrap();
    json["extra"] = serde_json::Value::Bool(true);
    assert!(matches!(PolicySnapshot::parse(json.to_string().as_bytes()), Err(PolicyError::Syntax(_))));
    assert!(matches!(
        PolicySnapshot::parse(&vec![b' '; MAX_POLICY_BYTES + 1]),
        Err(PolicyError::TooLarge { .. })
    ));
    assert!(matches!(PolicySnapshot::parse(b"{\"format\":"), Err(PolicyError::Syntax(_))));
}

#[test]
fn a_version_signed_by_another_department_is_not_the_providers() {
    let policy = snapshot();
    assert_eq!(policy.check_publisher(&ds("uncond"), &dept("zj"), Some(1)), Ok(()));
    assert!(matches!(
        policy.check_publisher(&ds("uncond"), &dept("gd"), Some(1)),
        Err(PublisherMismatch::NotProvider { .. })
    ));
    assert!(matches!(
        policy.check_publisher(&ds("absent"), &dept("zj"), None),
        Err(PublisherMismatch::NotInCatalog { .. })
    ));
    assert!(matches!(
        policy.check_publisher(&ds("uncond"), &dept("zj"), Some(7)),
        Err(PublisherMismatch::UnknownCatalogVersion { .. })
    ));
}
