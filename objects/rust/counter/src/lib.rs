use object_primitive::{Object, Request, Response, export_object, state};
#[derive(serde::Serialize)]
struct Counter {
    count: i64,
}
impl Object for Counter {
    fn get(_: Request) -> Response {
        let count = state::get("count").map_or(0, |n| n.parse().unwrap_or(0));
        Response::json(&Counter { count })
    }
    fn post(_: Request) -> Response {
        let count = state::increment("count", 1);
        Response::json(&Counter { count })
    }
    fn delete(_: Request) -> Response {
        state::delete("count");
        Response::json(&Counter { count: 0 })
    }
}
export_object!(Counter);
