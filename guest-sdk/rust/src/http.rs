//! Requests and responses.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One HTTP request addressed to an object.
///
/// The station passes the path after `/objects/{id}` as sent (percent-encoding kept,
/// always starting with `/`), the decoded query parameters (without the keys the
/// station reserves, such as `logs`), the headers (names lower-case) and the raw body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Upper-case HTTP method: `GET`, `POST`, `PUT`, `DELETE` or `PATCH`.
    pub method: String,
    /// The path after `/objects/{id}`, percent-encoding kept; `/` when empty.
    pub path: String,
    /// Decoded query parameters, in the order they arrived.
    pub query: Vec<(String, String)>,
    /// Request headers, in the order they arrived; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with the given method (upper-cased) and path, and no query, headers or
    /// body. Use it with [`crate::runtime::call`] or to call handlers in tests.
    ///
    /// A path given without a leading `/` gets one; a `?query` part in `path` is split
    /// off into [`Request::query`] (decoded).
    ///
    /// ```
    /// let req = object_primitive::Request::new("get", "items/a%20b?limit=2");
    /// assert_eq!(req.method, "GET");
    /// assert_eq!(req.path, "/items/a%20b");
    /// assert_eq!(req.segments(), ["items", "a b"]);
    /// assert_eq!(req.query("limit"), Some("2"));
    /// ```
    pub fn new(method: &str, path: &str) -> Request {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, parse_query(q)),
            None => (path, Vec::new()),
        };
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Request {
            method: method.to_ascii_uppercase(),
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a query parameter (already decoded).
    pub fn with_query(mut self, name: &str, value: &str) -> Request {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a header; the name is lower-cased.
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Replaces the body with `value` serialized as JSON and sets
    /// `content-type: application/json`.
    ///
    /// # Panics
    /// If `value` cannot be serialized (for example a map with non-string keys).
    pub fn with_json<T: Serialize + ?Sized>(self, value: &T) -> Request {
        let body = serde_json::to_vec(value).expect("request body serializes to JSON");
        self.with_header("content-type", "application/json")
            .with_body(body)
    }

    /// The path's segments, percent-decoded, empty segments skipped.
    ///
    /// `/a//b%2Fc/` gives `["a", "b/c"]`: the path is split on `/` first, so an encoded
    /// `%2F` stays inside its segment. Bytes that do not form valid UTF-8 after decoding
    /// are replaced with U+FFFD; use [`Request::try_segments`] to refuse them instead.
    /// Malformed escapes (`%zz`) are kept as written.
    ///
    /// ```
    /// let req = object_primitive::Request::new("GET", "/a//b%2Fc/%09");
    /// assert_eq!(req.segments(), ["a", "b/c", "\t"]);
    /// ```
    pub fn segments(&self) -> Vec<String> {
        self.raw_segments()
            .map(|s| String::from_utf8_lossy(&percent_decode(s)).into_owned())
            .collect()
    }

    /// Like [`Request::segments`], but a segment that is not valid UTF-8 after decoding
    /// gives a ready `400 bad_request` response.
    pub fn try_segments(&self) -> Result<Vec<String>, Response> {
        self.raw_segments()
            .map(|s| {
                String::from_utf8(percent_decode(s)).map_err(|_| {
                    Response::bad_request(&format!(
                        "path segment {s:?} is not valid UTF-8 once decoded"
                    ))
                })
            })
            .collect()
    }

    /// The `index`-th path segment (from [`Request::segments`]), if there is one.
    pub fn segment(&self, index: usize) -> Option<String> {
        self.raw_segments()
            .nth(index)
            .map(|s| String::from_utf8_lossy(&percent_decode(s)).into_owned())
    }

    fn raw_segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }

    /// The first value of query parameter `name`, if present.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (compared case-insensitively), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header, if there is one with a
    /// non-empty token. The scheme is compared case-insensitively and the token is
    /// trimmed of surrounding spaces.
    ///
    /// ```
    /// # use object_primitive::Request;
    /// let req = Request::new("GET", "/").with_header("Authorization", "Bearer abc");
    /// assert_eq!(req.bearer_token(), Some("abc"));
    /// let basic = Request::new("GET", "/").with_header("Authorization", "Basic abc");
    /// assert_eq!(basic.bearer_token(), None);
    /// ```
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim_matches(' ');
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim_matches(' ');
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// The body as UTF-8 text, or a ready `400 bad_request` response if it is not
    /// valid UTF-8.
    pub fn text(&self) -> Result<&str, Response> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Response::bad_request(&format!("request body is not valid UTF-8: {e}")))
    }

    /// The body parsed as JSON into `T`, or a ready `400 bad_request` response saying
    /// what is wrong with it.
    ///
    /// ```
    /// # use object_primitive::Request;
    /// #[derive(serde::Deserialize)]
    /// struct Move { x: i32 }
    ///
    /// let req = Request::new("POST", "/").with_body(r#"{"x": 3}"#);
    /// assert_eq!(req.json::<Move>().ok().unwrap().x, 3);
    ///
    /// let bad = Request::new("POST", "/").with_body("{");
    /// assert_eq!(bad.json::<Move>().err().unwrap().status, 400);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Response::bad_request(&format!("request body is not the expected JSON: {e}"))
        })
    }
}

