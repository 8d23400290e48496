//! `POST /scrub` on the node's admin port: what `ferry verify` calls. It runs a scrub now (after
//! one in progress, if any) and answers with JSON lines as it goes: one `{"finding": …}` per
//! damaged file ([`super::Finding`]), then `{"summary": …}` ([`super::ScrubReport`]). The query
//! may narrow it: `dataset=ID`, `version=N`, `rate=100MiB/s`.
//!
//! The admin port has no authentication, like `/metrics`: bind it to loopback (as the deploy
//! configs do). A scrub only reads, sets damaged files aside and writes back verified bytes, and
//! runs one at a time at a bounded rate.

use super::{Finding, Scope, Scrubber};
use crate::config::parse_rate;
use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ferry_proto::{DatasetId, VersionNo};
use std::sync::Arc;

/// The admin routes of the scrub, merged into the admin server's.
pub fn routes(scrubber: Arc<Scrubber>) -> axum::Router {
    axum::Router::new().route(
        "/scrub",
        axum::routing::post(move |uri: Uri| {
            let scrubber = scrubber.clone();
            async move { answer(scrubber, &uri) }
        }),
    )
}

fn answer(scrubber: Arc<Scrubber>, uri: &Uri) -> Response {
    let scope = match parse_scope(uri.query().unwrap_or("")) {
        Ok(scope) => scope,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let found = |finding: &Finding| {
            let _ = lines.send(json_line("finding", finding));
        };
        let report = scrubber.run(&scope, &found).await;
        let _ = lines.send(json_line("summary", &report));
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(line), receiver))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

fn json_line(key: &str, value: &impl serde::Serialize) -> String {
    let mut line = serde_json::json!({ key: value }).to_string();
    line.push('\n');
    line
}

/// `dataset=…&version=…&rate=…`; every key optional, a version only with a dataset.
fn parse_scope(query: &str) -> Result<Scope, String> {
    let mut scope = Scope::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace("%2F", "/").replace("%2f", "/").replace('+', " ");
        match key {
            "dataset" => scope.dataset = Some(DatasetId::new(&value).map_err(|e| format!("dataset: {e}"))?),
            "version" => {
                let number =
                    value.parse::<u64>().map_err(|_| format!("version: {value:?} is not a number"))?;
                scope.version = Some(VersionNo::new(number).map_err(|e| format!("version: {e}"))?);
            }
            "rate" => scope.rate = Some(parse_rate(&value).map_err(|e| format!("rate: {e}"))?),
            other => return Err(format!("unknown parameter {other:?} (dataset, version, rate)")),
        }
    }
    if scope.version.is_some() && scope.dataset.is_none() {
        return Err("a version needs its dataset".into());
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_narrows_the_scope() {
        assert_eq!(parse_scope("").unwrap(), Scope::default());
        let scope = parse_scope("dataset=vehicle-registry&version=3&rate=10MiB%2Fs").unwrap();
        assert_eq!(scope.dataset.unwrap().as_str(), "vehicle-registry");
        assert_eq!(scope.version.unwrap().get(), 3);
        assert_eq!(scope.rate, Some(10 << 20));
    }

    #[test]
    fn a_bad_query_is_refused_with_its_reason() {
        for (query, words) in [
            ("version=2", "needs its dataset"),
            ("dataset=x&version=two", "not a number"),
            ("rate=fast", "rate"),
            ("speed=1", "unknown parameter"),
        ] {
            let err = parse_scope(query).unwrap_err();
            assert!(err.contains(words), "{query}: {err}");
        }
    }
}
