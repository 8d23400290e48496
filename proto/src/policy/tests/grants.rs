//! The decision table with grants: share type × requester × grant state × service method, every
//! cell asserted, on the node of the provider `zj`. The grant states are what the control plane
//! leaves in the snapshot for the consumer `gd`: nothing for none, pending, revoked and revoked
//! for disuse; a grant in force (approved; restricted to part of a conditional dataset or not);
//! one that has lapsed; one whose catalog range ends before the version in effect.

use super::*;

/// The requesters, by name: the provider's operator and node, the consumer's operator and node
/// (the department `gd` that applies), another department (`hb`), technical support's operator
/// (the ministry's department `mot`), the ministry's hub node, an operator of the S&T authority
/// (`mot-st`), and the control-plane key.
const REQUESTERS: [&str; 9] =
    ["zj-op", "zj-node", "gd-op", "gd-node", "hb-op", "mot-op", "mot-hub", "st-op", "ctl"];

/// The grant states of the consumer `gd`.
const STATES: [&str; 9] = [
    "none",
    "pending",
    "revoked",
    "disuse",
    "approved",
    "approved-whole",
    "expired",
    "old-version",
    "query-only",
];

/// The request kinds: whether the dataset shows in a listing, and a read by each method.
const KINDS: [&str; 4] = ["list", "download", "online-query", "subscription"];

fn who(name: &str) -> Principal {
    let (d, role) = match name {
        "zj-op" => ("zj", Role::Operator),
        "zj-node" => ("zj", Role::Province),
        "gd-op" => ("gd", Role::Operator),
        "gd-node" => ("gd", Role::Province),
        "hb-op" => ("hb", Role::Operator),
        "mot-op" => ("mot", Role::Operator),
        "mot-hub" => ("mot", Role::Ministry),
        "st-op" => ("mot-st", Role::Operator),
        "ctl" => ("mot", Role::Control),
        other => panic!("no requester {other}"),
    };
    Principal { dept: dept(d), role, name: name.into(), serial: "01".into(), fingerprint: "00".into() }
}

fn restriction() -> Restriction {
    Restriction { columns: Some(vec!["plate".into(), "city".into()]), rows: Some("city = 'gz'".into()) }
}

/// The grant `gd` holds for `dataset` in `state`, if the snapshot carries one.
fn grant_in(state: &str, dataset: &str, share: ShareType) -> Option<PolicyGrant> {
    let conditional = share == ShareType::Conditional;
    let mut grant = PolicyGrant {
        id: 7,
        application: 3,
        dept: dept("gd"),
        dataset: ds(dataset),
        purpose: "road safety statistics".into(),
        methods: vec![ServiceMethod::OnlineQuery, ServiceMethod::Download],
        restriction: conditional.then(restriction),
        catalog_versions: CatalogRange { from: 1, to: None },
        granted_at_ms: NOW - DAY,
        expires_at_ms: None,
    };
    match state {
        "none" | "pending" | "revoked" | "disuse" => return None,
        "approved" => {}
        "approved-whole" => grant.restriction = None,
        "expired" => grant.expires_at_ms = Some(NOW - 1),
        "old-version" => grant.catalog_versions = CatalogRange { from: 1, to: Some(1) },
        "query-only" => grant.methods = vec![ServiceMethod::OnlineQuery],
        other => panic!("no state {other}"),
    }
    Some(grant)
}

/// One dataset of `share` type (catalog version 2 in effect, every method offered), provided by
/// `zj`, with `gd`'s grant in `state`.
fn snapshot_with(share: ShareType, state: &str) -> PolicySnapshot {
    let methods: &[ServiceMethod] = if share == ShareType::NotShared { &[] } else { ALL };
    let versions = vec![entry(2, 0, PolicyStage::Formal, share, methods)];
    PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial: 9,
        issued_at_ms: NOW,
        ministry: dept("mot"),
        datasets: vec![PolicyDataset { id: ds("data"), provider: dept("zj"), versions }],
        grants: grant_in(state, "data", share).into_iter().collect(),
    }
}

fn method_of(kind: &str) -> ServiceMethod {
    match kind {
        "download" => ServiceMethod::Download,
        "online-query" => ServiceMethod::OnlineQuery,
        "subscription" => ServiceMethod::Subscription,
        other => panic!("no method {other}"),
    }
}

/// The expected answer of one cell.
fn expected(share: ShareType, requester: &str, state: &str, kind: &str) -> String {
    let holder = matches!(requester, "gd-op" | "gd-node");
    let read = match requester {
        "ctl" => "denied:wrong_role".to_owned(),
        "zj-op" | "zj-node" => "ok".into(),
        _ if share == ShareType::NotShared => "hidden:not_shared".into(),
        "mot-hub" => "ok".into(),
        _ if !holder => "denied:no_grant".into(),
        _ => holder_answer(share, state, kind),
    };
    if kind != "list" {
        return read;
    }
    // Listed when some method reads it (or to its provider); never to the control key.
    let lists = match requester {
        "ctl" => false,
        "zj-op" | "zj-node" => true,
        _ => KINDS[1..].iter().any(|k| {
            expected(share, requester, state, k).starts_with("ok")
                || expected(share, requester, state, k).starts_with("restricted")
        }),
    };
    if lists { "yes".into() } else { "no".into() }
}

