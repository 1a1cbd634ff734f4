//! `reminder`: notes that fire by themselves, through the SDK's alarms. The routes are in
//! this crate's README; the Python `reminder` (`objects/python/reminder`) answers byte for
//! byte alike.
//!
//! A pending reminder is an alarm and nothing else: its name is the reminder's id, its
//! time the due time and its payload the note (UTF-8), so `GET /` lists them with
//! `alarms::list()` and `DELETE /{id}` is `alarms::cancel`. When one fires,
//! [`Object::on_alarm`] stores it as fired; the last [`KEEP_FIRED`] are kept.
//!
//! State: `next_id`, the count of reminders ever set (ids are `r1`, `r2`, ...);
//! `fired_seq`, the count of reminders ever fired; `fired:<seq, 20 digits>` = the fired
//! reminder `{"id","note","due_ms","fired_at_ms"}`.

use object_primitive::route::{JsonBody, Params, Router, missing, wrong_type};
use object_primitive::{Object, Request, Response, alarms, export_object, runtime, state};
use serde::{Deserialize, Serialize};

/// The longest wait a reminder may be set for: 31 days, in milliseconds.
const MAX_IN_MS: i64 = 31 * 24 * 60 * 60 * 1000;
/// The longest note, in characters (Unicode scalar values).
const MAX_NOTE_CHARS: usize = 1000;
/// Fired reminders kept; older ones are deleted.
const KEEP_FIRED: u64 = 100;

struct Reminder;

type Answer = Result<Response, Response>;

/// `{"id": ..}`, the answer to `POST /`.
#[derive(Serialize)]
struct Created<'a> {
    id: &'a str,
}

/// A pending reminder, as `GET /` lists it.
#[derive(Serialize)]
struct Pending {
    id: String,
    note: String,
    due_ms: u64,
}

/// A fired reminder, as stored and as `GET /` lists it.
#[derive(Serialize, Deserialize)]
struct Fired {
    id: String,
    note: String,
    due_ms: u64,
    fired_at_ms: u64,
}

/// `{"pending": [..], "fired": [..]}`, the answer to `GET /`.
#[derive(Serialize)]
struct Listing {
    pending: Vec<Pending>,
    fired: Vec<Fired>,
}

/// `{"id": .., "cancelled": true}`, the answer to `DELETE /{id}`.
#[derive(Serialize)]
struct Cancelled<'a> {
    id: &'a str,
    cancelled: bool,
}

fn fired_key(seq: u64) -> String {
    format!("fired:{seq:020}")
}

/// `in_ms` of the body: an integer from 0 to [`MAX_IN_MS`].
fn in_ms(body: &JsonBody) -> Result<u64, Response> {
    let in_ms = body.int("in_ms")?.ok_or_else(|| missing("in_ms"))?;
    if !(0..=MAX_IN_MS).contains(&in_ms) {
        return Err(wrong_type(
            "in_ms",
            &format!("an integer from 0 to {MAX_IN_MS} (31 days)"),
        ));
    }
    Ok(in_ms as u64)
}

/// `note` of the body: a string of at most [`MAX_NOTE_CHARS`] characters, `""` if absent.
fn note(body: &JsonBody) -> Result<&str, Response> {
    let note = body.str("note")?.unwrap_or("");
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(Response::bad_request(&format!(
            "field 'note' must be at most {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(note)
}

fn create(req: &Request, _: &Params) -> Answer {
    let body = JsonBody::parse(req)?;
    let in_ms = in_ms(&body)?;
    let note = note(&body)?;
    let id = format!("r{}", state::increment("next_id", 1));
    alarms::set(&id, runtime::now_ms() + in_ms, note.as_bytes());
    Ok(Response::json(&Created { id: &id }).with_status(201))
}

fn list(_: &Request, _: &Params) -> Answer {
    let pending = alarms::list()
        .into_iter()
        .map(|a| Pending {
            note: String::from_utf8_lossy(&a.payload).into_owned(),
            id: a.name,
            due_ms: a.at_ms,
        })
        .collect();
    let fired = state::keys("fired:")
        .iter()
        .filter_map(|k| state::get_json::<Fired>(k))
        .collect();
    Ok(Response::json(&Listing { pending, fired }))
}

fn cancel(_: &Request, params: &Params) -> Answer {
    let id = params.get("id");
    if !alarms::cancel(id) {
        return Err(Response::not_found(&format!(
            "no pending reminder with id {id}"
        )));
    }
    Ok(Response::json(&Cancelled {
        id,
        cancelled: true,
    }))
}

fn router() -> Router {
    Router::new()
        .get("/", |r, p| list(r, p).unwrap_or_else(|e| e))
        .post("/", |r, p| create(r, p).unwrap_or_else(|e| e))
        .delete("/{id}", |r, p| cancel(r, p).unwrap_or_else(|e| e))
}

impl Object for Reminder {
    fn get(req: Request) -> Response {
        router().handle(&req)
    }
    fn post(req: Request) -> Response {
        router().handle(&req)
    }
    fn put(req: Request) -> Response {
        router().handle(&req)
    }
    fn delete(req: Request) -> Response {
        router().handle(&req)
    }
    fn patch(req: Request) -> Response {
        router().handle(&req)
    }

    /// Moves the reminder `name` to the fired ones, with the time it fired.
    fn on_alarm(name: &str, payload: &[u8], scheduled_ms: u64) -> Result<(), String> {
        let seq = state::increment("fired_seq", 1) as u64;
        let fired = Fired {
            id: name.to_string(),
            note: String::from_utf8_lossy(payload).into_owned(),
            due_ms: scheduled_ms,
            fired_at_ms: runtime::now_ms(),
        };
        state::set_json(&fired_key(seq), &fired);
        if seq > KEEP_FIRED {
            state::delete(&fired_key(seq - KEEP_FIRED));
        }
        Ok(())
    }
}

export_object!(Reminder);

#[cfg(test)]
mod tests;
