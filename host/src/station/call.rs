//! One call, end to end: turn, activation, handler, commit, release, durability, log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::time::Instant as TokioInstant;

use super::services::Services;
use super::{Error, LiveObject, Station, blocking, idempotency};
use crate::runtime::{
    self, Activation, CallChain, CallContext, CallFailure, LogLevel, ObjectRequest, ObjectResponse,
    StateReader, StateVersion,
};
use crate::store::{self, LogRecord, ObjectState, Write, now_ms};

/// A finished call: the object's response plus what the host adds to it.
#[derive(Debug)]
pub struct CallResult {
    /// The object's response, to pass through unchanged.
    pub response: ObjectResponse,
    /// The request id the call ran under.
    pub request_id: String,
}

/// What a call did, for logging and metrics.
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// Status sent.
    pub status: u16,
    /// Wall time in microseconds.
    pub micros: u64,
}

/// Counts a call as in flight for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicU64) -> InFlight<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

/// The turn while its handler runs: dropped before [`RunningCall::finish`] (the call's future was
/// dropped mid-handler), it replaces the instance, which could not be entered again.
struct RunningCall<'a, 'b>(Option<&'a mut tokio::sync::MutexGuard<'b, Option<Activation>>>);

impl RunningCall<'_, '_> {
    /// The instance the handler runs in.
    fn activation(&mut self) -> &mut Activation {
        self.0
            .as_mut()
            .and_then(|turn| turn.as_mut())
            .expect("an activation is present while its call runs")
    }

    /// The handler returned: the instance stays.
    fn finish(mut self) {
        self.0 = None;
    }
}

impl Drop for RunningCall<'_, '_> {
    fn drop(&mut self) {
        if let Some(turn) = self.0.take() {
            **turn = None;
        }
    }
}

/// A call counted against its object's queue quota until dropped.
struct QueueSlot(Arc<LiveObject>);

impl QueueSlot {
    /// Counts a call in, or refuses it with [`Error::TooBusy`] when `limit` calls are running or
    /// waiting already.
    fn enter(object: &Arc<LiveObject>, limit: u32) -> Result<QueueSlot, Error> {
        let admitted = object
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(QueueSlot(object.clone())),
            Err(_) => Err(Error::TooBusy {
                object: object.id.clone(),
                limit,
            }),
        }
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The state of an object deployed stateless: always empty (its writes trap in the runtime).
struct NoState;

impl StateReader for NoState {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }

    fn keys(&self, _prefix: &str) -> Vec<String> {
        Vec::new()
    }

    fn history(&self, _key: &str, _limit: usize) -> Vec<StateVersion> {
        Vec::new()
    }
}

/// The object's committed state, as the runtime reads it: without the keys the host keeps in it
/// for itself ([`idempotency::RESERVED_PREFIX`]).
struct CommittedState(ObjectState);

impl StateReader for CommittedState {
    fn get(&self, key: &str) -> Option<String> {
        if idempotency::is_reserved(key) {
            return None;
        }
        self.0.get(key)
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = self.0.keys(prefix);
        keys.retain(|key| !idempotency::is_reserved(key));
        keys
    }

    fn history(&self, key: &str, limit: usize) -> Vec<StateVersion> {
        if idempotency::is_reserved(key) {
            return Vec::new();
        }
        self.0
            .history(key, limit)
            .into_iter()
            .map(|v| StateVersion {
                seq: v.seq,
                at_ms: v.at_ms,
                value: v.value,
            })
            .collect()
    }

    fn alarm(&self, name: &str) -> Option<runtime::AlarmEntry> {
        super::alarms::pending(&self.0, name)
    }

    fn alarms(&self) -> Vec<runtime::AlarmEntry> {
        super::alarms::all_pending(&self.0)
    }
}

