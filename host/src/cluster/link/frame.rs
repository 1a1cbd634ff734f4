//! The frames of a station link: requests and responses as length-prefixed binary records,
//! matched by id. Pure: no I/O, unit-tested on byte buffers.
//!
//! ```text
//! frame    := length:u32 (bytes after it) kind:u8 id:u64 payload
//! request  := method:str8 path_and_query:str32 headers body:bytes32      (kind 1)
//! response := status:u16 headers body:bytes32                             (kind 2)
//! headers  := count:u16 { name:str16 value:bytes32 }
//! ```
//! Integers are big-endian; `strN`/`bytesN` are a length of N bits followed by that many bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame accepted (a request or response body is bounded well below this by the
/// station's own limits).
pub const MAX_FRAME: usize = 256 << 20;

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

/// A request carried over a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// HTTP method.
    pub method: http::Method,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A response carried over a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkResponse {
    /// Status.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// One frame: a request or a response, with the id that pairs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request the other end answers with a response of the same id.
    Request(u64, LinkRequest),
    /// The answer to the request with this id.
    Response(u64, LinkResponse),
}

/// Why bytes on a link are not a frame: the link is closed (the other end is not speaking
/// this protocol, or is broken).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// A frame whose fields do not add up, or hold invalid values.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// Appends `frame` to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0); // length, filled in below
    match frame {
        Frame::Request(id, request) => {
            out.put_u8(KIND_REQUEST);
            out.put_u64(*id);
            let method = request.method.as_str().as_bytes();
            out.put_u8(method.len() as u8);
            out.put_slice(method);
            out.put_u32(request.path_and_query.len() as u32);
            out.put_slice(request.path_and_query.as_bytes());
            put_headers(&request.headers, out);
            out.put_u32(request.body.len() as u32);
            out.put_slice(&request.body);
        }
        Frame::Response(id, response) => {
            out.put_u8(KIND_RESPONSE);
            out.put_u64(*id);
            out.put_u16(response.status.as_u16());
            put_headers(&response.headers, out);
            out.put_u32(response.body.len() as u32);
            out.put_slice(&response.body);
        }
    }
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

fn put_headers(headers: &http::HeaderMap, out: &mut BytesMut) {
    let count = headers.len().min(u16::MAX as usize);
    out.put_u16(count as u16);
    for (name, value) in headers.iter().take(count) {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
}

/// Takes one whole frame off the front of `buf`, if `buf` holds one (`Ok(None)`: read more).
/// (A link decodes with a [`Decoder`] of its own, which reuses the header names it has seen.)
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    Decoder::default().decode(buf)
}

/// Decodes the frames of one link. A link carries the same few header names in every frame:
/// the decoder keeps the first [`Decoder::NAMES`] it parses and hands out copies (a reference
/// count, or nothing for a standard name) instead of parsing and allocating each again.
#[derive(Debug, Default)]
pub struct Decoder {
    names: Vec<http::HeaderName>,
}

impl Decoder {
    /// Most header names kept per link.
    pub const NAMES: usize = 64;

    /// [`decode`], reusing this link's header names.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        decode_with(buf, self)
    }

    /// The header name spelled `bytes`: a kept one, else parsed (and kept while there is room).
    fn name(&mut self, bytes: &[u8]) -> Result<http::HeaderName, FrameError> {
        if let Some(name) = self.names.iter().find(|n| n.as_str().as_bytes() == bytes) {
            return Ok(name.clone());
        }
        let name = http::HeaderName::from_bytes(bytes)
            .map_err(|_| FrameError::Malformed("header name"))?;
        if self.names.len() < Self::NAMES {
            self.names.push(name.clone());
        }
        Ok(name)
    }
}

