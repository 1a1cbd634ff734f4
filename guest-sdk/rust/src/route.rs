//! JSON APIs: a router from method and path pattern to handler, and typed access to a
//! JSON object body with ready `400` answers.
//!
//! ```
//! use object_primitive::route::{JsonBody, Params, Router};
//! use object_primitive::{Request, Response, json};
//!
//! fn list(_req: &Request, _params: &Params) -> Response {
//!     Response::json(&json!({ "rooms": ["General"] }))
//! }
//!
//! fn send(req: &Request, params: &Params) -> Response {
//!     let body = match JsonBody::parse(req) {
//!         Ok(body) => body,
//!         Err(bad) => return bad,
//!     };
//!     match body.required_str("message") {
//!         Ok(text) => Response::json(&json!({ "room": params.get("room"), "message": text })),
//!         Err(bad) => bad,
//!     }
//! }
//!
//! let router = Router::new()
//!     .get("/rooms", list)
//!     .post("/rooms/{room}/messages", send);
//!
//! let r = router.handle(&Request::new("POST", "/rooms/General/messages").with_body(r#"{"message":"hi"}"#));
//! assert_eq!(r.text_body(), r#"{"message":"hi","room":"General"}"#);
//!
//! // Another method on a known path is a 405 naming the allowed ones; an unknown path a 404.
//! let r = router.handle(&Request::new("DELETE", "/rooms"));
//! assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
//! assert_eq!(router.handle(&Request::new("GET", "/nope")).status, 404);
//!
//! // A missing field is a 400 naming it.
//! let r = router.handle(&Request::new("POST", "/rooms/General/messages").with_body("{}"));
//! assert_eq!(r.text_body(), r#"{"error":"bad_request","message":"missing field 'message'"}"#);
//! ```
//!
//! The Python SDK's `object_primitive.route` has the same router and the same messages,
//! so objects written in either language answer alike.

use serde_json::{Map, Value};

use crate::{Request, Response};

/// A handler: the request and the values of the pattern's `{name}` segments.
pub type Handler = fn(&Request, &Params) -> Response;

/// The values of a pattern's `{name}` segments for one request, percent-decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of segment `{name}`, or `""` if the pattern has no such segment.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Routes requests by method and path pattern.
///
/// A pattern is a path whose segments are literals or `{name}` (matching any one
/// non-empty segment, percent-decoded as by [`Request::segments`]). Empty segments are
/// ignored on both sides, so `/rooms/` matches `/rooms`. Routes are tried in the order
/// they were added; the first whose method and pattern match answers.
///
/// When no pattern matches, [`Router::handle`] answers `404 not_found` ("no route for
/// METHOD PATH"); when patterns match but not for this method, `405
/// method_not_allowed` with an `allow` header listing the methods that would.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<(String, Vec<String>, Handler)>,
}

impl Router {
    /// A router without routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a route for `method` (compared case-insensitively) and `pattern`.
    pub fn route(mut self, method: &str, pattern: &str, handler: Handler) -> Router {
        let segments = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.routes
            .push((method.to_ascii_uppercase(), segments, handler));
        self
    }

    /// Adds a `GET` route.
    pub fn get(self, pattern: &str, handler: Handler) -> Router {
        self.route("GET", pattern, handler)
    }

    /// Adds a `POST` route.
    pub fn post(self, pattern: &str, handler: Handler) -> Router {
        self.route("POST", pattern, handler)
    }

    /// Adds a `PUT` route.
    pub fn put(self, pattern: &str, handler: Handler) -> Router {
        self.route("PUT", pattern, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete(self, pattern: &str, handler: Handler) -> Router {
        self.route("DELETE", pattern, handler)
    }

    /// Adds a `PATCH` route.
    pub fn patch(self, pattern: &str, handler: Handler) -> Router {
        self.route("PATCH", pattern, handler)
    }

    /// Answers `req` with the first matching route's handler, or with `404`/`405`.
    pub fn handle(&self, req: &Request) -> Response {
        let segments = req.segments();
        let mut allowed: Vec<&str> = Vec::new();
        for (method, pattern, handler) in &self.routes {
            let Some(params) = match_pattern(pattern, &segments) else {
                continue;
            };
            if method.eq_ignore_ascii_case(&req.method) {
                return handler(req, &params);
            }
            if !allowed.contains(&method.as_str()) {
                allowed.push(method.as_str());
            }
        }
        if allowed.is_empty() {
            Response::not_found(&format!("no route for {} {}", req.method, req.path))
        } else {
            Response::error(
                405,
                "method_not_allowed",
                &format!("{} is not supported on {}", req.method, req.path),
            )
            .with_header("allow", &allowed.join(", "))
        }
    }
}

fn match_pattern(pattern: &[String], segments: &[String]) -> Option<Params> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in pattern.iter().zip(segments) {
        match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => params.push((name.to_string(), s.clone())),
            None if p == s => {}
            None => return None,
        }
    }
    Some(Params(params))
}

/// A request body that is a JSON object, with typed field access whose errors are
/// ready `400 bad_request` answers naming the field.
///
/// A field whose value is `null` counts as absent. An empty body (or one of only
/// whitespace) is the empty object, so clients may leave it out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonBody(Map<String, Value>);