/// What the consumer `gd`, holding the grant of `state`, is answered for a read by `kind`.
fn holder_answer(share: ShareType, state: &str, kind: &str) -> String {
    let granted = kind != "subscription";
    match state {
        "none" | "pending" | "revoked" | "disuse" => "denied:no_grant".into(),
        "expired" => "denied:grant_expired".into(),
        "old-version" if granted => "denied:catalog_version_not_granted".into(),
        "query-only" if kind != "online-query" => "denied:method_not_granted".into(),
        "approved" | "old-version" if !granted => "denied:method_not_granted".into(),
        "approved-whole" if !granted => "denied:method_not_granted".into(),
        "approved" | "query-only" if share == ShareType::Conditional => "restricted:7".into(),
        "approved" | "approved-whole" | "query-only" => "ok".into(),
        other => panic!("no state {other}"),
    }
}

#[test]
fn decision_table_with_grants() {
    let shares = [ShareType::Unconditional, ShareType::Conditional, ShareType::NotShared];
    let node = dept("zj");
    let mut wrong = Vec::new();
    let mut cells = 0;
    for share in shares {
        for state in STATES {
            let policy = snapshot_with(share, state);
            policy.validate().expect("the table's snapshot is well formed");
            for requester in REQUESTERS {
                let peer = who(requester);
                for kind in KINDS {
                    let got = if kind == "list" {
                        if policy.visible(&peer, &ds("data"), NOW) { "yes".into() } else { "no".into() }
                    } else {
                        let request = Request::Read {
                            dataset: ds("data"),
                            version: None,
                            method: method_of(kind),
                            part: ReadPart::Chunks,
                        };
                        outcome(policy.decide(&node, &peer, &request, NOW))
                    };
                    let want = expected(share, requester, state, kind);
                    cells += 1;
                    if got != want {
                        wrong.push(format!(
                            "{share:?} × {requester} × {state} × {kind}: expected {want}, got {got}"
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(cells, 3 * STATES.len() * REQUESTERS.len() * KINDS.len());
    assert!(wrong.is_empty(), "{} of {cells} cells differ:\n{}", wrong.len(), wrong.join("\n"));
}

/// The hand-written cells the computed table must agree with, for the consumer on conditional
/// data: a reviewer reads these without following `expected`.
#[test]
fn the_consumer_of_conditional_data_is_answered_by_its_grant() {
    let node = dept("zj");
    let read = |method| Request::Read { dataset: ds("data"), version: None, method, part: ReadPart::Chunks };
    let cases: &[(&str, ServiceMethod, &str)] = &[
        ("none", ServiceMethod::Download, "denied:no_grant"),
        ("revoked", ServiceMethod::OnlineQuery, "denied:no_grant"),
        ("approved", ServiceMethod::Download, "restricted:7"),
        ("approved", ServiceMethod::Subscription, "denied:method_not_granted"),
        ("approved-whole", ServiceMethod::Download, "ok"),
        ("expired", ServiceMethod::Download, "denied:grant_expired"),
        ("old-version", ServiceMethod::Download, "denied:catalog_version_not_granted"),
        ("query-only", ServiceMethod::Download, "denied:method_not_granted"),
        ("query-only", ServiceMethod::OnlineQuery, "restricted:7"),
    ];
    for (state, method, want) in cases {
        let policy = snapshot_with(ShareType::Conditional, state);
        let got = outcome(policy.decide(&node, &who("gd-op"), &read(*method), NOW));
        assert_eq!(got, *want, "{state} × {method}");
    }
    let restricted = snapshot_with(ShareType::Conditional, "approved")
        .decide(&node, &who("gd-node"), &read(ServiceMethod::Download), NOW)
        .unwrap();
    assert_eq!(restricted, Access::Restricted { grant: 7, restriction: restriction() });
}

#[test]
fn each_refusal_says_what_to_do() {
    let node = dept("zj");
    let read = |method| Request::Read { dataset: ds("data"), version: None, method, part: ReadPart::Chunks };
    let denial = |state, method| {
        snapshot_with(ShareType::Conditional, state)
            .decide(&node, &who("gd-op"), &read(method), NOW)
            .unwrap_err()
    };
    let none = denial("none", ServiceMethod::Download);
    assert!(none.message.contains("holds no grant for dataset data"), "{}", none.message);
    assert!(
        none.message.contains("ferry apply data --purpose <purpose> --method download"),
        "{}",
        none.message
    );
    assert!(none.message.contains("ferry explain gd data --method download"), "{}", none.message);
    let expired = denial("expired", ServiceMethod::Download);
    assert!(expired.message.contains("has expired (grant 7)"), "{}", expired.message);
    let method = denial("query-only", ServiceMethod::Download);
    assert!(method.message.contains("covers online-query only, not download"), "{}", method.message);
    let version = denial("old-version", ServiceMethod::Download);
    assert!(
        version.message.contains("covers catalog versions 1, not version 2 now in effect"),
        "{}",
        version.message
    );
    for d in [none, expired, method, version] {
        assert_eq!(d.code, crate::ErrorCode::PermissionDenied);
    }
}

/// A node replicating a dataset needs what its department would need to read it: the grant.
#[test]
fn a_province_replicates_conditional_data_under_its_grant_only() {
    let replicate = Request::Replicate { source: "ministry".into(), dataset: ds("data"), version: None };
    let gd = dept("gd");
    for (state, want) in
        [("none", "denied:no_grant"), ("approved", "ok"), ("expired", "denied:grant_expired")]
    {
        let policy = snapshot_with(ShareType::Conditional, state);
        assert_eq!(outcome(policy.decide(&gd, &who("gd-op"), &replicate, NOW)), want, "{state}");
    }
}
