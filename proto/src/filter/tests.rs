//! Unit tests of the row filter: canonical round trips, errors with positions, bounds, checks.

use super::*;

fn canon(text: &str) -> String {
    RowFilter::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).to_string()
}

#[test]
fn every_form_parses_and_prints_canonically() {
    assert_eq!(canon("seats >= 5"), "seats >= 5");
    assert_eq!(
        canon("province_code in ('440000','110000', '440000') and seats between 2 and 7"),
        "province_code IN ('110000', '440000') AND seats BETWEEN 2 AND 7"
    );
    assert_eq!(canon("a <> 1 AND b != 2"), "a != 1 AND b != 2");
    assert_eq!(canon("x is null and y IS not NULL"), "x IS NULL AND y IS NOT NULL");
    assert_eq!(canon("ok = true AND bad = FALSE"), "bad = FALSE AND ok = TRUE");
    assert_eq!(canon("d < date '2024-02-29'"), "d < DATE '2024-02-29'");
    assert_eq!(canon("name = 'it''s'"), "name = 'it''s'");
    assert_eq!(canon("m = 1.50 AND n = -2.00 AND o = 0.001"), "m = 1.5 AND n = -2.0 AND o = 0.001");
    assert_eq!(canon("v = -0.5"), "v = -0.5");
    assert_eq!(canon("\"date\" = 3 AND \"x\" = 1"), "\"date\" = 3 AND x = 1");
    assert_eq!(canon("((a = 1) AND (b = 2 AND c = 3))"), "a = 1 AND b = 2 AND c = 3");
    assert_eq!(canon("city = '广州'"), "city = '广州'");
}

#[test]
fn equal_filters_print_the_same_text_and_the_text_parses_back_to_the_same_filter() {
    let a = RowFilter::parse("b = 2 AND a IN (3, 1, 2) AND b = 2").unwrap();
    let b = RowFilter::parse("a in (1,2,3,3) and (b=2)").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), b.to_string());
    let again = RowFilter::parse(&a.to_string()).unwrap();
    assert_eq!(again, a);
    assert_eq!(a.columns(), vec!["a", "b"]);
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, "\"a IN (1, 2, 3) AND b = 2\"");
    assert_eq!(serde_json::from_str::<RowFilter>(&json).unwrap(), a);
}

#[test]
fn errors_name_the_token_and_its_position() {
    let err = |text: &str| RowFilter::parse(text).unwrap_err();
    assert_eq!(
        err("seats >= 5 AND"),
        FilterError::Unexpected { position: 15, found: "end of filter".into(), expected: "a column name" }
    );
    assert!(
        matches!(err("seats => 5"), FilterError::Unexpected { position: 8, ref found, .. } if found == ">")
    );
    assert!(
        matches!(err("a = 1 OR b = 2"), FilterError::Unsupported { position: 7, ref token, .. } if token == "OR")
    );
    assert!(matches!(err("NOT a = 1"), FilterError::Unsupported { position: 1, .. }));
    assert!(matches!(err("a NOT IN (1)"), FilterError::Unsupported { position: 3, .. }));
    assert!(matches!(err("a = NULL"), FilterError::Unsupported { position: 5, .. }));
    assert!(matches!(err("a = 'open"), FilterError::Unexpected { position: 5, .. }));
    assert!(
        matches!(err("a = 1.2.3"), FilterError::BadLiteral { position: 5, ref token, .. } if token == "1.2.3")
    );
    assert!(matches!(err("a = 12abc"), FilterError::BadLiteral { position: 5, .. }));
    assert!(matches!(err("d = DATE '2023-02-29'"), FilterError::BadLiteral { position: 10, .. }));
    assert!(matches!(err("d = DATE '2023-2-1'"), FilterError::BadLiteral { .. }));
    assert!(
        matches!(err("a = 1 b = 2"), FilterError::Unexpected { position: 7, ref found, .. } if found == "b")
    );
    assert!(matches!(err("a = 1 ; drop"), FilterError::Unexpected { position: 7, .. }));
    assert!(matches!(err("(a = 1"), FilterError::Unexpected { position: 7, .. }));
    assert!(matches!(err("and = 1"), FilterError::Unexpected { position: 1, .. }));
    assert!(matches!(err("广州 = 1"), FilterError::Unexpected { position: 1, .. }));
    assert!(matches!(err("a IN ()"), FilterError::Unexpected { position: 7, .. }));
    assert_eq!(err("   "), FilterError::Empty);
    let digits = "9".repeat(39);
    assert!(matches!(err(&format!("a = {digits}")), FilterError::BadLiteral { .. }));
    // Every error message names where.
    assert!(err("a = 1 b = 2").to_string().contains("position 7"));
}

