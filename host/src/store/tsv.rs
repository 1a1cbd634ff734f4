//! TSV encoding shared by every file the store writes: one place that decides the dialect.
//!
//! Every file is "real" TSV: a header row, tab-delimited fields, `\n` record terminators, and the `csv` crate's
//! `QuoteStyle::Necessary` quoting, so a field holding a tab, CR, LF or `"` is written in double quotes (with `"`
//! doubled) and everything else is written as is. Any string round-trips, and the files open in a spreadsheet or
//! `pandas.read_csv(sep="\t")`. Readers are `flexible`: each file's parser checks the field count itself so it
//! can tell a torn tail from a bad record.

use std::io::{self, Read, Write};

/// A writer in the store's TSV dialect. No header is written automatically.
pub(crate) fn writer<W: Write>(inner: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .delimiter(b'\t')
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1024)
        .from_writer(inner)
}

/// A reader in the store's TSV dialect. The header row is returned as an ordinary record.
pub(crate) fn reader<R: Read>(inner: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(inner)
}

/// Appends one TSV record (with its terminator) to `out`, byte for byte as [`writer`] writes it
/// (a test holds the two equal): fields joined by tabs, a field holding a tab, CR, LF or `"` in
/// double quotes with its `"` doubled, a record of no field or one empty field as `""`.
/// Encoded here rather than through a `csv::Writer` because every call writes two log lines,
/// and setting up a writer per line cost more than the line.
pub(crate) fn encode_record<I, T>(out: &mut Vec<u8>, fields: I)
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let start = out.len();
    let mut count = 0;
    for field in fields {
        let field = field.as_ref();
        if count > 0 {
            out.push(b'\t');
        }
        count += 1;
        if field
            .iter()
            .any(|&b| matches!(b, b'\t' | b'\r' | b'\n' | b'"'))
        {
            out.push(b'"');
            for &b in field {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(field);
        }
    }
    // No field, or one empty field, would be an empty line, which reads as no record.
    if count <= 1 && out.len() == start {
        out.extend_from_slice(b"\"\"");
    }
    out.push(b'\n');
}

/// The bytes of a header line (with its terminator) for `fields`.
pub(crate) fn header_line(fields: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, fields);
    out
}

/// Turns a `csv` error into an `io::Error` (a read or write error of the underlying file, or a TSV error).
pub(crate) fn to_io(e: csv::Error) -> io::Error {
    if e.is_io_error() {
        match e.into_kind() {
            csv::ErrorKind::Io(e) => e,
            other => io::Error::other(format!("{other:?}")),
        }
    } else {
        io::Error::new(io::ErrorKind::InvalidData, e.to_string())
    }
}

/// Field `i` of a record as UTF-8, or a reason why not.
pub(crate) fn field_str(rec: &csv::ByteRecord, i: usize, name: &str) -> Result<String, String> {
    let bytes = rec.get(i).ok_or_else(|| format!("missing field {name}"))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("field {name} is not UTF-8"))
}

/// Field `i` of a record as a decimal unsigned integer, or a reason why not.
pub(crate) fn field_u64(rec: &csv::ByteRecord, i: usize, name: &str) -> Result<u64, String> {
    let bytes = rec.get(i).ok_or_else(|| format!("missing field {name}"))?;
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "field {name} is not a number: {:?}",
            String::from_utf8_lossy(bytes)
        ));
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("field {name} is out of range"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The strings the store promises to round-trip: CR, LF, tab, quotes, backslash, empty, unicode.
    pub(crate) const HOSTILE: &[&str] = &[
        "",
        "plain",
        "tab\there",
        "line\nfeed",
        "carriage\rreturn",
        "crlf\r\n",
        "\"quoted\"",
        "\"",
        "back\\slash\\",
        "\\t\\n not escapes",
        "unicode é 漢字 🦀",
        " leading and trailing spaces ",
        "#comment-like",
        "\t\n\r\"\\",
        "\u{0}nul",
    ];

    #[test]
    fn hostile_fields_round_trip_through_the_dialect() {
        let mut out = Vec::new();
        for s in HOSTILE {
            encode_record(&mut out, [*s, "x", *s]);
        }
        let mut rdr = reader(out.as_slice());
        let mut rec = csv::ByteRecord::new();
        for s in HOSTILE {
            assert!(rdr.read_byte_record(&mut rec).unwrap());
            assert_eq!(rec.len(), 3);
            assert_eq!(field_str(&rec, 0, "a").unwrap(), *s);
            assert_eq!(field_str(&rec, 2, "c").unwrap(), *s);
        }
        assert!(!rdr.read_byte_record(&mut rec).unwrap());
    }

    #[test]
    fn records_are_encoded_as_the_csv_writer_encodes_them() {
        let mut records: Vec<Vec<&str>> = vec![vec![""], vec!["", ""], vec![]];
        for a in HOSTILE {
            records.push(vec![*a]);
            for b in HOSTILE {
                records.push(vec![*a, "x", *b, ""]);
            }
        }
        for record in records {
            let mut ours = Vec::new();
            encode_record(&mut ours, &record);
            let mut theirs = writer(Vec::new());
            theirs.write_record(&record).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs.into_inner().unwrap()),
                "{record:?}"
            );
        }
    }

    #[test]
    fn plain_fields_are_not_quoted() {
        assert_eq!(
            header_line(&["seq", "hlc", "op", "key", "value"]),
            b"seq\thlc\top\tkey\tvalue\n"
        );
        let mut out = Vec::new();
        encode_record(&mut out, ["1", "2", "commit", "", "3"]);
        assert_eq!(out, b"1\t2\tcommit\t\t3\n");
    }

    #[test]
    fn numbers_are_strict() {
        let rec = csv::ByteRecord::from(vec!["12", "+3", "", "1x"]);
        assert_eq!(field_u64(&rec, 0, "a"), Ok(12));
        assert!(field_u64(&rec, 1, "b").is_err());
        assert!(field_u64(&rec, 2, "c").is_err());
        assert!(field_u64(&rec, 3, "d").is_err());
        assert!(field_u64(&rec, 4, "e").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Any records of any strings (tabs, quotes, CR, LF, unicode) read back exactly.
        #[test]
        fn any_records_round_trip(records in proptest::collection::vec(
            proptest::collection::vec("\\PC*|[\t\r\n\"\\\\ a]*", 1..6), 1..8)
        ) {
            let mut bytes = Vec::new();
            for record in &records {
                encode_record(&mut bytes, record);
            }
            let mut rdr = reader(&bytes[..]);
            let mut got = Vec::new();
            for rec in rdr.byte_records() {
                let rec = rec.expect("a record the encoder wrote");
                got.push(rec.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect::<Vec<_>>());
            }
            proptest::prop_assert_eq!(got, records);
        }

        /// Arbitrary bytes never panic the reader (damaged files are reported, not crashed on).
        #[test]
        fn any_bytes_read_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            for rec in reader(&bytes[..]).byte_records() {
                let _ = rec;
            }
        }
    }
}
