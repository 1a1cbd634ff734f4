//! Firing alarms: one task per station sleeps until the earliest object on the [`AlarmClock`] is
//! due, then fires that object's due alarms, one turn each, as calls of its `alarm-handler`.
//!
//! Only the object's home fires: a fire takes the object's turn and checks, as a call does, that
//! this station is the writer; a station that is not (a replica, a demoted home, an object that
//! moved away) drops the object from its clock, and the home (which scheduled the object when it
//! became home: at start, on promotion, on a migration in) fires it instead.
//!
//! [`AlarmClock`]: super::alarms::AlarmClock

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::alarms::{self, Due};
use super::call::TurnBatch;
use super::{Error, LiveObject, Station};
use crate::runtime::{CallChain, LogLevel};
use crate::store::{ObjectState, now_ms};

/// Objects whose alarms fire at once, at most.
const FIRING_AT_ONCE: usize = 64;
/// How long an object whose fire could not run (its state failed to open, this station's lease
/// is not settled yet) waits before its alarms are tried again. An object that left this station
/// is not tried again: its `LiveObject` is gone.
const RETRY_LATER: Duration = Duration::from_secs(1);

impl Station {
    /// Starts the task that fires alarms, after scheduling the objects homed here that have
    /// pending alarms (an alarm due while the station was down fires right after it starts).
    pub fn spawn_alarm_clock(&self) -> tokio::task::JoinHandle<()> {
        let station = self.clone();
        tokio::spawn(async move {
            station.schedule_homed().await;
            station.run_alarm_clock().await;
        })
    }

    /// Puts every stateful object homed here on the alarm clock (opening its state).
    async fn schedule_homed(&self) {
        let homed: Vec<Arc<LiveObject>> = {
            let objects = self.inner.objects.lock().expect("objects lock");
            objects.values().filter(|o| !o.stateless).cloned().collect()
        };
        for object in homed {
            self.schedule_alarms_of(&object).await;
        }
    }

    /// Puts `object` on the alarm clock at its next alarm (after it became home here).
    pub(super) async fn schedule_alarms_of(&self, object: &LiveObject) {
        match self.state_of(object).await {
            Ok(state) => self
                .inner
                .alarm_clock
                .schedule(&object.id, alarms::next_due(&state)),
            Err(e) => tracing::warn!(object = %object.id, "alarms not scheduled: {e}"),
        }
    }

    async fn run_alarm_clock(&self) {
        let firing = Arc::new(tokio::sync::Semaphore::new(FIRING_AT_ONCE));
        loop {
            let clock = &self.inner.alarm_clock;
            let woken = clock.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            for id in clock.take_due(now_ms(), FIRING_AT_ONCE) {
                let Ok(permit) = firing.clone().acquire_owned().await else {
                    return;
                };
                let station = self.clone();
                tokio::spawn(async move {
                    station.fire_due(&id).await;
                    drop(permit);
                });
            }
            let sleep = match clock.next() {
                Some(due) if due <= now_ms() => continue,
                Some(due) => Duration::from_millis(due - now_ms()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = &mut woken => {}
            }
        }
    }

    /// Fires `id`'s alarms that are due, one turn each, then puts it back on the clock at its
    /// next one. Dropped from the clock if this station does not (or no longer) home it.
    async fn fire_due(&self, id: &str) {
        let Ok(object) = self.object(id) else {
            return;
        };
        if object.stateless {
            return;
        }
        let state = match self.state_of(&object).await {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(object = id, "alarms cannot fire: {e}");
                self.later(id);
                return;
            }
        };
        while let Some(due) = alarms::first_due(&state, now_ms()) {
            match self.fire_one(&object, &state, due).await {
                Ok(()) => {}
                // It moved away: its new home fires it.
                Err(Error::Moved { .. } | Error::ObjectNotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(object = id, "alarm fire did not run: {e}");
                    self.later(id);
                    return;
                }
            }
        }
        self.inner
            .alarm_clock
            .schedule(id, alarms::next_due(&state));
    }