#[test]
fn input_size_nesting_and_counts_are_bounded() {
    let long = format!("a = '{}'", "x".repeat(MAX_FILTER_LEN));
    assert!(matches!(RowFilter::parse(&long), Err(FilterError::TooLong { .. })));
    let deep = format!("{}a = 1{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
    assert!(matches!(RowFilter::parse(&deep), Err(FilterError::TooDeep { .. })));
    let ok = format!("{}a = 1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    assert!(RowFilter::parse(&ok).is_ok());
    let many: Vec<String> = (0..=MAX_CONDITIONS).map(|i| format!("c{i} = 1")).collect();
    assert!(matches!(RowFilter::parse(&many.join(" AND ")), Err(FilterError::TooManyConditions { .. })));
    let values: Vec<String> = (0..=MAX_IN_VALUES).map(|i| i.to_string()).collect();
    let text = format!("a IN ({})", values.join(","));
    assert!(matches!(RowFilter::parse(&text), Err(FilterError::TooManyValues { .. })));
    let long_name = "c".repeat(MAX_COLUMN_LEN + 1);
    assert!(RowFilter::parse(&format!("{long_name} = 1")).is_err());
}

#[test]
fn dates_count_days_from_the_epoch() {
    let day = |text: &str| match RowFilter::parse(&format!("d = DATE '{text}'")).unwrap().predicates()[0].test
    {
        Test::Compare { value: Literal::Date(d), .. } => d.days_since_epoch(),
        _ => unreachable!(),
    };
    assert_eq!(day("1970-01-01"), 0);
    assert_eq!(day("1969-12-31"), -1);
    assert_eq!(day("2000-03-01"), 11_017);
    assert_eq!(day("2024-02-29"), 19_782);
}

fn vehicles() -> Vec<(&'static str, ColumnKind)> {
    [
        ("plate", "utf8"),
        ("seats", "int16"),
        ("mass", "uint32"),
        ("price", "decimal(10,2)"),
        ("ratio", "float64"),
        ("electric", "bool"),
        ("registered_on", "date32"),
        ("updated_at", "timestamp(ms, +08:00)"),
    ]
    .into_iter()
    .map(|(name, ty)| (name, ColumnKind::from_type_name(ty).unwrap()))
    .collect()
}

#[test]
fn a_filter_is_checked_against_the_columns_and_their_types() {
    let check = |text: &str| RowFilter::parse(text).unwrap().check_against(vehicles());
    assert_eq!(
        check(
            "plate = 'x' AND seats BETWEEN 1 AND 9 AND mass < 4000000000 AND price >= 12.25 \
               AND price < 100 AND ratio > 0.5 AND electric = TRUE \
               AND registered_on >= DATE '2020-01-01' AND updated_at IS NOT NULL"
        ),
        Ok(())
    );
    assert_eq!(check("colour = 'red'"), Err(FilterCheckError::UnknownColumn { column: "colour".into() }));
    let wrong = |text: &str, column: &str, literal: &str| match check(text) {
        Err(FilterCheckError::WrongType { column: c, literal: l, .. }) => {
            assert_eq!((c.as_str(), l.as_str()), (column, literal), "{text}");
        }
        other => panic!("{text}: {other:?}"),
    };
    wrong("seats = '5'", "seats", "'5'");
    wrong("seats = 40000", "seats", "40000");
    wrong("mass = -1", "mass", "-1");
    wrong("price = 1.125", "price", "1.125");
    wrong("price = 123456789", "price", "123456789");
    wrong("plate IN ('a', 5)", "plate", "5");
    wrong("electric = 1", "electric", "1");
    wrong("registered_on > '2020-01-01'", "registered_on", "'2020-01-01'");
    wrong("updated_at > DATE '2020-01-01'", "updated_at", "DATE '2020-01-01'");
    assert!(check("colour = 'red'").unwrap_err().to_string().contains("colour"));
}

#[test]
fn catalog_type_names_map_to_kinds() {
    assert_eq!(ColumnKind::from_type_name("int8"), Some(ColumnKind::Integer { min: -128, max: 127 }));
    assert_eq!(
        ColumnKind::from_type_name("uint64"),
        Some(ColumnKind::Integer { min: 0, max: u64::MAX.into() })
    );
    assert_eq!(
        ColumnKind::from_type_name("decimal(12, 2)"),
        Some(ColumnKind::Decimal { precision: 12, scale: 2 })
    );
    assert_eq!(ColumnKind::from_type_name("timestamp(us)"), Some(ColumnKind::Other));
    assert_eq!(ColumnKind::from_type_name("varchar"), None);
    assert_eq!(ColumnKind::from_type_name("decimal(99,2)"), None);
}
