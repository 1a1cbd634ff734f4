//! The request-head check run on the bytes of a request as they arrive, before hyper parses
//! them: a head that is too large, has too many headers or is malformed is answered here with
//! the station's JSON error instead of hyper's bare one.

/// Largest request head (request line and headers), in bytes (→ 431).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most headers in one request (→ 431).
pub const MAX_HEADERS: usize = 100;

/// What the bytes seen so far make of the head.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The head has not ended yet and nothing is wrong so far.
    Incomplete,
    /// The head is complete and well-formed.
    Complete,
    /// Over [`MAX_HEAD_BYTES`].
    TooLarge,
    /// Over [`MAX_HEADERS`].
    TooManyHeaders,
    /// Not an HTTP/1.x request head; the parser's reason.
    Malformed(String),
}

/// The head of the request being received on one connection.
#[derive(Default)]
pub(super) struct HeadScan {
    /// Bytes of a head that arrived in several reads.
    partial: Vec<u8>,
    /// The head is complete: nothing more to check until the next request.
    done: bool,
}

impl HeadScan {
    /// Starts over for the next request.
    pub(super) fn reset(&mut self) {
        self.partial.clear();
        if self.partial.capacity() > 8 << 10 {
            self.partial = Vec::new();
        }
        self.done = false;
    }

    /// Whether the current head is complete.
    pub(super) fn done(&self) -> bool {
        self.done
    }

    /// Checks the head with `bytes` appended (bytes after its end are the body's and ignored).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Verdict {
        if self.done {
            return Verdict::Complete;
        }
        // The common case: the whole head in one read, checked without a copy.
        let verdict = if self.partial.is_empty() {
            check(bytes)
        } else {
            self.partial.extend_from_slice(bytes);
            check(&self.partial)
        };
        match verdict {
            Verdict::Incomplete if self.partial.is_empty() => self.partial.extend_from_slice(bytes),
            Verdict::Complete => {
                self.partial.clear();
                self.done = true;
            }
            _ => {}
        }
        verdict
    }
}

/// Parses `head` as hyper will (httparse, the same parser and defaults).
fn check(head: &[u8]) -> Verdict {
    // Uninitialised slots, as hyper uses: filling 100 empty headers per request costs more
    // than parsing the head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD_BYTES => Verdict::TooLarge,
        Ok(httparse::Status::Complete(_)) => match framing_error(&request) {
            Some(why) => Verdict::Malformed(why.to_string()),
            None => Verdict::Complete,
        },
        Ok(httparse::Status::Partial) if head.len() > MAX_HEAD_BYTES => Verdict::TooLarge,
        Ok(httparse::Status::Partial) => Verdict::Incomplete,
        Err(httparse::Error::TooManyHeaders) => Verdict::TooManyHeaders,
        Err(e) => Verdict::Malformed(e.to_string()),
    }
}

/// Whether `path` is an origin-form target (`/` then path and query) of bytes `http::Uri` always
/// accepts, so that the common request needs no `Uri` built (and copied) only to be checked.
fn plain_origin_form(path: &str) -> bool {
    path.starts_with('/')
        && path.len() < usize::from(u16::MAX) - 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/?=&%:@!$'()*+,;".contains(&b))
}

