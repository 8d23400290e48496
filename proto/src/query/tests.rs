//! Unit tests of online queries: every operator, the canonical JSON, and errors with positions.

use super::*;
use crate::filter::ColumnKind;

fn vehicles() -> Vec<(&'static str, ColumnKind)> {
    vec![
        ("vin", ColumnKind::Text),
        ("plate", ColumnKind::Text),
        ("company", ColumnKind::Text),
        ("seats", ColumnKind::from_type_name("int16").unwrap()),
        ("gross_mass_kg", ColumnKind::from_type_name("int32").unwrap()),
        ("registered_on", ColumnKind::Date),
        ("updated_at", ColumnKind::Other),
    ]
}

fn spec(predicate: &str) -> QuerySpec {
    QuerySpec::new(Some(predicate), None, None, QueryFormat::Csv)
        .unwrap_or_else(|e| panic!("{predicate}: {e}"))
}

#[test]
fn every_operator_parses_checks_and_round_trips_as_json() {
    let cases = [
        ("plate = '京A12345'", "plate = '京A12345'"),
        ("seats < 5", "seats < 5"),
        ("seats > 5", "seats > 5"),
        ("seats <= 5", "seats <= 5"),
        ("seats >= 5", "seats >= 5"),
        ("seats != 5", "seats != 5"),
        ("gross_mass_kg between 1000 and 2000", "gross_mass_kg BETWEEN 1000 AND 2000"),
        ("plate in ('粤B2', '粤B1')", "plate IN ('粤B1', '粤B2')"),
        ("company is null", "company IS NULL"),
        ("company is not null", "company IS NOT NULL"),
        (
            "registered_on >= date '2020-01-01' and seats = 5",
            "registered_on >= DATE '2020-01-01' AND seats = 5",
        ),
    ];
    for (text, canonical) in cases {
        let query = spec(text);
        assert_eq!(query.predicate.as_ref().unwrap().to_string(), canonical);
        query.check_against(vehicles()).unwrap_or_else(|e| panic!("{text}: {e}"));
        let json = query.to_json();
        assert_eq!(QuerySpec::from_json(&json).unwrap(), query, "{json}");
    }
}

#[test]
fn the_json_is_canonical_and_strict() {
    let query = QuerySpec::new(
        Some("seats = 5 and plate = 'x'"),
        Some(vec!["vin".into(), "plate".into()]),
        Some(10),
        QueryFormat::ArrowIpc,
    )
    .unwrap();
    assert_eq!(
        query.to_json(),
        r#"{"where":"plate = 'x' AND seats = 5","columns":["vin","plate"],"limit":10,"format":"arrow-ipc"}"#
    );
    let all = QuerySpec::from_json("{}").unwrap();
    assert_eq!(all, QuerySpec { predicate: None, columns: None, limit: None, format: QueryFormat::ArrowIpc });
    assert!(matches!(QuerySpec::from_json(r#"{"order":"x"}"#), Err(QueryError::Malformed(_))));
    assert!(matches!(QuerySpec::from_json(r#"{"format":"xml"}"#), Err(QueryError::Malformed(_))));
    let bad = QuerySpec::from_json(r#"{"where":"seats = "}"#).unwrap_err();
    assert!(matches!(bad, QueryError::Malformed(ref m) if m.contains("position")), "{bad}");
}

#[test]
fn parse_errors_name_the_token_and_its_position() {
    let parse = |text| QuerySpec::new(Some(text), None, None, QueryFormat::Csv).unwrap_err();
    match parse("seats = 5 OR seats = 6") {
        QueryError::Predicate(FilterError::Unsupported { position: 11, token, .. }) => {
            assert_eq!(token, "OR")
        }
        other => panic!("{other:?}"),
    }
    match parse("seats = 1x") {
        QueryError::Predicate(FilterError::BadLiteral { position: 9, token, .. }) => assert_eq!(token, "1x"),
        other => panic!("{other:?}"),
    }
    match parse("registered_on = DATE '2023-02-30'") {
        QueryError::Predicate(FilterError::BadLiteral { position: 22, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(parse("seats >"), QueryError::Predicate(FilterError::Unexpected { position: 8, .. })));
}

#[test]
fn check_names_the_unknown_column_or_the_bad_literal_with_its_position() {
    // Canonical order: "plate = 'x' AND seats = 99999 AND wheels = 4".
    let query = spec("wheels = 4 and plate = 'x'");
    let err = query.check_against(vehicles()).unwrap_err();
    assert_eq!(
        err,
        QueryError::UnknownColumn {
            column: "wheels".into(),
            position: Some(17),
            predicate: "plate = 'x' AND wheels = 4".into()
        }
    );
    assert!(err.to_string().contains("unknown column \"wheels\" at position 17"), "{err}");
    let err = spec("plate = 'x' and seats = 99999").check_against(vehicles()).unwrap_err();
    match &err {
        QueryError::BadLiteral { column, literal, position, .. } => {
            assert_eq!((column.as_str(), literal.as_str(), *position), ("seats", "99999", 25));
        }
        other => panic!("{other:?}"),
    }
    let err = spec("seats IN (1, 2, 'three')").check_against(vehicles()).unwrap_err();
    assert!(matches!(err, QueryError::BadLiteral { position: 17, .. }), "{err:?}");
    let err = spec("updated_at > 5").check_against(vehicles()).unwrap_err();
    assert!(matches!(err, QueryError::BadLiteral { position: 14, .. }), "{err:?}");
    spec("updated_at IS NOT NULL").check_against(vehicles()).unwrap();
    let projection =
        QuerySpec::new(None, Some(vec!["vin".into(), "owner".into()]), None, QueryFormat::Json).unwrap();
    let err = projection.check_against(vehicles()).unwrap_err();
    assert!(matches!(err, QueryError::UnknownColumn { ref column, position: None, .. } if column == "owner"));
    assert!(err.to_string().contains("in the projection"), "{err}");
}

#[test]
fn projections_and_limits_are_bounded() {
    let q = |columns: Vec<&str>, limit| {
        QuerySpec::new(None, Some(columns.into_iter().map(String::from).collect()), limit, QueryFormat::Csv)
    };
    assert_eq!(q(vec![], None).unwrap_err(), QueryError::NoColumns);
    assert!(matches!(q(vec!["a", "a"], None), Err(QueryError::DuplicateColumn { .. })));
    assert!(matches!(q(vec!["a\n"], None), Err(QueryError::BadColumnName { .. })));
    assert_eq!(q(vec!["a"], Some(0)).unwrap_err(), QueryError::ZeroLimit);
    let visible = vec!["vin".to_owned(), "plate".to_owned()];
    assert_eq!(q(vec!["plate"], Some(1)).unwrap().projection(&visible), vec!["plate"]);
    assert_eq!(spec("seats = 1").projection(&visible), vec!["vin", "plate"]);
}

#[test]
fn a_grant_filter_and_a_query_predicate_and_together() {
    let grant = RowFilter::parse("province_code = '440000'").unwrap();
    let query = RowFilter::parse("seats > 4").unwrap();
    assert_eq!(query.and(&grant).to_string(), "province_code = '440000' AND seats > 4");
    assert_eq!(grant.and(&grant), grant);
}
