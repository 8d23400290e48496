use super::*;
use ferry_proto::policy::{CatalogRange, POLICY_FORMAT, PolicyDataset, PolicyEntry, Restriction};

const NOW: i64 = 1_800_000_000_000;

fn dept(s: &str) -> DeptId {
    DeptId::new(s).unwrap()
}

fn principal(d: &str) -> Principal {
    Principal {
        dept: dept(d),
        role: Role::Operator,
        name: format!("{d}-op"),
        serial: "01".into(),
        fingerprint: "00".into(),
    }
}

fn snapshot(share_type: ShareType, grant: bool) -> PolicySnapshot {
    let entry = PolicyEntry {
        catalog_version: 2,
        effective_from_ms: 0,
        stage: PolicyStage::Formal,
        share_type,
        methods: vec![ServiceMethod::OnlineQuery, ServiceMethod::Download],
        schema_fingerprint: "fp".into(),
        definition: String::new(),
    };
    let grants = grant
        .then(|| PolicyGrant {
            id: 4,
            application: 9,
            dept: dept("gd"),
            dataset: DatasetId::new("vehicles").unwrap(),
            purpose: "road safety".into(),
            methods: vec![ServiceMethod::Download],
            restriction: Some(Restriction { columns: Some(vec!["plate".into()]), rows: None }),
            catalog_versions: CatalogRange { from: 1, to: None },
            granted_at_ms: 0,
            expires_at_ms: None,
        })
        .into_iter()
        .collect();
    PolicySnapshot {
        format: POLICY_FORMAT.into(),
        serial: 3,
        issued_at_ms: NOW,
        ministry: dept("mot"),
        datasets: vec![PolicyDataset {
            id: DatasetId::new("vehicles").unwrap(),
            provider: dept("zj"),
            versions: vec![entry],
        }],
        grants,
    }
}

fn query(method: Option<ServiceMethod>) -> ExplainRequest {
    ExplainRequest::Explain { dept: dept("gd"), dataset: DatasetId::new("vehicles").unwrap(), method }
}

#[test]
fn the_explanation_is_the_decision_the_node_makes() {
    let policy = snapshot(ShareType::Conditional, true);
    let e = explain(Some(&policy), None, &principal("gd"), false, &query(None), NOW).unwrap();
    assert_eq!(e.catalog.as_ref().unwrap().catalog_version, 2);
    assert_eq!(e.grants.len(), 1);
    // Every offered method, each as decide() answers it.
    for d in &e.decisions {
        let request = Request::Read {
            dataset: e.dataset.clone(),
            version: None,
            method: d.method,
            part: ReadPart::Manifest,
        };
        let enforced = policy.decide(&dept("gd"), &principal("gd"), &request, NOW);
        match enforced {
            Ok(Access::Full) => assert_eq!(d.outcome, "full"),
            Ok(Access::Restricted { grant, .. }) => {
                assert_eq!((d.outcome.as_str(), d.grant), ("restricted", Some(grant)))
            }
            Err(denial) => assert_eq!(d.reason.as_deref(), Some(denial.reason)),
        }
    }
    let by_method: Vec<(&str, &str)> =
        e.decisions.iter().map(|d| (d.method.as_str(), d.outcome.as_str())).collect();
    assert_eq!(by_method, [("online-query", "refused"), ("download", "restricted")]);
    let text = render(&e);
    assert!(text.contains("online-query: refused (method_not_granted)"), "{text}");
    assert!(text.contains("grant 4 of gd: download"), "{text}");
}

#[test]
fn a_stale_policy_refuses_everything_and_says_so() {
    let policy = snapshot(ShareType::Conditional, true);
    let stale = Denial::unavailable("policy_stale", "too old");
    let e = explain(
        Some(&policy),
        Some(&stale),
        &principal("gd"),
        false,
        &query(Some(ServiceMethod::Download)),
        NOW,
    )
    .unwrap();
    assert_eq!(e.decisions.len(), 1);
    assert_eq!(e.decisions[0].reason.as_deref(), Some("policy_stale"));
}

#[test]
fn only_the_department_its_provider_and_supervisors_may_ask() {
    let policy = snapshot(ShareType::Conditional, false);
    assert!(explain(Some(&policy), None, &principal("hb"), false, &query(None), NOW).is_err());
    assert!(explain(Some(&policy), None, &principal("zj"), false, &query(None), NOW).is_ok());
    assert!(explain(Some(&policy), None, &principal("mot"), true, &query(None), NOW).is_ok());
    let e = explain(Some(&policy), None, &principal("gd"), false, &query(Some(ServiceMethod::Download)), NOW)
        .unwrap();
    assert_eq!(e.decisions[0].reason.as_deref(), Some("no_grant"));
}

#[test]
fn a_not_shared_entry_reads_as_absent_to_a_consumer() {
    let policy = snapshot(ShareType::NotShared, false);
    let e = explain(Some(&policy), None, &principal("gd"), false, &query(None), NOW).unwrap();
    assert!(e.catalog.is_none());
    assert!(e.decisions.iter().all(|d| d.reason.as_deref() == Some("not_in_catalog")));
    let provider = explain(Some(&policy), None, &principal("zj"), false, &query(None), NOW).unwrap();
    assert_eq!(provider.catalog.unwrap().share_type, ShareType::NotShared);
}

#[test]
fn the_call_round_trips_and_other_calls_are_not_it() {
    let q = query(Some(ServiceMethod::Download));
    assert_eq!(q.to_json(), r#"{"op":"explain","dept":"gd","dataset":"vehicles","method":"download"}"#);
    assert_eq!(ExplainRequest::parse(&q.to_json()), Some(q));
    assert_eq!(ExplainRequest::parse(r#"{"op":"catalog-list"}"#), None);
}