/// What hyper would refuse in a parsed head beyond the parser's own checks: the request target,
/// and the headers that frame the body.
fn framing_error(request: &httparse::Request<'_, '_>) -> Option<&'static str> {
    if request
        .path
        .is_none_or(|path| !plain_origin_form(path) && axum::http::Uri::try_from(path).is_err())
    {
        return Some("the request target is not a valid URI");
    }
    let mut length: Option<&str> = None;
    let mut last_coding: Option<String> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let Ok(value) = std::str::from_utf8(header.value) else {
                return Some("Content-Length is not a number");
            };
            for part in value.split(',').map(str::trim) {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 19 {
                    return Some("Content-Length is not a number");
                }
                let part = part.trim_start_matches('0');
                match length {
                    Some(seen) if seen != part => return Some("conflicting Content-Length values"),
                    _ => length = Some(part),
                }
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = String::from_utf8_lossy(header.value);
            if let Some(coding) = value.rsplit(',').map(str::trim).find(|c| !c.is_empty()) {
                last_coding = Some(coding.to_ascii_lowercase());
            }
        }
    }
    match last_coding {
        Some(coding) if coding != "chunked" => Some("Transfer-Encoding must end with chunked"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_taken_as_plain_is_one_the_uri_parser_accepts() {
        for b in 0..=255u8 {
            let Ok(path) = String::from_utf8(vec![b'/', b'a', b, b'?', b, b'=', b'1']) else {
                continue;
            };
            if plain_origin_form(&path) {
                assert!(axum::http::Uri::try_from(path.as_str()).is_ok(), "{path:?}");
            }
        }
        assert!(plain_origin_form("/objects/counter?state=true&x=%20"));
        assert!(!plain_origin_form("objects"));
        assert!(!plain_origin_form("/a b"));
    }

    #[test]
    fn a_head_in_one_read_or_byte_by_byte_is_complete() {
        let head = b"GET /objects/counter HTTP/1.1\r\nHost: x\r\n\r\nbody";
        assert_eq!(HeadScan::default().feed(head), Verdict::Complete);
        let mut scan = HeadScan::default();
        let verdicts: Vec<_> = head[..head.len() - 4]
            .iter()
            .map(|b| scan.feed(std::slice::from_ref(b)))
            .collect();
        assert!(
            verdicts[..verdicts.len() - 1]
                .iter()
                .all(|v| *v == Verdict::Incomplete)
        );
        assert_eq!(verdicts.last(), Some(&Verdict::Complete));
        assert!(scan.done());
        scan.reset();
        assert!(!scan.done());
        assert_eq!(scan.feed(b"GET / HTTP/1.1\r\n"), Verdict::Incomplete);
    }

    #[test]
    fn too_large_too_many_and_malformed_heads_are_named() {
        let big = format!(
            "GET / HTTP/1.1\r\nx-big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(HeadScan::default().feed(big.as_bytes()), Verdict::TooLarge);
        // Too large without ever ending, fed in pieces.
        let mut scan = HeadScan::default();
        let mut last = Verdict::Incomplete;
        for _ in 0..(MAX_HEAD_BYTES / 1000 + 2) {
            last = scan.feed(&[b'a'; 1000]);
            if last != Verdict::Incomplete {
                break;
            }
        }
        // A method made of 1000 'a's is a token still; the head just never ends.
        assert_eq!(last, Verdict::TooLarge);

        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            HeadScan::default().feed(many.as_bytes()),
            Verdict::TooManyHeaders
        );

        assert!(matches!(
            HeadScan::default().feed(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Verdict::Malformed(_)
        ));
        assert!(matches!(
            HeadScan::default().feed(b"\x16\x03\x01\x02\x00"),
            Verdict::Malformed(_)
        ));
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET http://[::1 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(
                    HeadScan::default().feed(bad.as_bytes()),
                    Verdict::Malformed(_)
                ),
                "{bad:?}"
            );
        }
        for good in [
            "POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 02\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "GET /a?b=c%20d HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                HeadScan::default().feed(good.as_bytes()),
                Verdict::Complete,
                "{good:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// A well-formed head, however the network splits it, is complete exactly at its end.
        #[test]
        fn a_head_split_anywhere_completes_at_its_end(
            path in "/[a-z0-9/?=&%]{0,40}",
            values in proptest::collection::vec("[ -~]{0,30}", 0..10),
            cuts in proptest::collection::vec(1usize..20, 0..40),
        ) {
            let mut head = format!("POST {path} HTTP/1.1\r\n");
            for (i, value) in values.iter().enumerate() {
                head.push_str(&format!("x-h{i}: {}\r\n", value.trim()));
            }
            head.push_str("\r\n");
            let bytes = head.as_bytes();
            let mut scan = HeadScan::default();
            let mut at = 0;
            for cut in cuts.iter().chain(std::iter::repeat(&7)) {
                let end = (at + cut).min(bytes.len());
                let verdict = scan.feed(&bytes[at..end]);
                at = end;
                if at == bytes.len() {
                    proptest::prop_assert_eq!(verdict, Verdict::Complete);
                    break;
                }
                proptest::prop_assert_eq!(verdict, Verdict::Incomplete);
            }
        }

        /// Any bytes in any pieces: a verdict, never a panic, and never past the size limit.
        #[test]
        fn any_bytes_get_a_verdict(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..20)
        ) {
            let mut scan = HeadScan::default();
            for chunk in &chunks {
                if scan.feed(chunk) != Verdict::Incomplete {
                    break;
                }
                proptest::prop_assert!(scan.partial.len() <= MAX_HEAD_BYTES + 300);
            }
        }
    }
}
