//! Feedback read back (issue 19 §4, Art. 17): `feedback-list` shows a grant holder's feedback
//! to the department that gave it, to the dataset's provider and to technical support and the
//! S&T authority, and to no one else; narrowed by dataset. On SQLite and PostgreSQL.

use ferry_control::api::ControlRequest;
use ferry_control::quality::{FeedbackFilter, NeedMet};
use ferry_proto::Role;

use crate::harness::*;
use crate::lifecycle::{audited, gps_id, insert_grant, with_gps};

scenarios!(
    "feedback scenarios on PostgreSQL";
    feedback_is_read_back_by_its_author_the_provider_and_supervision,
);

async fn feedback_is_read_back_by_its_author_the_provider_and_supervision(db: TestDb) {
    let (store, _log) = audited(&db);
    with_gps(&store, NOW).await;
    store.register(&operator("ministry"), vehicles(), None, NOW).await.expect("register vehicles");
    let vehicles_id = vehicles().definition.id;
    let on_gps = insert_grant(&store, 1, "guangdong", &gps_id(), None, NOW).await;
    let on_vehicles = insert_grant(&store, 2, "jiangsu", &vehicles_id, None, NOW).await;
    let gd = store
        .give_feedback(
            &operator("guangdong"),
            on_gps,
            NeedMet::Partly,
            4,
            "cut inspection time by a day",
            NOW,
        )
        .await
        .expect("feedback");
    store
        .give_feedback(&operator("jiangsu"), on_vehicles, NeedMet::Yes, 5, "fewer manual checks", NOW)
        .await
        .expect("feedback");

    let ids = |caller, dataset| {
        let store = store.clone();
        async move {
            let listed = store.feedback_list(&caller, &FeedbackFilter { dataset }).await.expect("list");
            listed.iter().map(|f| f.feedback.id).collect::<Vec<_>>()
        }
    };
    // Its author and the provider of gps see the gps feedback only; supervision sees both.
    assert_eq!(ids(operator("guangdong"), None).await, [gd.id]);
    assert_eq!(ids(operator("zhejiang"), None).await, [gd.id]);
    assert_eq!(ids(operator("jiangsu"), None).await, [gd.id + 1]);
    assert_eq!(ids(operator("ministry"), None).await, [gd.id, gd.id + 1]);
    assert_eq!(ids(operator("st-authority"), None).await, [gd.id, gd.id + 1]);
    assert_eq!(ids(principal("guangdong", Role::Province), None).await, [gd.id]);
    // Another department sees nothing; a dataset narrows.
    assert!(ids(operator("hainan"), None).await.is_empty());
    assert_eq!(ids(operator("ministry"), Some(vehicles_id.clone())).await, [gd.id + 1]);
    assert!(ids(operator("guangdong"), Some(vehicles_id)).await.is_empty());

    // As recorded, with the provider.
    let listed = store.feedback_list(&operator("zhejiang"), &FeedbackFilter::default()).await.expect("list");
    assert_eq!(listed[0].feedback, gd);
    assert_eq!(listed[0].provider, Some(dept("zhejiang")));
    let json = serde_json::to_value(&listed[0]).expect("json");
    assert_eq!((json["need-met"].as_str(), json["provider"].as_str()), (Some("partly"), Some("zhejiang")));

    // The control call names it `feedback-list`.
    let request = ControlRequest::parse(r#"{"op":"feedback-list","dataset":"vehicle-gps"}"#).expect("parses");
    assert_eq!(request, ControlRequest::FeedbackList { dataset: Some(gps_id()) });
    assert_eq!(request.op(), "feedback-list");
}
