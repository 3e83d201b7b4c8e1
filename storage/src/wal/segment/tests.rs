//! Segment files: records come back in order, and a crash's damage is cut off.

use super::*;

fn read_all(dir: &Path) -> (Vec<Vec<u8>>, Vec<CutTail>) {
    let mut got = Vec::new();
    let cuts = replay(dir, |_, p| got.push(p.to_vec())).unwrap();
    (got, cuts)
}

#[test]
fn records_come_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 64).unwrap();
    for i in 0..10u8 {
        w.append([vec![i; 20].as_slice()]).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    // a restart writes to a new segment after the old ones
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"after".as_slice(), b"restart".as_slice()])
        .unwrap();
    w.sync().unwrap();
    let (got, cuts) = read_all(dir.path());
    assert!(cuts.is_empty());
    assert_eq!(got.len(), 12);
    assert_eq!(got[3], vec![3u8; 20]);
    assert_eq!(got[11], b"restart");
    assert!(list_segments(dir.path()).unwrap().len() > 2);
}

#[test]
fn rotation_closes_a_segment_and_old_segments_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"a".as_slice()]).unwrap();
    assert_eq!(w.rotate(), 1);
    w.append([b"b".as_slice()]).unwrap();
    assert_eq!(w.rotate(), 2);
    w.append([b"c".as_slice()]).unwrap();
    w.sync().unwrap();
    assert_eq!(w.sequence(), 3);
    let mut seen = Vec::new();
    replay(dir.path(), |seq, p| seen.push((seq, p.to_vec()))).unwrap();
    assert_eq!(
        seen,
        vec![(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())]
    );
    assert_eq!(delete_before(dir.path(), 3).unwrap(), 2);
    let (got, _) = read_all(dir.path());
    assert_eq!(got, vec![b"c".to_vec()]);
}

#[test]
fn torn_tail_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"one".as_slice(), b"two".as_slice(), b"three".as_slice()])
        .unwrap();
    w.finish().unwrap();
    let seg = w.current_segment().to_path_buf();
    drop(w);
    let full = fs::metadata(&seg).unwrap().len();
    // tear the last record in half
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(full - 3).unwrap();
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(cuts.len(), 1);
    assert!(cuts[0].reason.contains("torn"), "{:?}", cuts[0]);
    // the file was truncated, so a second replay is clean
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got.len(), 2);
    assert!(cuts.is_empty());
}

#[test]
fn corrupt_record_is_detected_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"good".as_slice(), b"flipped".as_slice()])
        .unwrap();
    w.finish().unwrap();
    let seg = w.current_segment().to_path_buf();
    drop(w);
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got, vec![b"good".to_vec()]);
    assert_eq!(cuts[0].reason, "record checksum mismatch");
    assert_eq!(cuts[0].bytes_cut, 8 + 7);
}

#[test]
fn garbage_length_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"good".as_slice()]).unwrap();
    w.finish().unwrap();
    let seg = w.current_segment().to_path_buf();
    drop(w);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2])
        .unwrap();
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got, vec![b"good".to_vec()]);
    assert!(cuts[0].reason.contains("implausible"));
}

#[test]
fn zeros_after_the_last_record_are_the_end_of_a_crashed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
    w.sync().unwrap();
    let seg = w.current_segment().to_path_buf();
    let records_end = HEADER_LEN as u64 + 2 * 8 + 6;
    // a crash: the writer goes away without finishing its segment
    drop(w);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        1 << 20,
        "zero-filled ahead"
    );
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(cuts.is_empty(), "{cuts:?}");
    // a record torn by the crash, zeros after it: cut at its start
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[9, 0, 0, 0, 1, 2, 3, 4, b'p', b'a'], records_end)
        .unwrap();
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got.len(), 2);
    assert_eq!(cuts.len(), 1);
    assert_eq!(cuts[0].offset, records_end);
    assert_eq!(cuts[0].reason, "record checksum mismatch");
    // zeros in the header with data after them are damage, not the end
    let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
    w.append([b"x".as_slice()]).unwrap();
    w.sync().unwrap();
    let seg = w.current_segment().to_path_buf();
    drop(w);
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(b"junk", 4096).unwrap();
    let (got, cuts) = read_all(dir.path());
    assert_eq!(got.last().unwrap(), b"x");
    assert!(cuts[0].reason.contains("empty record"), "{cuts:?}");
}

#[test]
fn finished_segments_end_with_their_last_record_and_large_records_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::create(dir.path(), 64 << 20).unwrap();
    let large = vec![7u8; (ZERO_AHEAD + 100) as usize];
    w.append([b"small".as_slice()]).unwrap();
    w.append([large.as_slice()]).unwrap();
    let first = w.current_segment().to_path_buf();
    assert_eq!(w.rotate(), 1);
    assert_eq!(
        fs::metadata(&first).unwrap().len(),
        HEADER_LEN as u64 + 8 + 5 + 8 + large.len() as u64
    );
    w.append([b"after".as_slice()]).unwrap();
    let second = w.current_segment().to_path_buf();
    w.finish().unwrap();
    assert_eq!(
        fs::metadata(&second).unwrap().len(),
        HEADER_LEN as u64 + 8 + 5
    );
    let (got, cuts) = read_all(dir.path());
    assert!(cuts.is_empty());
    assert_eq!(got, vec![b"small".to_vec(), large, b"after".to_vec()]);
}
