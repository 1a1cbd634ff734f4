//! `blog`: posts, written by users that the `auth` object vouches for. The behaviour is
//! the contract in `EXAMPLE-APPS.md` §2; the routes are in this crate's README.
//!
//! Every write first resolves the caller's token through `runtime::call("auth", GET /)`
//! with `Authorization: Bearer <token>`: 200 gives the author, 401 answers 401
//! `invalid_token`, and anything else fails closed with 503 `auth_unavailable`. There is
//! no fallback identity.
//!
//! State: `post:<id>` = `{"author","content","created_at_ms","id","seq","tags","title",
//! "updated_at_ms"}`; `counter:posts`, the sequence that numbers posts (`p1`, `p2`, …;
//! never reused) and orders them by creation; and `order:<seq, 20 digits>` = the id, an
//! index in creation order, so that an unfiltered list reads only the posts of its page.

use object_primitive::route::{JsonBody, missing};
use object_primitive::serde_json::Value;
use object_primitive::{
    Object, Request, Response, export_object, info, json, runtime, state, warn,
};

const MAX_TITLE: usize = 200;
const MAX_CONTENT: usize = 100_000;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 50;
const EXCERPT: usize = 200;

struct Blog;

type Answer = Result<Response, Response>;

/// The token of a request: the `Authorization: Bearer` header, else the body's `token`
/// field (when the body is a JSON object), else the `?token=` query.
fn token_of<'a>(req: &'a Request, body: Option<&'a JsonBody>) -> Option<&'a str> {
    req.bearer_token()
        .or_else(|| {
            body.and_then(|b| b.get("token"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        })
        .or_else(|| req.query("token").filter(|t| !t.is_empty()))
}

/// The username `auth` gives for the request's token. Fails closed: only a 200 from
/// `auth` with a username identifies anyone.
fn author(req: &Request, body: Option<&JsonBody>) -> Result<String, Response> {
    let Some(token) = token_of(req, body) else {
        return Err(Response::error(
            401,
            "token_required",
            "Authentication token required",
        ));
    };
    let ask = Request::new("GET", "/").with_header("authorization", &format!("Bearer {token}"));
    let unavailable = |why: &str| {
        warn!("auth unavailable: {why}");
        Response::error(
            503,
            "auth_unavailable",
            "The auth object could not check the token; try again later",
        )
    };
    match runtime::call("auth", ask) {
        Ok(r) if r.status == 200 => r
            .json_body::<Value>()
            .ok()
            .and_then(|v| v["user"]["username"].as_str().map(str::to_string))
            .ok_or_else(|| unavailable("a 200 answer without user.username")),
        Ok(r) if r.status == 401 => Err(Response::error(
            401,
            "invalid_token",
            "Invalid or expired token",
        )),
        Ok(r) => Err(unavailable(&format!("status {}", r.status))),
        Err(e) => Err(unavailable(e.kind())),
    }
}

/// Trims like Rust's `str::trim` (Unicode White_Space); the Python blog uses the same set.
fn trimmed(s: &str) -> &str {
    s.trim()
}

fn check_title(title: &str) -> Result<String, Response> {
    let title = trimmed(title);
    if title.is_empty() {
        return Err(Response::bad_request("field 'title' must not be empty"));
    }
    if title.chars().count() > MAX_TITLE {
        return Err(Response::bad_request(&format!(
            "field 'title' must be at most {MAX_TITLE} characters"
        )));
    }
    Ok(title.to_string())
}

fn check_content(content: &str) -> Result<(), Response> {
    if trimmed(content).is_empty() {
        return Err(Response::bad_request("field 'content' must not be empty"));
    }
    if content.chars().count() > MAX_CONTENT {
        return Err(Response::bad_request(&format!(
            "field 'content' must be at most {MAX_CONTENT} characters"
        )));
    }
    Ok(())
}

fn tags_field(body: &JsonBody) -> Result<Option<Vec<String>>, Response> {
    let bad = || {
        Response::bad_request(&format!(
            "field 'tags' must be a list of at most {MAX_TAGS} strings of 1 to {MAX_TAG} characters"
        ))
    };
    let Some(tags) = body.str_list("tags").map_err(|_| bad())? else {
        return Ok(None);
    };
    if tags.len() > MAX_TAGS
        || tags
            .iter()
            .any(|t| !(1..=MAX_TAG).contains(&t.chars().count()))
    {
        return Err(bad());
    }
    Ok(Some(tags.into_iter().map(str::to_string).collect()))
}

fn post_key(id: &str) -> String {
    format!("post:{id}")
}

fn not_found(id: &str) -> Response {
    Response::not_found(&format!("Post not found: {id}"))
}

fn load(id: &str) -> Result<Value, Response> {
    state::get_json(&post_key(id)).ok_or_else(|| not_found(id))
}

/// The post as clients see it (without the internal sequence number).
fn public(post: &Value) -> Value {
    let mut post = post.clone();
    if let Some(map) = post.as_object_mut() {
        map.remove("seq");
    }
    post
}

fn excerpt(content: &str) -> String {
    let mut chars = content.chars();
    let head: String = chars.by_ref().take(EXCERPT).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}

/// An unsigned integer query parameter: ASCII digits only, below 10^18.
fn uint(text: &str) -> Option<u64> {
    let significant = text.trim_start_matches('0');
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || significant.len() > 18 {
        return None;
    }
    Some(significant.parse().unwrap_or(0))
}

fn get(req: &Request) -> Answer {
    if let Some(id) = req.query("id") {
        let post = load(id)?;
        return Ok(Response::json(&json!({ "post": public(&post) })));
    }
    let limit = match req.query("limit") {
        None => 10,
        Some(text) => uint(text)
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                Response::bad_request("query parameter 'limit' must be an integer from 1 to 100")
            })?,
    };
    let offset = match req.query("offset") {
        None => 0,
        Some(text) => uint(text).ok_or_else(|| {
            Response::bad_request("query parameter 'offset' must be an integer from 0")
        })?,
    };
    let sort = req.query("sort").unwrap_or("newest");
    if !matches!(sort, "newest" | "oldest" | "title") {
        return Err(Response::bad_request(
            "query parameter 'sort' must be newest, oldest or title",
        ));
    }
    let author = req.query("author").filter(|a| !a.is_empty());
    let search = req
        .query("search")
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);

    if author.is_none() && search.is_none() && sort != "title" {
        return Ok(page_in_order(sort == "newest", offset, limit));
    }
    let mut posts: Vec<Value> = state::keys("post:")
        .iter()
        .filter_map(|k| state::get_json::<Value>(k))
        .filter(|p| author.is_none_or(|a| p["author"] == a))
        .filter(|p| {
            search.as_deref().is_none_or(|s| {
                let field = |name: &str| p[name].as_str().unwrap_or("").to_lowercase();
                field("title").contains(s) || field("content").contains(s)
            })
        })
        .collect();
    let seq = |p: &Value| p["seq"].as_u64().unwrap_or(0);
    match sort {
        "oldest" => posts.sort_by_key(seq),
        "title" => {
            posts.sort_by_cached_key(|p| (p["title"].as_str().unwrap_or("").to_lowercase(), seq(p)))
        }
        _ => posts.sort_by_key(|p| std::cmp::Reverse(seq(p))),
    }
    let total = posts.len() as u64;
    let page = posts
        .iter()
        .skip(offset.min(total) as usize)
        .take(limit as usize)
        .map(summary)
        .collect();
    Ok(listing(page, total, limit, offset))
}

