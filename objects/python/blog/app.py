"""``blog``: posts, written by users that the ``auth`` object vouches for. The behaviour is
the contract in ``EXAMPLE-APPS.md`` §2; the routes are in this directory's README. It answers
byte for byte as the Rust ``blog`` (``objects/rust/blog``).

Every write first resolves the caller's token through ``runtime.call("auth", GET /)`` with
``Authorization: Bearer <token>``: 200 gives the author, 401 answers 401 ``invalid_token``,
anything else fails closed with 503 ``auth_unavailable``. There is no fallback identity.

State: ``post:<id>`` = ``{"author","content","created_at_ms","id","seq","tags","title",
"updated_at_ms"}``, ``counter:posts``, the sequence that numbers posts (``p1``, ...), and
``order:<seq, 20 digits>`` = the id, so that an unfiltered list reads only its page's posts.
"""

from __future__ import annotations

from typing import Any, Optional

from object_primitive import (
    CallError,
    HTTPError,
    Object,
    Request,
    Response,
    export,
    log,
    runtime,
    state,
)
from object_primitive.route import JsonBody, missing

MAX_TITLE = 200
MAX_CONTENT = 100_000
MAX_TAGS = 20
MAX_TAG = 50
EXCERPT = 200

#: What Rust's ``str::trim`` trims (Unicode White_Space), so both blogs agree on "empty".
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def token_of(req: Request, body: Optional[JsonBody]) -> Optional[str]:
    """The ``Authorization: Bearer`` header, else the body's ``token`` (when the body is a
    JSON object), else ``?token=``."""
    token = req.bearer_token()
    if token:
        return token
    if body is not None:
        value = body.get("token")
        if isinstance(value, str) and value:
            return value
    return req.query("token") or None


def unavailable(why: str) -> HTTPError:
    log.warn(f"auth unavailable: {why}")
    return HTTPError(
        503, "auth_unavailable", "The auth object could not check the token; try again later"
    )


def author_of(req: Request, body: Optional[JsonBody]) -> str:
    """The username ``auth`` gives for the request's token; fails closed."""
    token = token_of(req, body)
    if token is None:
        raise HTTPError(401, "token_required", "Authentication token required")
    ask = Request("GET", "/", headers=[("authorization", f"Bearer {token}")])
    try:
        r = runtime.call("auth", ask)
    except CallError as e:
        raise unavailable(e.kind) from None
    if r.status == 200:
        try:
            user = r.json_body().get("user")
            name = user.get("username") if isinstance(user, dict) else None
        except (ValueError, AttributeError):
            name = None
        if isinstance(name, str):
            return name
        raise unavailable("a 200 answer without user.username")
    if r.status == 401:
        raise HTTPError(401, "invalid_token", "Invalid or expired token")
    raise unavailable(f"status {r.status}")


def check_title(title: str) -> str:
    title = title.strip(WHITESPACE)
    if not title:
        raise HTTPError(400, "bad_request", "field 'title' must not be empty")
    if len(title) > MAX_TITLE:
        raise HTTPError(
            400, "bad_request", f"field 'title' must be at most {MAX_TITLE} characters"
        )
    return title


def check_content(content: str) -> None:
    if not content.strip(WHITESPACE):
        raise HTTPError(400, "bad_request", "field 'content' must not be empty")
    if len(content) > MAX_CONTENT:
        raise HTTPError(
            400, "bad_request", f"field 'content' must be at most {MAX_CONTENT} characters"
        )


def tags_field(body: JsonBody) -> Optional[list[str]]:
    bad = HTTPError(
        400,
        "bad_request",
        f"field 'tags' must be a list of at most {MAX_TAGS} strings of 1 to {MAX_TAG} characters",
    )
    tags = body.get("tags")
    if tags is None:
        return None
    if (
        not isinstance(tags, list)
        or len(tags) > MAX_TAGS
        or not all(isinstance(t, str) and 1 <= len(t) <= MAX_TAG for t in tags)
    ):
        raise bad
    return tags


def post_key(id: str) -> str:
    return f"post:{id}"


def load(id: str) -> dict[str, Any]:
    post = state.get_json(post_key(id))
    if not isinstance(post, dict):
        raise HTTPError(404, "not_found", f"Post not found: {id}")
    return post


def public(post: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in post.items() if k != "seq"}


def excerpt(content: str) -> str:
    return content[:EXCERPT] + "..." if len(content) > EXCERPT else content


def uint(text: str) -> Optional[int]:
    """An unsigned integer query parameter: ASCII digits only, below 10^18."""
    if not text or not all("0" <= c <= "9" for c in text) or len(text.lstrip("0")) > 18:
        return None
    return int(text.lstrip("0") or "0")


def _seq(post: dict[str, Any]) -> int:
    v = post.get("seq")
    return v if type(v) is int and v >= 0 else 0


def _str(post: dict[str, Any], name: str) -> str:
    v = post.get(name)
    return v if isinstance(v, str) else ""


