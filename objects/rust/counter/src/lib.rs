use object_primitive::{Object, Request, Response, events, export_object, state};
#[derive(serde::Serialize)]
struct Counter {
    count: i64,
}
/// Publishes the new value as event `count` (`{"count":N}`) and answers it.
fn changed(count: i64) -> Response {
    events::publish_json("count", &Counter { count });
    Response::json(&Counter { count })
}
impl Object for Counter {
    fn get(_: Request) -> Response {
        let count = state::get("count").map_or(0, |n| n.parse().unwrap_or(0));
        Response::json(&Counter { count })
    }
    fn post(_: Request) -> Response {
        changed(state::increment("count", 1))
    }
    fn delete(_: Request) -> Response {
        state::delete("count");
        changed(0)
    }
}
export_object!(Counter);
#[cfg(test)]
mod tests;
