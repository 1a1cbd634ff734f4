//! Hello, world: `GET` answers `{"message":"Hello, world!","object":"<id>"}`;
//! `?name=X` greets X instead. Every other method answers 405.

use object_primitive::{Object, Request, Response, export_object, json, runtime};

struct Hello;

impl Object for Hello {
    fn get(req: Request) -> Response {
        let name = req.query("name").unwrap_or("world");
        Response::json(&json!({
            "message": format!("Hello, {name}!"),
            "object": runtime::object_id(),
        }))
    }
}

export_object!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use object_primitive::{dispatch, testing};

    #[test]
    fn greets() {
        testing::set_object_id("hello");
        let r = Hello::get(Request::new("GET", "/"));
        assert_eq!(
            r.text_body(),
            r#"{"message":"Hello, world!","object":"hello"}"#
        );
        let r = Hello::get(Request::new("GET", "/?name=Ada"));
        assert_eq!(
            r.json_body::<object_primitive::serde_json::Value>()
                .unwrap()["message"],
            "Hello, Ada!"
        );
        assert_eq!(dispatch::<Hello>(Request::new("POST", "/")).status, 405);
    }
}
