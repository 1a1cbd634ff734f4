//! `host logs --follow`: an object's log as the station streams it (`?follow=true`, Server-Sent
//! Events), printed line by line. When the stream breaks — the station restarts, the network
//! drops, a proxying station loses the home — the CLI reconnects from a little before the newest
//! line it printed and skips what it printed already ([`Delivered`]), so no line is dropped or
//! printed twice; identical lines are counted, so two equal lines print twice.

use std::time::Duration;

use anyhow::bail;
use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::{Client, describe_error, print_log_line};
use crate::store::{Delivered, LogRecord};

/// The longest wait between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// The first wait before a reconnection.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Most lines asked for when catching up after a reconnection (the station's own bound).
const CATCH_UP_LIMIT: usize = 100_000;
/// A stream silent this long is taken as lost (the station sends a keep-alive every 15 s).
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// What the log is filtered by, and how many earlier lines to print first.
pub(in crate::cli) struct FollowQuery<'a> {
    /// Object id.
    pub id: &'a str,
    /// Minimum level, as given on the command line.
    pub level: Option<&'a str>,
    /// Lines from before the stream began.
    pub limit: usize,
}

/// Why one stream ended.
enum Ended {
    /// The station refused the request for good (unknown object, bad token, bad level).
    Refused(String),
    /// The stream or the connection broke: reconnect.
    Lost(String),
}

/// Follows the log until the station refuses it (the object was undeployed, say) or the user
/// stops the CLI.
pub(in crate::cli) async fn follow(client: &Client, query: FollowQuery<'_>) -> anyhow::Result<()> {
    let streaming = client.streaming()?;
    let mut position = Position::default();
    let mut wait = RECONNECT_MIN;
    loop {
        match follow_once(client, &streaming, &query, &mut position).await {
            Ended::Refused(why) => bail!("{why}"),
            Ended::Lost(why) => {
                if position.streamed {
                    wait = RECONNECT_MIN;
                }
                eprintln!("host: the log stream was lost ({why}); reconnecting");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// Where the follower is: what it printed and when it first connected.
#[derive(Default)]
struct Position {
    delivered: Delivered,
    /// The station's clock (its `Date` header, ms) when the first stream opened.
    connected_at_ms: Option<u64>,
    /// Whether any stream opened yet.
    connected: bool,
    /// Whether the last attempt got a stream (resets the back-off).
    streamed: bool,
}

impl Position {
    /// The query parameters of the next stream: the first prints the newest `limit` lines; a
    /// reconnection asks for everything since a little before the newest line printed.
    fn params(&mut self, query: &FollowQuery<'_>) -> Vec<(&'static str, String)> {
        let mut params = vec![("follow", "true".to_string())];
        if let Some(level) = query.level {
            params.push(("level", level.to_string()));
        }
        if !self.connected {
            params.push(("limit", query.limit.to_string()));
            return params;
        }
        params.push(("limit", CATCH_UP_LIMIT.to_string()));
        let since = self.delivered.catch_up_since().or(self.connected_at_ms);
        if let Some(since) = since {
            params.push(("since", since.to_string()));
        }
        self.delivered.rejoin();
        params
    }
}

/// Opens one stream and prints its new lines until it ends.
async fn follow_once(
    client: &Client,
    streaming: &reqwest::Client,
    query: &FollowQuery<'_>,
    position: &mut Position,
) -> Ended {
    position.streamed = false;
    let path = format!("/admin/objects/{}/logs", query.id);
    let mut request = streaming
        .get(format!("{}{path}", client.base))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .query(&position.params(query));
    if let Some(token) = &client.token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Ended::Lost(client.describe_send_error(e).to_string()),
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        let why = describe_error(status, &body);
        return if status.is_server_error() {
            Ended::Lost(why)
        } else {
            Ended::Refused(why)
        };
    }
    if !position.connected {
        position.connected = true;
        position.connected_at_ms = date_ms(response.headers());
    }
    position.streamed = true;
    let mut events = response.bytes_stream().eventsource();
    loop {
        let event = match tokio::time::timeout(SILENCE_LIMIT, events.next()).await {
            Err(_) => return Ended::Lost(format!("silent for {}s", SILENCE_LIMIT.as_secs())),
            Ok(None) => return Ended::Lost("the station ended the stream".into()),
            Ok(Some(Err(e))) => return Ended::Lost(e.to_string()),
            Ok(Some(Ok(event))) => event,
        };
        if event.event != "log" {
            continue;
        }
        match serde_json::from_str::<LogRecord>(&event.data) {
            Ok(record) if position.delivered.fresh_line(&record) => print_log_line(&record),
            Ok(_) => {}
            Err(e) => eprintln!("host: skipped a log event that is not a log line: {e}"),
        }
    }
}

/// The `Date` header as Unix ms (whole seconds), if the station sent one.
fn date_ms(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let date = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let at = httpdate::parse_http_date(date).ok()?;
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnection_asks_from_the_margin_before_the_newest_line_printed() {
        let query = FollowQuery {
            id: "o",
            level: Some("warn"),
            limit: 20,
        };
        let mut position = Position::default();
        let first = position.params(&query);
        assert!(first.contains(&("limit", "20".into())));
        assert!(!first.iter().any(|(k, _)| *k == "since"));
        position.connected = true;
        position.connected_at_ms = Some(1_000);
        // Nothing printed yet: everything since the first stream opened.
        let again = position.params(&query);
        assert!(again.contains(&("since", "1000".into())));
        assert!(again.contains(&("level", "warn".into())));
        assert!(again.contains(&("limit", CATCH_UP_LIMIT.to_string())));
        let line = LogRecord {
            ts_ms: 10_000,
            level: crate::store::Level::Warn,
            request_id: String::new(),
            event: "object".into(),
            message: "m".into(),
            trace_id: String::new(),
        };
        assert!(position.delivered.fresh_line(&line));
        let after = position.params(&query);
        assert!(after.contains(&("since", "8000".into())));
        // The resent line is skipped once; a new equal line prints.
        assert!(!position.delivered.fresh_line(&line));
        assert!(position.delivered.fresh_line(&line));
    }
}
