//! How batches become the bytes of `state.tsv`: a batch appended by the writer thread ([`encode_batch`]) and a
//! whole compacted or installed file ([`write_compacted`]). Reading them back is `recover.rs`.

use std::io;

use super::index::Row;
use super::types::Batch;
use crate::store::tsv;

/// The header row of `state.tsv`.
pub(super) const STATE_HEADER: [&str; 5] = ["seq", "hlc", "op", "key", "value"];

/// Encodes a batch: its records, each with its own hlc, then its commit line (with the greatest hlc and the
/// batch's chain hash `head`).
pub(super) fn encode_batch(batch: &Batch, head: &str) -> Vec<u8> {
    let seq = batch.seq.to_string();
    let mut out = Vec::with_capacity(64 * (batch.records.len() + 1));
    let mut w = tsv::writer(&mut out);
    // Records of a local commit share one hlc: format it once.
    let mut hlc_s = (u64::MAX, String::new());
    let mut put = |fields: [&str; 5]| w.write_record(fields).map_err(tsv::to_io);
    let mut max_hlc = 0;
    let result = batch
        .records
        .iter()
        .try_for_each(|r| {
            if hlc_s.0 != r.hlc {
                hlc_s = (r.hlc, r.hlc.to_string());
            }
            max_hlc = max_hlc.max(r.hlc);
            match &r.value {
                Some(value) => put([&seq, &hlc_s.1, "set", &r.key, value]),
                None => put([&seq, &hlc_s.1, "del", &r.key, ""]),
            }
        })
        .and_then(|()| {
            put([
                &seq,
                &max_hlc.to_string(),
                "commit",
                head,
                &batch.records.len().to_string(),
            ])
        })
        .and_then(|()| w.flush());
    // Writing into a Vec cannot fail.
    result.expect("encoding a batch into memory");
    drop(w);
    out
}

/// Writes a compacted state file: the header, then each seq's kept rows (each with its own hlc) followed by its
/// commit line (with the greatest hlc of those rows). Only the last commit line carries a chain hash, `head`
/// (the rows of earlier seqs are no longer whole batches, so their hashes could not be checked).
pub(crate) fn write_compacted(
    out: impl io::Write,
    rows: &[Row],
    head: Option<&str>,
) -> io::Result<()> {
    let mut w = tsv::writer(out);
    w.write_record(STATE_HEADER).map_err(tsv::to_io)?;
    let groups = rows.chunk_by(|a, b| a.seq == b.seq).count();
    for (n, group) in rows.chunk_by(|a, b| a.seq == b.seq).enumerate() {
        let seq_s = group[0].seq.to_string();
        let mut max_hlc = 0;
        for r in group {
            max_hlc = max_hlc.max(r.hlc);
            let hlc_s = r.hlc.to_string();
            match &r.value {
                Some(v) => w.write_record([&seq_s, &hlc_s, "set", &r.key, v]),
                None => w.write_record([&seq_s, &hlc_s, "del", &r.key, ""]),
            }
            .map_err(tsv::to_io)?;
        }
        let hash = if n + 1 == groups {
            head.unwrap_or("")
        } else {
            ""
        };
        w.write_record([
            &seq_s,
            &max_hlc.to_string(),
            "commit",
            hash,
            &group.len().to_string(),
        ])
        .map_err(tsv::to_io)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::recover::looks_like_commit_line;
    use super::super::types::Record;
    use super::*;

    #[test]
    fn encode_batch_shape() {
        let rec = |key: &str, value: Option<&str>, hlc| Record {
            key: key.into(),
            value: value.map(Into::into),
            hlc,
        };
        let batch = Batch {
            seq: 7,
            records: vec![rec("k", Some("v"), 42), rec("d", None, 42)],
            prev: None,
        };
        let head = batch.chain_hash();
        let bytes = encode_batch(&batch, &head);
        assert_eq!(
            bytes,
            format!("7\t42\tset\tk\tv\n7\t42\tdel\td\t\n7\t42\tcommit\t{head}\t2\n").as_bytes()
        );
        // Records of a replicated or merged batch keep their own hlc; the commit line has the greatest.
        let batch = Batch {
            seq: 8,
            records: vec![
                rec("a", Some("1"), 50),
                rec("b", None, 9),
                rec("c", Some(""), 50),
            ],
            prev: Some(head.clone()),
        };
        let next = batch.chain_hash();
        assert_ne!(next, head);
        let bytes = encode_batch(&batch, &next);
        assert_eq!(
            bytes,
            format!(
                "8\t50\tset\ta\t1\n8\t9\tdel\tb\t\n8\t50\tset\tc\t\n8\t50\tcommit\t{next}\t3\n"
            )
            .as_bytes()
        );
        assert!(looks_like_commit_line(b"7\t42\tcommit\t\t2"));
        assert!(looks_like_commit_line(
            format!("7\t42\tcommit\t{head}\t2").as_bytes()
        ));
        assert!(!looks_like_commit_line(b"7\t42\tcommit\tk\t2"));
        assert!(!looks_like_commit_line(b"7\t42\tset\t\t2"));
    }
}