/// A page of the unfiltered list in creation order (or its reverse), from the `order:`
/// index: only the page's posts are read.
fn page_in_order(newest: bool, offset: u64, limit: u64) -> Response {
    let keys = state::keys("order:");
    let total = keys.len() as u64;
    let ids: Box<dyn Iterator<Item = &String>> = if newest {
        Box::new(keys.iter().rev())
    } else {
        Box::new(keys.iter())
    };
    let page = ids
        .skip(offset.min(total) as usize)
        .take(limit as usize)
        .filter_map(|k| state::get(k))
        .filter_map(|id| state::get_json::<Value>(&post_key(&id)))
        .map(|p| summary(&p))
        .collect();
    listing(page, total, limit, offset)
}

fn summary(p: &Value) -> Value {
    json!({
        "id": p["id"],
        "title": p["title"],
        "excerpt": excerpt(p["content"].as_str().unwrap_or("")),
        "author": p["author"],
        "created_at_ms": p["created_at_ms"],
        "updated_at_ms": p["updated_at_ms"],
        "tags": p["tags"],
    })
}

fn listing(page: Vec<Value>, total: u64, limit: u64, offset: u64) -> Response {
    Response::json(&json!({
        "posts": page,
        "pagination": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset.saturating_add(limit) < total,
        },
    }))
}