fn decode_with(buf: &mut BytesMut, names: &mut Decoder) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if length > MAX_FRAME {
        return Err(FrameError::TooLarge(length));
    }
    if buf.len() < 4 + length {
        buf.reserve(4 + length - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(length).freeze();
    let frame = parse(&mut body, names)?;
    if body.has_remaining() {
        return Err(FrameError::Malformed("bytes after the last field"));
    }
    Ok(Some(frame))
}

fn parse(b: &mut Bytes, names: &mut Decoder) -> Result<Frame, FrameError> {
    let kind = get_u8(b)?;
    let id = get_u64(b)?;
    match kind {
        KIND_REQUEST => {
            let method_len = get_u8(b)? as usize;
            let method = http::Method::from_bytes(&take(b, method_len)?)
                .map_err(|_| FrameError::Malformed("method"))?;
            let path_len = get_u32(b)? as usize;
            let path_and_query = String::from_utf8(take(b, path_len)?.to_vec())
                .map_err(|_| FrameError::Malformed("path is not UTF-8"))?;
            if !path_and_query.starts_with('/') {
                return Err(FrameError::Malformed("path does not start with /"));
            }
            let headers = get_headers(b, names)?;
            let body_len = get_u32(b)? as usize;
            let body = take(b, body_len)?;
            Ok(Frame::Request(
                id,
                LinkRequest {
                    method,
                    path_and_query,
                    headers,
                    body,
                },
            ))
        }
        KIND_RESPONSE => {
            let status = http::StatusCode::from_u16(get_u16(b)?)
                .map_err(|_| FrameError::Malformed("status"))?;
            let headers = get_headers(b, names)?;
            let body_len = get_u32(b)? as usize;
            let body = take(b, body_len)?;
            Ok(Frame::Response(
                id,
                LinkResponse {
                    status,
                    headers,
                    body,
                },
            ))
        }
        _ => Err(FrameError::Malformed("unknown frame kind")),
    }
}

fn get_headers(b: &mut Bytes, names: &mut Decoder) -> Result<http::HeaderMap, FrameError> {
    let count = get_u16(b)? as usize;
    let mut headers = http::HeaderMap::with_capacity(count);
    for _ in 0..count {
        let name_len = get_u16(b)? as usize;
        let name = names.name(&take(b, name_len)?)?;
        let value_len = get_u32(b)? as usize;
        let value = http::HeaderValue::from_maybe_shared(take(b, value_len)?)
            .map_err(|_| FrameError::Malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn take(b: &mut Bytes, n: usize) -> Result<Bytes, FrameError> {
    if b.remaining() < n {
        return Err(FrameError::Malformed("a field runs past the frame"));
    }
    Ok(b.split_to(n))
}

fn get_u8(b: &mut Bytes) -> Result<u8, FrameError> {
    if b.remaining() < 1 {
        return Err(FrameError::Malformed("truncated"));
    }
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, FrameError> {
    if b.remaining() < 2 {
        return Err(FrameError::Malformed("truncated"));
    }
    Ok(b.get_u16())
}

fn get_u32(b: &mut Bytes) -> Result<u32, FrameError> {
    if b.remaining() < 4 {
        return Err(FrameError::Malformed("truncated"));
    }
    Ok(b.get_u32())
}

fn get_u64(b: &mut Bytes) -> Result<u64, FrameError> {
    if b.remaining() < 8 {
        return Err(FrameError::Malformed("truncated"));
    }
    Ok(b.get_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Frame {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-many", "one".parse().unwrap());
        headers.append("x-many", "two".parse().unwrap());
        headers.insert(
            "x-bytes",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9 \x80").unwrap(),
        );
        Frame::Request(
            7,
            LinkRequest {
                method: http::Method::from_bytes(b"PATCH").unwrap(),
                path_and_query: "/objects/kv/a%20b?x=1&y=\u{e9}".into(),
                headers,
                body: Bytes::from_static(b"\x00\x01 body \xff"),
            },
        )
    }

    fn response() -> Frame {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-op-request-id", "r-1".parse().unwrap());
        Frame::Response(
            u64::MAX,
            LinkResponse {
                status: http::StatusCode::IM_A_TEAPOT,
                headers,
                body: Bytes::new(),
            },
        )
    }

    #[test]
    fn frames_round_trip_one_by_one_and_back_to_back() {
        let mut buf = BytesMut::new();
        for frame in [request(), response(), request()] {
            encode(&frame, &mut buf);
        }
        assert_eq!(decode(&mut buf).unwrap(), Some(request()));
        assert_eq!(decode(&mut buf).unwrap(), Some(response()));
        assert_eq!(decode(&mut buf).unwrap(), Some(request()));
        assert_eq!(decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_link_decoder_reuses_names_and_still_refuses_a_bad_one() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            encode(&request(), &mut buf);
            encode(&response(), &mut buf);
        }
        for _ in 0..3 {
            assert_eq!(decoder.decode(&mut buf).unwrap(), Some(request()));
            assert_eq!(decoder.decode(&mut buf).unwrap(), Some(response()));
        }
        // A name no station would send: the kept names do not let it through.
        let mut bad = request();
        if let Frame::Request(_, r) = &mut bad {
            r.headers
                .insert("x-ok", http::HeaderValue::from_static("1"));
        }
        encode(&bad, &mut buf);
        let at = buf
            .windows(4)
            .position(|w| w == b"x-ok")
            .expect("the name is in the frame");
        buf[at] = b' ';
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_frame_arriving_in_pieces_decodes_once_whole() {
        let mut whole = BytesMut::new();
        encode(&request(), &mut whole);
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            assert_eq!(decode(&mut buf).unwrap(), Some(request()), "cut at {cut}");
        }
    }

    #[test]
    fn damaged_frames_are_errors_not_guesses() {
        let mut good = BytesMut::new();
        encode(&request(), &mut good);
        // Too large a length.
        let mut buf = BytesMut::from(&((MAX_FRAME as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::TooLarge(_))));
        // Unknown kind.
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(matches!(decode(&mut bad), Err(FrameError::Malformed(_))));
        // A field length that runs past the frame: claim a longer path.
        let mut bad = good.clone();
        let path_len_at = 4 + 1 + 8 + 1 + 5;
        bad[path_len_at..path_len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&mut bad), Err(FrameError::Malformed(_))));
        // A frame shorter than its fields (the length field cut down).
        let mut bad = good.clone();
        let short = (good.len() - 4 - 3) as u32;
        bad[0..4].copy_from_slice(&short.to_be_bytes());
        assert!(matches!(decode(&mut bad), Err(FrameError::Malformed(_))));
        // Trailing bytes inside the frame.
        let mut bad = good.clone();
        let longer = (good.len() - 4 + 2) as u32;
        bad[0..4].copy_from_slice(&longer.to_be_bytes());
        bad.extend_from_slice(b"xx");
        assert!(matches!(decode(&mut bad), Err(FrameError::Malformed(_))));
    }
}