    /// Puts `id` back on the clock a little later.
    fn later(&self, id: &str) {
        let at = now_ms() + RETRY_LATER.as_millis() as u64;
        self.inner.alarm_clock.schedule(id, Some(at));
    }

    /// Runs one due alarm in `object`'s turn and commits the outcome: the fire's changes and the
    /// alarm's removal if it succeeded, its retry (or drop) if not.
    async fn fire_one(
        &self,
        object: &Arc<LiveObject>,
        state: &ObjectState,
        due: Due,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.config.call_deadline;
        let mut turn = tokio::time::timeout_at(deadline.into(), object.turn.lock())
            .await
            .map_err(|_| self.timed_out(object))?;
        self.check_not_moved(object)?;
        self.wait_writer(object, deadline).await?;
        // Cancelled, moved or fired (by an earlier task) while this one waited for the turn.
        if !alarms::still_due(state, &due) {
            return Ok(());
        }
        let request_id = format!("alarm-{:016x}", rand::random::<u64>());
        let span = self.inner.config.tracer.call_span(None);
        let trace_id = span.span.trace_id_hex();
        let call = (request_id.as_str(), trace_id.as_str());
        let name = &due.alarm.name;
        let late_ms = now_ms().saturating_sub(due.due_ms);
        self.log(
            &object.id,
            call,
            LogLevel::Info,
            "alarm.fire",
            &format!(
                "{name:?} set for {} (attempt {}, {late_ms} ms after due)",
                due.alarm.at_ms,
                due.attempts + 1
            ),
        );
        let started = Instant::now();
        let slot = object.current();
        self.warm_activation(object, &slot, &mut turn).await?;
        let chain = CallChain {
            request_id: request_id.clone(),
            objects: vec![object.id.clone()],
            deadline,
            trace: span.span,
        };
        let ctx = self.call_context(object, &slot, Some(state), chain, false);
        let activation = turn.as_mut().expect("activated above");
        let outcome = activation
            .fire(name, &due.alarm.payload, due.alarm.at_ms, ctx)
            .await;
        let failure = match outcome {
            Ok(fired) => match fired.result {
                Ok(()) => {
                    let set_again = fired.changes.alarms.iter().any(|(n, _)| n == name);
                    let mut batch = self.batch_of(state, fired.changes);
                    if !set_again {
                        batch.writes.extend(alarms::remove_writes(state, name));
                        batch.alarms_changed = true;
                    }
                    self.commit_turn(object, &slot, state, batch, turn, deadline)
                        .await?;
                    self.inner.metrics.alarm_fired(&object.id, late_ms);
                    let micros = started.elapsed().as_micros();
                    self.log(
                        &object.id,
                        call,
                        LogLevel::Info,
                        "alarm.end",
                        &format!("{name:?} handled in {micros}us"),
                    );
                    return Ok(());
                }
                Err(message) => format!("fire returned an error: {message}"),
            },
            Err(failure) => {
                *turn = None;
                object.traps.fetch_add(1, Ordering::Relaxed);
                self.failure_error(object, failure).to_string()
            }
        };
        self.inner.metrics.alarm_failed(&object.id);
        let mut batch = TurnBatch {
            alarms_changed: true,
            ..TurnBatch::default()
        };
        let base_ms = self.inner.config.alarm_retry_base.as_millis() as u64;
        match alarms::retry_writes(&due, now_ms(), base_ms) {
            Some((writes, retry_at)) => {
                batch.writes = writes;
                self.log(
                    &object.id,
                    call,
                    LogLevel::Warn,
                    "alarm.retry",
                    &format!(
                        "{name:?}: {failure}; nothing committed; retry {} of {} at {retry_at}",
                        due.attempts + 1,
                        alarms::MAX_RETRIES
                    ),
                );
            }
            None => {
                batch.writes = alarms::remove_writes(state, name);
                self.log(
                    &object.id,
                    call,
                    LogLevel::Error,
                    "alarm.dropped",
                    &format!(
                        "{name:?}: {failure}; nothing committed; dropped after {} retries",
                        alarms::MAX_RETRIES
                    ),
                );
            }
        }
        self.commit_turn(object, &slot, state, batch, turn, deadline)
            .await
    }
}
