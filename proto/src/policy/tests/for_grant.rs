//! Reads for a grant: the ministry's hub fetches what a conditional grant allows of a province's
//! dataset from the provider's node, to serve the grant's holder. Only the hub node may, only
//! for a grant in force that allows the method, and it gets exactly the grant's content.

use super::*;

fn restriction() -> Restriction {
    Restriction { columns: Some(vec!["plate".into(), "city".into()]), rows: Some("city = 'gz'".into()) }
}

fn who(dept_id: &str, role: Role) -> Principal {
    Principal { dept: dept(dept_id), role, name: "n".into(), serial: "01".into(), fingerprint: "00".into() }
}

/// `data`, conditional, provided by `zj`, offering download and subscription; grant 7 of `gd`
/// restricted, for download; grant 8 of `hb` whole, for download.
fn snapshot() -> PolicySnapshot {
    let methods = [ServiceMethod::Subscription, ServiceMethod::Download];
    let versions = vec![entry(2, 0, PolicyStage::Formal, ShareType::Conditional, &methods)];
    let grant = |id, holder: &str, restriction| PolicyGrant {
        id,
        application: id,
        dept: dept(holder),
        dataset: ds("data"),
        purpose: "road safety statistics".into(),
        methods: vec![ServiceMethod::Download],
        restriction,
        catalog_versions: CatalogRange { from: 1, to: None },
        granted_at_ms: NOW - DAY,
        expires_at_ms: None,
    };
    PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial: 3,
        issued_at_ms: NOW,
        ministry: dept("mot"),
        datasets: vec![PolicyDataset { id: ds("data"), provider: dept("zj"), versions }],
        grants: vec![grant(7, "gd", Some(restriction())), grant(8, "hb", None)],
    }
}

fn for_grant(grant: u64, method: ServiceMethod) -> Request {
    Request::ReadForGrant { dataset: ds("data"), version: None, method, part: ReadPart::Manifest, grant }
}

#[test]
fn the_hub_reads_exactly_a_grants_content_for_its_holder() {
    let policy = snapshot();
    let hub = who("mot", Role::Ministry);
    let answer = policy.decide(&dept("zj"), &hub, &for_grant(7, ServiceMethod::Download), NOW);
    assert_eq!(answer, Ok(Access::Restricted { grant: 7, restriction: restriction() }));
    // A grant of the whole dataset: the hub relays its own full copy anyway.
    let whole = policy.decide(&dept("zj"), &hub, &for_grant(8, ServiceMethod::Download), NOW);
    assert_eq!(whole, Ok(Access::Full));
}

#[test]
fn anyone_but_the_hub_or_a_grant_not_in_force_or_not_covering_the_method_is_refused() {
    let policy = snapshot();
    let reason = |peer: &Principal, grant, method| {
        let answer = policy.decide(&dept("zj"), peer, &for_grant(grant, method), NOW);
        answer.map(|_| "ok").unwrap_or_else(|d| d.reason)
    };
    let download = ServiceMethod::Download;
    // The grant's own holder, a technical-support operator, the provider's node: not the hub.
    for peer in [who("gd", Role::Province), who("gd", Role::Operator), who("mot", Role::Operator)] {
        assert_eq!(reason(&peer, 7, download), "not_hub", "{peer:?}");
    }
    assert_eq!(reason(&who("zj", Role::Province), 7, download), "not_hub");
    let hub = who("mot", Role::Ministry);
    // Revoked (gone from the snapshot), or a grant of another dataset's number.
    assert_eq!(reason(&hub, 9, download), "no_grant");
    // The grant covers download only.
    assert_eq!(reason(&hub, 7, ServiceMethod::Subscription), "grant_not_usable");
    // A method the catalog does not offer: the hub may not read it by that method at all.
    assert_eq!(reason(&hub, 7, ServiceMethod::OnlineQuery), "method_not_offered");
    // A lapsed grant.
    let mut lapsed = snapshot();
    lapsed.grants[0].expires_at_ms = Some(NOW - 1);
    let answer = lapsed.decide(&dept("zj"), &hub, &for_grant(7, download), NOW);
    assert_eq!(answer.unwrap_err().reason, "grant_not_usable");
    // The control key never reads.
    assert_eq!(reason(&who("mot", Role::Control), 7, download), "wrong_role");
}