impl JsonBody {
    /// Parses `req`'s body; anything but a JSON object (or an empty body) answers `400`
    /// "request body must be a JSON object".
    pub fn parse(req: &Request) -> Result<JsonBody, Response> {
        let bad = || Response::bad_request("request body must be a JSON object");
        if req.body.iter().all(|b| b" \t\r\n".contains(b)) {
            return Ok(JsonBody::default());
        }
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(map)) => Ok(JsonBody(map)),
            _ => Err(bad()),
        }
    }

    /// The object itself.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The value of field `name`, unless it is absent or `null`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// Field `name` as a string, if present; another type answers `400` "field 'NAME'
    /// must be a string".
    pub fn str(&self, name: &str) -> Result<Option<&str>, Response> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// Field `name` as a string; absent answers `400` "missing field 'NAME'".
    pub fn required_str(&self, name: &str) -> Result<&str, Response> {
        self.str(name)?.ok_or_else(|| missing(name))
    }

    /// Field `name` as an integer, if present; anything else (a fraction, a string, a
    /// number beyond 64 bits) answers `400` "field 'NAME' must be an integer".
    pub fn int(&self, name: &str) -> Result<Option<i64>, Response> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "an integer")),
        }
    }

    /// Field `name` as a boolean, if present; another type answers `400` "field 'NAME'
    /// must be true or false".
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Response> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(name, "true or false")),
        }
    }

    /// Field `name` as a list of strings, if present; anything else answers `400`
    /// "field 'NAME' must be a list of strings".
    pub fn str_list(&self, name: &str) -> Result<Option<Vec<&str>>, Response> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<&str>>>()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a list of strings")),
            Some(_) => Err(wrong_type(name, "a list of strings")),
        }
    }
}

/// `400` "missing field 'NAME'".
pub fn missing(name: &str) -> Response {
    Response::bad_request(&format!("missing field '{name}'"))
}

/// `400` "field 'NAME' must be WHAT".
pub fn wrong_type(name: &str, what: &str) -> Response {
    Response::bad_request(&format!("field '{name}' must be {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(_: &Request, p: &Params) -> Response {
        Response::text(format!("room {}", p.get("room")))
    }
    fn root(_: &Request, p: &Params) -> Response {
        Response::text(format!("root{}", p.get("nothing")))
    }

    #[test]
    fn routes_by_method_and_pattern() {
        let r = Router::new()
            .get("/", root)
            .post("/rooms/{room}/join", room)
            .put("/rooms/{room}/join", room);
        assert_eq!(r.handle(&Request::new("GET", "")).text_body(), "root");
        let a = r.handle(&Request::new("POST", "/rooms/a%20b/join/"));
        assert_eq!(a.text_body(), "room a b");
        let a = r.handle(&Request::new("GET", "/rooms/x/join"));
        assert_eq!(a.status, 405);
        assert_eq!(a.header("allow"), Some("POST, PUT"));
        assert_eq!(
            a.text_body(),
            r#"{"error":"method_not_allowed","message":"GET is not supported on /rooms/x/join"}"#
        );
        let a = r.handle(&Request::new("POST", "/rooms/x"));
        assert_eq!(
            a.text_body(),
            r#"{"error":"not_found","message":"no route for POST /rooms/x"}"#
        );
        assert_eq!(r.handle(&Request::new("POST", "/rooms//join")).status, 404);
    }

    #[test]
    fn json_body_fields() {
        let req = |b: &str| Request::new("POST", "/").with_body(b.to_string());
        assert_eq!(JsonBody::parse(&req(" \n")).unwrap(), JsonBody::default());
        for bad in ["[]", "1", "{", "\"x\"", "{} x", "NaN"] {
            let e = JsonBody::parse(&req(bad)).unwrap_err();
            assert_eq!(
                e.text_body(),
                r#"{"error":"bad_request","message":"request body must be a JSON object"}"#,
                "{bad}"
            );
        }
        let b = JsonBody::parse(&req(
            r#"{"s":"x","n":3,"f":1.5,"t":true,"z":null,"l":["a"],"m":["a",1]}"#,
        ))
        .unwrap();
        assert_eq!(b.str("s").unwrap(), Some("x"));
        assert_eq!(b.str("z").unwrap(), None);
        assert_eq!(b.required_str("s").unwrap(), "x");
        let e = b.required_str("z").unwrap_err();
        assert!(e.text_body().contains("missing field 'z'"));
        let e = b.str("n").unwrap_err();
        assert!(e.text_body().contains("field 'n' must be a string"));
        assert_eq!(b.int("n").unwrap(), Some(3));
        assert!(b.int("f").is_err());
        assert!(b.int("s").is_err());
        assert_eq!(b.bool("t").unwrap(), Some(true));
        assert!(b.bool("n").is_err());
        assert_eq!(b.str_list("l").unwrap(), Some(vec!["a"]));
        assert!(b.str_list("m").is_err());
        assert!(b.str_list("s").is_err());
        assert_eq!(b.get("z"), None);
        assert_eq!(b.as_map().len(), 7);
    }
}