impl Station {
    /// Calls an object. `chain` is `None` for a call arriving over HTTP (a new chain starts with
    /// `request_id`) and the caller's chain for an object-to-object call; the call runs in
    /// `span`, which becomes the chain's current span (the parent of the calls it makes).
    ///
    /// Dropping the returned future abandons the call (a client that hangs up): if its handler
    /// was running, the instance it ran in is replaced (a handler dropped half-way leaves its
    /// instance unable to be entered again) and its writes are discarded; a call whose batch was
    /// already committed stays committed.
    pub async fn call(
        &self,
        id: &str,
        request: ObjectRequest,
        request_id: String,
        chain: Option<CallChain>,
        span: crate::trace::CallSpan,
    ) -> Result<CallResult, Error> {
        let object = self.object(id)?;
        // Quotas first: a refused call costs no log line and no turn.
        let slot = object.current();
        if let Err(retry_after) = slot.meters.admit_call() {
            return Err(Error::RateLimited {
                object: object.id.clone(),
                rate: slot.meters.quota.rate,
                retry_after,
            });
        }
        let _queued = QueueSlot::enter(&object, slot.meters.quota.queue)?;
        drop(slot);
        let deadline = match &chain {
            Some(chain) => chain.deadline,
            None => Instant::now() + self.inner.config.call_deadline,
        };
        let deadline_ms = self.deadline_ms();
        let chain = match chain {
            Some(mut chain) => {
                chain.objects.push(object.id.clone());
                chain.trace = span.span;
                chain
            }
            None => CallChain {
                request_id: request_id.clone(),
                objects: vec![object.id.clone()],
                deadline,
                trace: span.span,
            },
        };
        let trace_id = span.span.trace_id_hex();
        let started_at = std::time::SystemTime::now();
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.inner.in_flight);
        let line = format!("{} {}", request.method, request.path);
        self.log(
            &object.id,
            (&chain.request_id, &trace_id),
            LogLevel::Info,
            "call.start",
            &line,
        );
        object.calls.fetch_add(1, Ordering::Relaxed);

