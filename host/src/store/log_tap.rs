//! Followers of object logs (`?logs=true&follow=true`): the lines appended to an object's log,
//! handed to each follower as they are queued, and what a follower needs to join them to the lines
//! it reads from the files without a gap or a repeat.
//!
//! A follower's queue is bounded ([`TAP_CAPACITY`] lines). One that falls that far behind is
//! cut off and marked lagged, never blocking [`super::LogStore::append`]; it then subscribes again
//! and reads what it missed from the files, skipping what it already delivered ([`Delivered`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::logs::LogRecord;

/// Lines a follower may have queued before it is cut off and catches up from the files.
pub const TAP_CAPACITY: usize = 4096;

/// How far back, in ms, a catch-up reads before the newest line delivered: lines are stamped
/// before they are queued, so one may be queued after a line stamped a little later.
pub const CATCH_UP_MARGIN_MS: u64 = 2_000;

/// The followers of every object's log.
#[derive(Default)]
pub(crate) struct Taps {
    /// Followers in all (`append` looks no further when there are none).
    count: AtomicUsize,
    /// Followers cut off for falling [`TAP_CAPACITY`] lines behind, since the store opened.
    cut_off: AtomicU64,
    by_object: Mutex<HashMap<String, Vec<TapSender>>>,
}

struct TapSender {
    tx: tokio::sync::mpsc::Sender<LogRecord>,
    lagged: Arc<AtomicBool>,
}

/// One follower's queue of the lines appended to an object's log since it subscribed.
pub struct LogTap {
    rx: tokio::sync::mpsc::Receiver<LogRecord>,
    lagged: Arc<AtomicBool>,
}

impl LogTap {
    /// The next line; `None` once the tap ended: the follower fell behind ([`LogTap::lagged`]),
    /// the object's logs were removed, or the store shut down.
    pub async fn next(&mut self) -> Option<LogRecord> {
        self.rx.recv().await
    }

    /// Whether the tap ended because the follower fell [`TAP_CAPACITY`] lines behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Taps {
    /// A new follower of `object_id`'s log.
    pub(crate) fn subscribe(&self, object_id: &str) -> LogTap {
        let (tx, rx) = tokio::sync::mpsc::channel(TAP_CAPACITY);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut by_object = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        by_object
            .entry(object_id.to_string())
            .or_default()
            .push(TapSender {
                tx,
                lagged: Arc::clone(&lagged),
            });
        self.count.fetch_add(1, Ordering::Release);
        LogTap { rx, lagged }
    }

    /// Hands `record` to `object_id`'s followers; drops those gone or full (marking the latter).
    pub(crate) fn offer(&self, object_id: &str, record: &LogRecord) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut by_object = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        let Some(senders) = by_object.get_mut(object_id) else {
            return;
        };
        let before = senders.len();
        senders.retain(|sender| match sender.tx.try_send(record.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                sender.lagged.store(true, Ordering::Release);
                self.cut_off.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        });
        let removed = before - senders.len();
        if senders.is_empty() {
            by_object.remove(object_id);
        }
        self.count.fetch_sub(removed, Ordering::Release);
    }

    /// Followers open now, and followers cut off (and sent to the files) since the store opened.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Acquire) as u64,
            self.cut_off.load(Ordering::Relaxed),
        )
    }

    /// Ends every follower of `object_id` (its logs are removed).
    pub(crate) fn end(&self, object_id: &str) {
        let mut by_object = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(senders) = by_object.remove(object_id) {
            self.count.fetch_sub(senders.len(), Ordering::Release);
        }
    }

    /// Ends every follower (the store shuts down).
    pub(crate) fn end_all(&self) {
        let mut by_object = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        by_object.clear();
        self.count.store(0, Ordering::Release);
    }
}

/// The lines a follower delivered within [`CATCH_UP_MARGIN_MS`] of its newest, and the lines
/// read from the files that its tap may hand it again: what joins file reads and taps without a
/// gap or a repeat. Identical lines are counted, so two equal lines are two lines.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Delivered lines, oldest first, trimmed to the margin below `newest_ms`.
    recent: VecDeque<LogRecord>,
    /// The newest `ts` delivered.
    newest_ms: Option<u64>,
    /// Lines read from the files after the tap was subscribed, which the tap may repeat.
    from_files: Vec<LogRecord>,
}

impl Delivered {
    /// Where a catch-up read starts (`since`), or `None` before anything was delivered.
    pub fn catch_up_since(&self) -> Option<u64> {
        self.newest_ms
            .map(|newest| newest.saturating_sub(CATCH_UP_MARGIN_MS))
    }