/// The object's answer. Status, headers and body reach the client unchanged.
///
/// Constructors set a `content-type`; chain [`Response::with_status`] and
/// [`Response::with_header`] to adjust.
///
/// ```
/// use object_primitive::{Response, json};
///
/// let created = Response::json(&json!({ "id": 7 })).with_status(201);
/// assert_eq!(created.status, 201);
/// assert_eq!(created.header("content-type"), Some("application/json"));
///
/// let missing = Response::not_found("no such item");
/// assert_eq!(missing.text_body(), r#"{"error":"not_found","message":"no such item"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The raw response body.
    pub body: Vec<u8>,
}

impl Default for Response {
    /// `204 No Content`, no headers, empty body.
    fn default() -> Response {
        Response::new(204)
    }
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `200` with `value` serialized as JSON (`content-type: application/json`).
    ///
    /// If `value` cannot be serialized (a map with non-string keys, for example), the
    /// answer is a `500 serialization_failed` error instead.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes("application/json", body),
            // serde_json's error text is left out on purpose: formatting it costs
            // every object several KB of code for a case that is a programming error.
            Err(_) => Response::error(
                500,
                "serialization_failed",
                "the response value does not serialize to JSON",
            ),
        }
    }

    /// `200` with `text` as the body (`content-type: text/plain; charset=utf-8`).
    pub fn text(text: impl Into<String>) -> Response {
        Response::bytes("text/plain; charset=utf-8", text.into().into_bytes())
    }

    /// `200` with raw `body` bytes and the given `content-type`.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status: 200,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body: body.into(),
        }
    }

    /// The same response with another status code.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The same response with header `name: value`, replacing any earlier header of
    /// that name (compared case-insensitively). The name is lower-cased.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// An error with `status` and the JSON body `{"error": code, "message": message}`.
    ///
    /// Use a stable, snake_case `code` that clients can match on.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        // Written by hand rather than with serde_json, so that objects which never
        // serialize anything themselves do not carry a JSON serializer.
        let mut body = String::with_capacity(code.len() + message.len() + 24);
        body.push_str("{\"error\":");
        push_json_string(&mut body, code);
        body.push_str(",\"message\":");
        push_json_string(&mut body, message);
        body.push('}');
        Response::bytes("application/json", body).with_status(status)
    }

    /// `404` with error code `not_found`.
    pub fn not_found(message: &str) -> Response {
        Response::error(404, "not_found", message)
    }

    /// `400` with error code `bad_request`.
    pub fn bad_request(message: &str) -> Response {
        Response::error(400, "bad_request", message)
    }

    /// `405` with error code `method_not_allowed`.
    pub fn method_not_allowed() -> Response {
        Response::error(
            405,
            "method_not_allowed",
            "this method is not supported by this object",
        )
    }

    /// The first value of header `name` (compared case-insensitively), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced with U+FFFD). For tests and for
    /// answers from [`crate::runtime::call`].
    pub fn text_body(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`. For tests and for answers from
    /// [`crate::runtime::call`].
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json does.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; malformed escapes are kept as written.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Parses `a=1&b=x%20y` (with `+` as space), for [`Request::new`].
fn parse_query(q: &str) -> Vec<(String, String)> {
    let decode =
        |s: &str| String::from_utf8_lossy(&percent_decode(&s.replace('+', " "))).into_owned();
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_segments() {
        let req = Request::new("GET", "/%41b%2fc/%zz/%4/%E2%82%AC/");
        assert_eq!(req.segments(), ["Ab/c", "%zz", "%4", "€"]);
        assert_eq!(req.segment(1).as_deref(), Some("%zz"));
        assert_eq!(req.segment(9), None);
        assert!(Request::new("GET", "/").segments().is_empty());
    }

    #[test]
    fn rejects_invalid_utf8_segments() {
        let req = Request::new("GET", "/ok/%FF");
        assert_eq!(req.segments()[1], "\u{FFFD}");
        assert_eq!(req.try_segments().unwrap_err().status, 400);
        assert_eq!(
            Request::new("GET", "/a%0A").try_segments().unwrap(),
            ["a\n"]
        );
    }

    #[test]
    fn query_and_headers() {
        let req = Request::new("GET", "/?a=1&b=x+y%21&a=2&flag").with_header("X-Thing", "v");
        assert_eq!(req.query("a"), Some("1"));
        assert_eq!(req.query("b"), Some("x y!"));
        assert_eq!(req.query("flag"), Some(""));
        assert_eq!(req.query("nope"), None);
        assert_eq!(req.header("x-thing"), Some("v"));
        assert_eq!(req.header("X-THING"), Some("v"));
    }

    #[test]
    fn body_helpers() {
        let req = Request::new("POST", "/").with_body(vec![0xff, 0xfe]);
        let err = req.text().unwrap_err();
        assert_eq!(err.status, 400);
        let v: serde_json::Value = err.json_body().unwrap();
        assert_eq!(v["error"], "bad_request");

        let req = Request::new("POST", "/").with_json(&serde_json::json!({"k": [1, 2]}));
        let v: serde_json::Value = req.json().unwrap();
        assert_eq!(v["k"][1], 2);
        assert_eq!(req.header("content-type"), Some("application/json"));
    }

    #[test]
    fn responses() {
        let r = Response::text("hi").with_header("Content-Type", "text/html");
        assert_eq!(
            r.headers,
            [("content-type".to_string(), "text/html".to_string())]
        );
        assert_eq!(r.text_body(), "hi");

        let r = Response::method_not_allowed();
        assert_eq!(r.status, 405);
        let v: serde_json::Value = r.json_body().unwrap();
        assert_eq!(v["error"], "method_not_allowed");

        let r = Response::error(418, "teapot", "short \"and\" stout");
        assert_eq!(
            r.text_body(),
            r#"{"error":"teapot","message":"short \"and\" stout"}"#
        );

        // The hand-written escaping matches serde_json byte for byte.
        let nasty: String = (0u8..0x80)
            .map(char::from)
            .chain("€\u{10FFFF}".chars())
            .collect();
        let r = Response::error(400, "c\"\\", &nasty);
        let expected = serde_json::json!({"error": "c\"\\", "message": nasty}).to_string();
        assert_eq!(r.text_body(), expected);

        let mut bad = std::collections::HashMap::new();
        bad.insert(vec![1u8], 1);
        assert_eq!(Response::json(&bad).status, 500);
        assert_eq!(Response::default().status, 204);
    }
}