def list_posts(req: Request) -> Response:
    text = req.query("limit")
    limit = 10
    if text is not None:
        n = uint(text)
        if n is None or not 1 <= n <= 100:
            raise HTTPError(
                400, "bad_request", "query parameter 'limit' must be an integer from 1 to 100"
            )
        limit = n
    text = req.query("offset")
    offset = 0
    if text is not None:
        n = uint(text)
        if n is None:
            raise HTTPError(
                400, "bad_request", "query parameter 'offset' must be an integer from 0"
            )
        offset = n
    sort = req.query("sort", "newest")
    if sort not in ("newest", "oldest", "title"):
        raise HTTPError(
            400, "bad_request", "query parameter 'sort' must be newest, oldest or title"
        )
    author = req.query("author") or None
    search = (req.query("search") or "").lower() or None

    if author is None and search is None and sort != "title":
        return page_in_order(sort == "newest", offset, limit)
    posts = []
    for key in state.keys("post:"):
        p = state.get_json(key)
        if not isinstance(p, dict):
            continue
        if author is not None and p.get("author") != author:
            continue
        if search is not None and not (
            search in _str(p, "title").lower() or search in _str(p, "content").lower()
        ):
            continue
        posts.append(p)
    if sort == "oldest":
        posts.sort(key=_seq)
    elif sort == "title":
        posts.sort(key=lambda p: (_str(p, "title").lower(), _seq(p)))
    else:
        posts.sort(key=_seq, reverse=True)
    return listing([summary(p) for p in posts[offset : offset + limit]], len(posts), limit, offset)


def page_in_order(newest: bool, offset: int, limit: int) -> Response:
    """A page of the unfiltered list in creation order (or its reverse), from the ``order:``
    index: only the page's posts are read."""
    keys = state.keys("order:")
    if newest:
        keys.reverse()
    page = []
    for key in keys[offset : offset + limit]:
        id = state.get(key)
        post = state.get_json(post_key(id)) if id is not None else None
        if isinstance(post, dict):
            page.append(summary(post))
    return listing(page, len(keys), limit, offset)


def summary(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "author": p.get("author"),
        "created_at_ms": p.get("created_at_ms"),
        "excerpt": excerpt(_str(p, "content")),
        "id": p.get("id"),
        "tags": p.get("tags"),
        "title": p.get("title"),
        "updated_at_ms": p.get("updated_at_ms"),
    }


def listing(page: list[Any], total: int, limit: int, offset: int) -> Response:
    return Response.json(
        {
            "pagination": {
                "has_more": offset + limit < total,
                "limit": limit,
                "offset": offset,
                "total": total,
            },
            "posts": page,
        }
    )


def order_key(seq: int) -> str:
    """The key of a post in the creation-order index: ``order:<seq, 20 digits>`` = its id."""
    return f"order:{seq:020d}"


def body_and_author(req: Request) -> tuple[JsonBody, str]:
    """The caller first (the token may be in the body), then whether the body is valid."""
    body = JsonBody.try_parse(req)
    author = author_of(req, body)
    if body is None:
        body = JsonBody.parse(req)  # raises the 400
    return body, author


def only_root(req: Request) -> None:
    if req.segments():
        raise HTTPError(404, "not_found", f"no route for {req.method} {req.path}")


class Blog(Object):
    def get(self, req: Request) -> Response:
        only_root(req)
        id = req.query("id")
        if id is not None:
            return Response.json({"post": public(load(id))})
        return list_posts(req)

    def post(self, req: Request) -> Response:
        only_root(req)
        body, author = body_and_author(req)
        title = check_title(body.required_str("title"))
        content = body.required_str("content")
        check_content(content)
        tags = tags_field(body) or []
        seq = state.increment("counter:posts")
        id = f"p{seq}"
        now = runtime.now_ms()
        state.set_json(
            post_key(id),
            {
                "author": author,
                "content": content,
                "created_at_ms": now,
                "id": id,
                "seq": seq,
                "tags": tags,
                "title": title,
                "updated_at_ms": now,
            },
        )
        state.set(order_key(seq), id)
        log.info(f"post created {id} by {author}")
        return Response.json({"post_id": id, "title": title}, status=201)

    def put(self, req: Request) -> Response:
        only_root(req)
        body, author = body_and_author(req)
        id = body.required_str("id")
        raw_title = body.str("title")
        title = check_title(raw_title) if raw_title is not None else None
        content = body.str("content")
        if content is not None:
            check_content(content)
        tags = tags_field(body)
        post = load(id)
        if post.get("author") != author:
            raise HTTPError(403, "not_author", "Only the author can update this post")
        if title is None and content is None and tags is None:
            return Response.json({"message": "No changes"})
        if title is not None:
            post["title"] = title
        if content is not None:
            post["content"] = content
        if tags is not None:
            post["tags"] = tags
        before = post.get("updated_at_ms")
        before = before if type(before) is int and before >= 0 else 0
        post["updated_at_ms"] = max(runtime.now_ms(), before + 1)
        state.set_json(post_key(id), dict(sorted(post.items())))
        log.info(f"post updated {id} by {author}")
        return Response.json({"message": "Post updated", "post_id": id})

    def delete(self, req: Request) -> Response:
        only_root(req)
        body, author = body_and_author(req)
        id = body.str("id")
        if id is None:
            id = req.query("id")
            if id is None:
                raise missing("id")
        post = load(id)
        if post.get("author") != author:
            raise HTTPError(403, "not_author", "Only the author can delete this post")
        state.delete(post_key(id))
        state.delete(order_key(_seq(post)))
        log.info(f"post deleted {id} by {author}")
        return Response.json({"message": f"Post deleted: {_str(post, 'title')}"})


Handler = export(Blog)