    /// Of `read` (lines from the files, oldest first), those not delivered yet; they count as
    /// delivered now, and as lines the tap subscribed before the read may hand over again.
    pub fn fresh_from_files(&mut self, read: Vec<LogRecord>) -> Vec<LogRecord> {
        let mut already: Vec<&LogRecord> = self.recent.iter().collect();
        let mut fresh = Vec::new();
        for record in read {
            if let Some(i) = already.iter().position(|r| **r == record) {
                already.swap_remove(i);
                continue;
            }
            fresh.push(record);
        }
        self.from_files = fresh.clone();
        for record in &fresh {
            self.remember(record);
        }
        fresh
    }

    /// A new stream of the same log will send the lines delivered within the margin once more
    /// (a client reconnecting with `since` = [`Delivered::catch_up_since`]): expect each of them
    /// once, so [`Delivered::fresh_line`] skips them.
    pub fn rejoin(&mut self) {
        self.from_files = self.recent.iter().cloned().collect();
    }

    /// Whether a line from the tap (or from a rejoined stream) is new — not one of the lines
    /// just read from the files or expected again; a new line counts as delivered.
    pub fn fresh_line(&mut self, record: &LogRecord) -> bool {
        if let Some(i) = self.from_files.iter().position(|r| r == record) {
            self.from_files.swap_remove(i);
            return false;
        }
        self.remember(record);
        true
    }

    fn remember(&mut self, record: &LogRecord) {
        let newest = self.newest_ms.unwrap_or(0).max(record.ts_ms);
        self.newest_ms = Some(newest);
        self.recent.push_back(record.clone());
        let floor = newest.saturating_sub(CATCH_UP_MARGIN_MS);
        while self.recent.front().is_some_and(|r| r.ts_ms < floor) {
            self.recent.pop_front();
        }
        // A line the files gave long before the newest can no longer come from the tap.
        self.from_files.retain(|r| r.ts_ms >= floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::logs::Level;

    fn line(ts_ms: u64, message: &str) -> LogRecord {
        LogRecord {
            ts_ms,
            level: Level::Info,
            request_id: String::new(),
            event: "object".into(),
            message: message.into(),
            trace_id: String::new(),
        }
    }

    #[test]
    fn lines_both_read_and_tapped_are_delivered_once_and_equal_lines_each_count() {
        let mut delivered = Delivered::default();
        let read = vec![line(1, "a"), line(2, "b"), line(2, "b")];
        assert_eq!(delivered.fresh_from_files(read.clone()), read);
        // The tap repeats one `b` it queued before the read, then hands a third, new, `b`.
        assert!(!delivered.fresh_line(&line(2, "b")));
        assert!(!delivered.fresh_line(&line(2, "b")));
        assert!(delivered.fresh_line(&line(2, "b")));
        assert!(delivered.fresh_line(&line(3, "c")));
        // A catch-up after a lag rereads from the margin and keeps only what is new.
        assert_eq!(delivered.catch_up_since(), Some(0));
        let reread = vec![
            line(1, "a"),
            line(2, "b"),
            line(2, "b"),
            line(2, "b"),
            line(3, "c"),
            line(3, "d"),
        ];
        assert_eq!(delivered.fresh_from_files(reread), vec![line(3, "d")]);
    }

    #[test]
    fn a_rejoined_stream_repeats_the_margin_once_and_new_equal_lines_still_count() {
        let mut delivered = Delivered::default();
        for record in [line(1, "a"), line(5_000, "b"), line(5_000, "b")] {
            assert!(delivered.fresh_line(&record));
        }
        // Reconnected with since = 3000: the station resends both `b`s, then new lines.
        assert_eq!(delivered.catch_up_since(), Some(3_000));
        delivered.rejoin();
        assert!(!delivered.fresh_line(&line(5_000, "b")));
        assert!(!delivered.fresh_line(&line(5_000, "b")));
        assert!(delivered.fresh_line(&line(5_000, "b")));
        assert!(delivered.fresh_line(&line(5_001, "c")));
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_cut_off_and_marked_never_blocking_appends() {
        let taps = Taps::default();
        let mut slow = taps.subscribe("o");
        for i in 0..TAP_CAPACITY as u64 + 1 {
            taps.offer("o", &line(i, "x"));
        }
        let mut got = 0;
        while slow.next().await.is_some() {
            got += 1;
        }
        assert_eq!(got, TAP_CAPACITY);
        assert!(slow.lagged());
        assert_eq!(taps.counts(), (0, 1));
        let mut ended = taps.subscribe("o");
        taps.end("o");
        assert!(ended.next().await.is_none());
        assert!(!ended.lagged());
        assert_eq!(taps.count.load(Ordering::Acquire), 0);
    }
}