        let request_id = chain.request_id.clone();
        let method = request.method.clone();
        let result = self.run_turn(&object, request, chain, deadline).await;
        let took = started.elapsed();
        let micros = took.as_micros() as u64;
        let status = match &result {
            Ok(response) => crate::metrics::status_class(response.status),
            Err(_) => "error",
        };
        self.call_meters(&object).call(&method, status, took);
        if self.inner.config.tracer.exporting() {
            self.inner.config.tracer.record(crate::trace::FinishedCall {
                span,
                object_id: &object.id,
                method: &method,
                status: result.as_ref().ok().map(|r| r.status),
                error: result.as_ref().err().map(ToString::to_string),
                request_id: &request_id,
                started: started_at,
                took,
            });
        }
        if matches!(result, Err(Error::DeadlineExceeded { .. })) {
            self.inner.metrics.timed_out(&object.id);
        }
        match &result {
            Ok(response) => {
                let message = format!("{line} -> {} in {micros}us", response.status);
                self.log(
                    &object.id,
                    (&request_id, &trace_id),
                    LogLevel::Info,
                    "call.end",
                    &message,
                );
            }
            Err(Error::DeadlineExceeded { .. }) => {
                object.traps.fetch_add(1, Ordering::Relaxed);
                let message =
                    format!("{line}: deadline of {deadline_ms} ms exceeded, nothing committed");
                self.log(
                    &object.id,
                    (&request_id, &trace_id),
                    LogLevel::Error,
                    "call.timeout",
                    &message,
                );
            }
            Err(Error::Trapped {
                message, backtrace, ..
            }) => {
                object.traps.fetch_add(1, Ordering::Relaxed);
                let mut message = format!("{line}: {message}; nothing committed");
                if !backtrace.is_empty() {
                    message.push('\n');
                    message.push_str(backtrace.trim_end());
                }
                self.log(
                    &object.id,
                    (&request_id, &trace_id),
                    LogLevel::Error,
                    "call.trap",
                    &message,
                );
            }
            Err(other) => {
                let message = format!("{line}: {other}");
                self.log(
                    &object.id,
                    (&request_id, &trace_id),
                    LogLevel::Error,
                    "call.error",
                    &message,
                );
            }
        }
        result.map(|response| CallResult {
            response,
            request_id,
        })
    }

    async fn run_turn(
        &self,
        object: &Arc<LiveObject>,
        request: ObjectRequest,
        chain: CallChain,
        deadline: Instant,
    ) -> Result<ObjectResponse, Error> {
        // A stateless object has no state to open, commit or replicate.
        let state = if object.stateless {
            None
        } else {
            Some(self.state_of(object).await?)
        };
        // A GET of an object deployed with parallel reads runs beside the others, outside the
        // turn (unless it has an idempotency key: keeping its answer is a write).
        // With a key it takes the turn, still unable to write state.
        let slot = object.current();
        let read_only = request.method == "GET" && slot.meters.quota.readers > 0;
        if read_only
            && !request
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(idempotency::HEADER))
        {
            return self
                .run_parallel_read(object, slot, state, request, chain, deadline)
                .await;
        }
        drop(slot);
        let waiting = Instant::now();
        let mut turn =
            tokio::time::timeout_at(TokioInstant::from_std(deadline), object.turn.lock())
                .await
                .map_err(|_| self.timed_out(object))?;
        self.call_meters(object).turn_wait(waiting.elapsed());

        self.check_not_moved(object)?;
        self.wait_writer(object, deadline).await?;
        // A call with an Idempotency-Key runs once: a retry, in its own turn, finds the first
        // answer and waits for it to be as durable as the first call did.
        let idempotent = match &state {
            Some(state) => match self.idempotency_check(object, state, &request)? {
                IdempotencyCheck::Run(key) => key,
                IdempotencyCheck::Replay(response) => {
                    drop(turn);
                    return self.replay(object, state, response, deadline).await;
                }
            },
            None => None,
        };
        // The version is read at the start of the turn: a deploy lets calls in flight finish on
        // the old version, and the next turn switches.
        let slot = object.current();
        self.warm_activation(object, &slot, &mut turn).await?;
        let ctx = self.call_context(object, &slot, state.as_ref(), chain, read_only);
        let outcome = {
            // If this future is dropped while the handler runs, the guard replaces the instance.
            let mut running = RunningCall(Some(&mut turn));
            let outcome = running.activation().call(request, ctx).await;
            running.finish();
            outcome
        };
        let (response, changes) = match outcome {
            Ok(outcome) => (outcome.response, outcome.changes),
            Err(failure) => {
                *turn = None;
                drop(turn);
                return Err(self.failure_error(object, failure));
            }
        };
        // 1xx (informational, 101 upgrade) cannot end an exchange: refused like a made-up
        // number, and the call's writes are discarded.
        if !(200..=599).contains(&response.status) {
            drop(turn);
            return Err(Error::InvalidResponse {
                object: object.id.clone(),
                message: format!("status {} is outside 200–599", response.status),
            });
        }
        let Some(state) = &state else {
            return Ok(response);
        };
        // A status >= 500 means the object failed: its changes are discarded. No writes make
        // an empty batch, a read barrier: the answer may show state not yet durable.
        let mut batch = if response.status < 500 {
            self.batch_of(state, changes)
        } else {
            TurnBatch::default()
        };
        // The answer is kept in the same batch as the writes it reports.
        if let Some((key, fingerprint)) = &idempotent {
            batch.writes.extend(idempotency::record_writes(
                state,
                key,
                fingerprint,
                &response,
                now_ms(),
                self.idempotency_ttl_ms(),
            ));
        }
        self.commit_turn(object, &slot, state, batch, turn, deadline)
            .await?;
        Ok(response)
    }

    /// The batch that commits a call's changes: its state writes, and the writes that keep its
    /// alarm changes and its events.
    pub(super) fn batch_of(&self, state: &ObjectState, changes: runtime::Changes) -> TurnBatch {
        let mut writes: Vec<Write> = changes
            .writes
            .into_iter()
            .map(|w| match w {
                runtime::StateWrite::Set { key, value } => Write::Set { key, value },
                runtime::StateWrite::Delete { key } => Write::Delete { key },
            })
            .collect();
        let alarms_changed = !changes.alarms.is_empty();
        writes.extend(super::alarms::change_writes(state, &changes.alarms));
        let (event_writes, last_event) = super::pubsub::event_writes(
            state,
            &changes.events,
            self.inner.config.event_retention,
            now_ms(),
        );
        writes.extend(event_writes);
        TurnBatch {
            writes,
            alarms_changed,
            last_event,
        }
    }

    /// Commits `batch` for a call of `object` that holds its `turn`, hands it to replication,
    /// releases the turn, and returns once the batch is durable (and, with `--sync-replicas`,
    /// acknowledged). Then its events go to subscribers.
    pub(super) async fn commit_turn(
        &self,
        object: &LiveObject,
        slot: &super::live::VersionSlot,
        state: &ObjectState,
        batch: TurnBatch,
        turn: tokio::sync::MutexGuard<'_, Option<Activation>>,
        deadline: Instant,
    ) -> Result<(), Error> {
        let TurnBatch {
            writes,
            alarms_changed,
            last_event,
        } = batch;
        // Room in the writer's queue first: while the disk is behind, a call that writes waits
        // here (holding its turn) instead of queueing without bound. A read takes none.
        let permit = if writes.is_empty() {
            None
        } else {
            Some(state.reserve(store::write_cost(&writes)).await?)
        };
        // The lease may have lapsed while the handler ran: then nothing is committed.
        self.check_writer(object)?;
        let quota = &slot.meters.quota;
        let limits = store::StateLimits {
            keys: quota.keys,
            bytes: quota.state_bytes,
        };
        let committed = match permit {
            Some(permit) => state.commit_reserved(writes, Some(limits), permit),
            None => state.barrier(),
        };
        let ticket = committed.map_err(|e| match e {
            store::Error::QuotaExceeded { .. } => Error::StateQuotaExceeded {
                object: object.id.clone(),
                message: format!("{e}; nothing committed"),
            },
            other => other.into(),
        })?;
        // Hand the batch to replication while still holding the turn, so batches of one object
        // reach the replicator in seq order.
        let batch = ticket.batch();
        let seq = batch.as_ref().map(|b| b.seq);
        let replicated = match (self.inner.replication.get(), batch) {
            (Some(sink), Some(batch)) => {
                sink.committed(&object.id, object.epoch.load(Ordering::Relaxed), batch)
            }
            _ => None,
        };
        if alarms_changed {
            self.inner
                .alarm_clock
                .schedule(&object.id, super::alarms::next_due(state));
        }
        // Release the turn before waiting for durability: the next call runs while this batch
        // is being written, and its own answer waits for its own (later) batch.
        drop(turn);
        ticket.durable().await?;
        if let (Some(sink), Some(seq)) = (self.inner.replication.get(), seq) {
            sink.durable(&object.id, seq);
        }
        let acknowledged = match replicated {
            Some(acknowledged) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, acknowledged).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(message)) => Err(message),
                    Err(_) => Err("no replica acknowledged before the deadline".into()),
                }
            }
            None => Ok(()),
        };
        // Committed and durable here: its events are delivered even if a replica failed to
        // acknowledge (the batch stays committed, as the caller is told).
        if let Some(number) = last_event {
            self.inner.event_hub.durable(&object.id, number);
        }
        acknowledged.map_err(|message| Error::ReplicationFailed {
            object: object.id.clone(),
            message,
        })
    }

    /// `object`'s call counters, resolved on its first call.
    fn call_meters<'a>(&self, object: &'a LiveObject) -> &'a crate::metrics::ObjectCallMeters {
        object
            .call_meters
            .get_or_init(|| self.inner.metrics.for_object(&object.id))
    }

    /// Fails with [`Error::Moved`] if `object` was handed off to another station.
    pub(super) fn check_not_moved(&self, object: &LiveObject) -> Result<(), Error> {
        match object.moved_to.lock().expect("moved lock").clone() {
            Some(address) => Err(Error::Moved {
                object: object.id.clone(),
                address,
            }),
            None => Ok(()),
        }
    }

    /// Makes `turn` hold a live instance of `slot`'s version: the one kept if it runs that
    /// version, else a fresh one.
    pub(super) async fn warm_activation(
        &self,
        object: &LiveObject,
        slot: &super::live::VersionSlot,
        turn: &mut Option<Activation>,
    ) -> Result<(), Error> {
        let compiled = self.compiled(object, slot).await?;
        if turn.as_ref().is_some_and(|a| a.sha256 != compiled.sha256) {
            *turn = None;
        }
        if turn.is_none() {
            *turn = Some(self.activate(object, &compiled).await?);
        }
        Ok(())
    }

    /// The per-call deadline, in ms (for messages).
    fn deadline_ms(&self) -> u64 {
        self.inner.config.call_deadline.as_millis() as u64
    }

    /// The error of a call of `object` that ran past its deadline (nothing of it is committed).
    pub(super) fn timed_out(&self, object: &LiveObject) -> Error {
        Error::DeadlineExceeded {
            object: object.id.clone(),
            deadline_ms: self.deadline_ms(),
        }
    }

    /// The station error for a call that failed in the runtime (nothing of it is committed).
    pub(super) fn failure_error(&self, object: &LiveObject, failure: CallFailure) -> Error {
        let id = object.id.clone();
        match failure {
            CallFailure::DeadlineExceeded => self.timed_out(object),
            CallFailure::WriteQuotaExceeded { message } => Error::WriteQuotaExceeded {
                object: id,
                message,
            },
            CallFailure::Trapped { message, backtrace } => Error::Trapped {
                object: id,
                message,
                backtrace,
            },
        }
    }

    /// What the runtime needs to run one call of `object` at version `slot`.
    pub(super) fn call_context(
        &self,
        object: &LiveObject,
        slot: &super::live::VersionSlot,
        state: Option<&ObjectState>,
        chain: CallChain,
        read_only: bool,
    ) -> CallContext {
        let reader: Arc<dyn StateReader> = match state {
            Some(state) => Arc::new(CommittedState(state.clone())),
            None => Arc::new(NoState),
        };
        CallContext {
            object_id: object.id.clone(),
            chain,
            state: reader,
            services: Arc::new(Services::new(self)),
            stateless: object.stateless,
            read_only,
            write_quota_bytes: slot.meters.quota.write_bytes,
        }
    }

    /// Runs a GET on one of the version's reader instances, beside other reads and outside the
    /// turn queue: it sees the state as committed when it starts, a state write traps it, and
    /// its answer waits (like any read) until what it saw is durable.
    async fn run_parallel_read(
        &self,
        object: &Arc<LiveObject>,
        slot: Arc<super::live::VersionSlot>,
        state: Option<ObjectState>,
        request: ObjectRequest,
        chain: CallChain,
        deadline: Instant,
    ) -> Result<ObjectResponse, Error> {
        let _reader =
            tokio::time::timeout_at(TokioInstant::from_std(deadline), slot.readers.enter())
                .await
                .map_err(|_| self.timed_out(object))?;
        self.check_not_moved(object)?;
        self.wait_writer(object, deadline).await?;
        let compiled = self.compiled(object, &slot).await?;
        let mut activation = match slot.readers.take() {
            Some(activation) => activation,
            None => self.activate(object, &compiled).await?,
        };
        let ctx = self.call_context(object, &slot, state.as_ref(), chain, true);
        // Dropped half-way (the client went away), the instance goes with the future.
        let response = match activation.call(request, ctx).await {
            Ok(outcome) => outcome.response,
            Err(failure) => {
                return Err(self.failure_error(object, failure));
            }
        };
        slot.readers.put(activation);
        if !(200..=599).contains(&response.status) {
            return Err(Error::InvalidResponse {
                object: object.id.clone(),
                message: format!("status {} is outside 200–599", response.status),
            });
        }
        if let Some(state) = &state {
            state.barrier()?.durable().await?;
        }
        Ok(response)
    }

    /// What the `Idempotency-Key` of `request` (if any) says: run it (keeping its answer under
    /// the key and fingerprint returned), or replay the answer kept from the first run.
    fn idempotency_check(
        &self,
        object: &LiveObject,
        state: &ObjectState,
        request: &ObjectRequest,
    ) -> Result<IdempotencyCheck, Error> {
        let key = idempotency::key_of(request).map_err(|e| Error::InvalidIdempotencyKey {
            object: object.id.clone(),
            message: e.to_string(),
        })?;
        let Some(key) = key else {
            return Ok(IdempotencyCheck::Run(None));
        };
        let fingerprint = idempotency::fingerprint(request);
        let ttl_ms = self.idempotency_ttl_ms();
        match idempotency::lookup(state, &key, &fingerprint, now_ms(), ttl_ms) {
            idempotency::Lookup::Fresh => Ok(IdempotencyCheck::Run(Some((key, fingerprint)))),
            idempotency::Lookup::Replay(response) => Ok(IdempotencyCheck::Replay(response)),
            idempotency::Lookup::Mismatch => Err(Error::IdempotencyMismatch {
                object: object.id.clone(),
                key,
            }),
        }
    }

    fn idempotency_ttl_ms(&self) -> u64 {
        self.inner.config.idempotency_ttl.as_millis() as u64
    }

    /// Answers a retry with the kept answer, once the batch that kept it is durable here and,
    /// with `--sync-replicas`, held by the replicas: the first call's answer waited for as much
    /// (it may still be waiting).
    async fn replay(
        &self,
        object: &LiveObject,
        state: &ObjectState,
        response: ObjectResponse,
        deadline: Instant,
    ) -> Result<ObjectResponse, Error> {
        let ticket = state.barrier()?;
        let seq = state.applied_seq();
        ticket.durable().await?;
        let replicated = self
            .inner
            .replication
            .get()
            .and_then(|sink| sink.replicated(&object.id, seq));
        if let Some(replicated) = replicated {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let message = match tokio::time::timeout(remaining, replicated).await {
                Ok(Ok(())) => return Ok(response),
                Ok(Err(message)) => message,
                Err(_) => "no replica acknowledged before the deadline".into(),
            };
            return Err(Error::ReplicationFailed {
                object: object.id.clone(),
                message,
            });
        }
        Ok(response)
    }

    /// Like [`Station::check_writer`], but when the answer is no, waits (up to a second, within
    /// the call's deadline) for it to become yes: a station that just received a migrated object
    /// may not have applied the directory's move yet, and a lease may be a renewal away.
    pub(super) async fn wait_writer(
        &self,
        object: &LiveObject,
        deadline: Instant,
    ) -> Result<(), Error> {
        let Err(error) = self.check_writer(object) else {
            return Ok(());
        };
        let Some(ownership) = self.inner.ownership.get() else {
            return Err(error);
        };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(std::time::Duration::from_secs(1));
        ownership
            .wait_writer(&object.id, object.epoch.load(Ordering::Relaxed), wait)
            .await
            .map_err(|reason| Error::NotWriter {
                object: object.id.clone(),
                reason,
            })
    }

    /// Whether this station may run and commit calls of a stateful object now (the directory
    /// names it home at the object's epoch and its lease is valid).
    pub(super) fn check_writer(&self, object: &LiveObject) -> Result<(), Error> {
        if object.stateless {
            return Ok(());
        }
        match self.inner.ownership.get() {
            Some(ownership) => ownership
                .check_writer(&object.id, object.epoch.load(Ordering::Relaxed))
                .map_err(|reason| Error::NotWriter {
                    object: object.id.clone(),
                    reason,
                }),
            None => Ok(()),
        }
    }

    /// The compiled component of a version, compiled or loaded from the cache on first use.
    pub(super) async fn compiled(
        &self,
        object: &LiveObject,
        slot: &super::VersionSlot,
    ) -> Result<runtime::CompiledObject, Error> {
        let compiled = slot
            .compiled
            .get_or_try_init(|| async {
                // Objects deployed from the same bytes share one compiled component.
                if let Some(shared) = self.inner.runtime.loaded(&slot.record.sha256) {
                    return Ok(shared);
                }
                let runtime = self.inner.runtime.clone();
                let metrics = self.inner.metrics.clone();
                let store = self.inner.store.clone();
                let id = object.id.clone();
                let record = slot.record.clone();
                blocking(move || {
                    let bytes = store.versions().read_bytes(&id, record.version)?;
                    super::timed_compile(&runtime, &metrics, &record.sha256, &bytes)
                        .map_err(|source| Error::Activation { object: id, source })
                })
                .await?
            })
            .await?;
        Ok(compiled.clone())
    }

    /// A fresh activation; if the instance pool is full, idle instances are dropped and it is
    /// tried once more.
    pub(super) async fn activate(
        &self,
        object: &LiveObject,
        compiled: &runtime::CompiledObject,
    ) -> Result<Activation, Error> {
        match self.inner.runtime.activate(compiled).await {
            Ok(activation) => Ok(activation),
            Err(first) => {
                let freed = self.deactivate_where(|_| true);
                tracing::warn!(object = %object.id, freed, "instantiation failed ({first}); retrying after freeing idle instances");
                self.inner
                    .runtime
                    .activate(compiled)
                    .await
                    .map_err(|source| Error::Activation {
                        object: object.id.clone(),
                        source,
                    })
            }
        }
    }

    /// Appends a line the object wrote (its log import, stdout, stderr) to its log, within its log
    /// quota: lines over it are dropped, and the next line admitted is preceded by one summary of
    /// them (`log.dropped`).
    pub(crate) fn log_from_object(
        &self,
        object_id: &str,
        chain: &CallChain,
        level: LogLevel,
        event: &str,
        message: &str,
    ) {
        let admission = match self.object(object_id) {
            Ok(object) => object.current().meters.admit_log(message.len()),
            Err(_) => super::quota::LogAdmission::Write,
        };
        match admission {
            super::quota::LogAdmission::Drop => return,
            super::quota::LogAdmission::Write => {}
            super::quota::LogAdmission::WriteAfterSummary(summary) => {
                self.log(object_id, ("", ""), LogLevel::Warn, "log.dropped", &summary);
            }
        }
        let trace_id = chain.trace.trace_id_hex();
        let call = (chain.request_id.as_str(), trace_id.as_str());
        self.log(object_id, call, level, event, message);
    }

    /// Appends a host event or an object line to an object's log; `call` is the (request id,
    /// trace id) of the call it belongs to, empty for none.
    pub(crate) fn log(
        &self,
        object_id: &str,
        call: (&str, &str),
        level: LogLevel,
        event: &str,
        message: &str,
    ) {
        self.inner.store.logs().append(
            object_id,
            LogRecord {
                ts_ms: super::now_ms(),
                level: level.into(),
                request_id: call.0.to_string(),
                event: event.to_string(),
                message: message.to_string(),
                trace_id: call.1.to_string(),
            },
        );
    }
}

impl From<LogLevel> for crate::store::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => crate::store::Level::Trace,
            LogLevel::Debug => crate::store::Level::Debug,
            LogLevel::Info => crate::store::Level::Info,
            LogLevel::Warn => crate::store::Level::Warn,
            LogLevel::Error => crate::store::Level::Error,
        }
    }
}

/// What one turn commits: its writes, and what to tell the alarm clock and the event hub.
#[derive(Debug, Default)]
pub(super) struct TurnBatch {
    /// Every write, the host's (alarms, events, idempotency) included.
    pub(super) writes: Vec<Write>,
    /// Whether an alarm was set or cancelled (the object's next due time may have moved).
    pub(super) alarms_changed: bool,
    /// The number of the last event published, if any.
    pub(super) last_event: Option<u64>,
}

/// What a call's `Idempotency-Key` decided.
enum IdempotencyCheck {
    /// Run the call; keep its answer under this key and fingerprint, if it has a key.
    Run(Option<(String, String)>),
    /// The call ran already: answer with this.
    Replay(ObjectResponse),
}