/// The key of a post in the creation-order index: `order:<seq, 20 digits>` = its id.
fn order_key(seq: u64) -> String {
    format!("order:{seq:020}")
}

/// The body as a JSON object, if it is one: the token may be in it. Whether it is valid
/// is reported only after the caller is known (identity comes first).
fn body_and_author(req: &Request) -> Result<(JsonBody, String), Response> {
    let body = JsonBody::parse(req);
    let author = author(req, body.as_ref().ok())?;
    Ok((body?, author))
}

fn post(req: &Request) -> Answer {
    let (body, author) = body_and_author(req)?;
    let title = check_title(body.required_str("title")?)?;
    let content = body.required_str("content")?;
    check_content(content)?;
    let tags = tags_field(&body)?.unwrap_or_default();
    let seq = state::increment("counter:posts", 1);
    let id = format!("p{seq}");
    let now = runtime::now_ms();
    state::set_json(
        &post_key(&id),
        &json!({
            "id": id,
            "seq": seq,
            "title": title,
            "content": content,
            "author": author,
            "tags": tags,
            "created_at_ms": now,
            "updated_at_ms": now,
        }),
    );
    state::set(&order_key(seq as u64), &id);
    info!("post created {id} by {author}");
    Ok(Response::json(&json!({ "post_id": id, "title": title })).with_status(201))
}

fn put(req: &Request) -> Answer {
    let (body, author) = body_and_author(req)?;
    let id = body.required_str("id")?;
    let title = body.str("title")?.map(check_title).transpose()?;
    let content = body.str("content")?;
    if let Some(content) = content {
        check_content(content)?;
    }
    let tags = tags_field(&body)?;
    let mut post = load(id)?;
    if post["author"] != author.as_str() {
        return Err(Response::error(
            403,
            "not_author",
            "Only the author can update this post",
        ));
    }
    if title.is_none() && content.is_none() && tags.is_none() {
        return Ok(Response::json(&json!({ "message": "No changes" })));
    }
    if let Some(title) = title {
        post["title"] = json!(title);
    }
    if let Some(content) = content {
        post["content"] = json!(content);
    }
    if let Some(tags) = tags {
        post["tags"] = json!(tags);
    }
    let before = post["updated_at_ms"].as_u64().unwrap_or(0);
    post["updated_at_ms"] = json!(runtime::now_ms().max(before + 1));
    state::set_json(&post_key(id), &post);
    info!("post updated {id} by {author}");
    Ok(Response::json(
        &json!({ "post_id": id, "message": "Post updated" }),
    ))
}

fn delete(req: &Request) -> Answer {
    let (body, author) = body_and_author(req)?;
    let id = match body.str("id")? {
        Some(id) => id,
        None => req.query("id").ok_or_else(|| missing("id"))?,
    };
    let post = load(id)?;
    if post["author"] != author.as_str() {
        return Err(Response::error(
            403,
            "not_author",
            "Only the author can delete this post",
        ));
    }
    state::delete(&post_key(id));
    state::delete(&order_key(post["seq"].as_u64().unwrap_or(0)));
    info!("post deleted {id} by {author}");
    let title = post["title"].as_str().unwrap_or("");
    Ok(Response::json(
        &json!({ "message": format!("Post deleted: {title}") }),
    ))
}

/// Every route is at `/`; any other path is a 404.
fn only_root(req: &Request, handler: fn(&Request) -> Answer) -> Response {
    if !req.segments().is_empty() {
        return Response::not_found(&format!("no route for {} {}", req.method, req.path));
    }
    handler(req).unwrap_or_else(|e| e)
}

impl Object for Blog {
    fn get(req: Request) -> Response {
        only_root(&req, get)
    }
    fn post(req: Request) -> Response {
        only_root(&req, post)
    }
    fn put(req: Request) -> Response {
        only_root(&req, put)
    }
    fn delete(req: Request) -> Response {
        only_root(&req, delete)
    }
}

export_object!(Blog);

#[cfg(test)]
mod tests;
