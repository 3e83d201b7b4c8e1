//! The write-ahead log: an append-only sequence of checksummed records in segment files.
//!
//! Layout: `<wal-dir>/<sequence:020>.wal`, each file starting with an 8-byte magic, followed by
//! records of `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. A segment is
//! only ever appended to by the process that created it; a restart opens a new one, so a
//! torn tail left by a crash is never written after.
//!
//! This module knows bytes and files, not what the records mean; the write buffer decides
//! what to log and when to sync (group commit).
//!
//! Preallocation: a background thread writes zeros (and syncs them) a few MiB ahead of the
//! records, so that the fdatasync after each group of writes has data to flush but no change
//! of file size to journal: on ext4 that halves its latency, which every acknowledged write
//! waits for. A writer that stops in order cuts its segment back to its records; after a
//! crash, replay reads a record header of zeros as the end of the segment (no valid record
//! has an empty payload) and cuts the zeros off.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

const MAGIC: &[u8; 8] = b"SLUICEW1";
const HEADER_LEN: usize = 8;
/// A record larger than this is treated as corruption when reading: no valid write comes
/// close (request bodies are limited far below it).
const MAX_RECORD_BYTES: u32 = 1 << 30;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("WAL I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes of zeros written ahead of the records at a time.
const PREALLOCATE_BYTES: u64 = 4 << 20;
/// Room left for records between the end of the records and the zeros being written.
const PREALLOCATE_GAP: u64 = 1 << 20;

/// Appends records to the current segment and rolls to a new one past a size.
pub struct WalWriter {
    dir: PathBuf,
    file: Arc<File>,
    path: PathBuf,
    sequence: u64,
    size: u64,
    segment_bytes: u64,
    scratch: Vec<u8>,
    /// The current segment holds zeros (synced) up to here.
    allocated: u64,
    /// Where the zeros being written start: records must not reach it before they are done.
    zeroing_from: Option<u64>,
    zeroer: Option<Zeroer>,
}

/// The thread that writes zeros ahead of the records.
struct Zeroer {
    requests: mpsc::Sender<(Arc<File>, u64, u64)>,
    /// The end of each region zeroed and synced (or an error), in request order.
    done: mpsc::Receiver<io::Result<u64>>,
    thread: JoinHandle<()>,
}

impl Zeroer {
    fn start() -> io::Result<Zeroer> {
        let (requests, rx) = mpsc::channel::<(Arc<File>, u64, u64)>();
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-wal-zero".into())
            .spawn(move || {
                let zeros = vec![0u8; 1 << 20];
                while let Ok((file, from, to)) = rx.recv() {
                    let mut at = from;
                    let mut result = Ok(());
                    while at < to && result.is_ok() {
                        let n = (to - at).min(zeros.len() as u64);
                        result = file.write_all_at(&zeros[..n as usize], at);
                        at += n;
                    }
                    let result = result.and_then(|()| file.sync_data()).map(|()| to);
                    if tx.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Zeroer {
            requests,
            done,
            thread,
        })
    }
}

impl WalWriter {
    /// Opens a new segment in `dir` numbered after every existing one.
    pub fn create(dir: &Path, segment_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let sequence = list_segments(dir)?.last().map_or(1, |(seq, _)| seq + 1);
        let (file, path) = new_segment(dir, sequence)?;
        // without the zeroing thread the log works the same, only with slower fsyncs
        let zeroer = Zeroer::start()
            .inspect_err(|e| tracing::warn!("WAL preallocation thread did not start: {e}"))
            .ok();
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            path,
            sequence,
            size: HEADER_LEN as u64,
            segment_bytes,
            scratch: Vec::new(),
            allocated: HEADER_LEN as u64,
            zeroing_from: None,
            zeroer,
        })
    }

    /// Takes note of zeroing that finished; with `wait`, waits for the one under way.
    fn zeroing_done(&mut self, wait: bool) {
        let (Some(zeroer), Some(_)) = (&self.zeroer, self.zeroing_from) else {
            return;
        };
        let done = if wait {
            zeroer.done.recv().ok()
        } else {
            zeroer.done.try_recv().ok()
        };
        match done {
            Some(Ok(to)) => {
                self.allocated = self.allocated.max(to);
                self.zeroing_from = None;
            }
            Some(Err(e)) => {
                // harmless for the records: they are written and synced all the same
                tracing::warn!(path = %self.path.display(), "WAL preallocation failed: {e}");
                self.zeroing_from = None;
            }
            None if wait => self.zeroing_from = None,
            None => {}
        }
    }

    /// Asks for zeros ahead of the records once fewer than half a region of them is left.
    fn preallocate(&mut self) {
        let Some(zeroer) = &self.zeroer else { return };
        if self.zeroing_from.is_some()
            || self.allocated.saturating_sub(self.size) >= PREALLOCATE_BYTES / 2
        {
            return;
        }
        let from = self.allocated.max(self.size + PREALLOCATE_GAP);
        let to = (from + PREALLOCATE_BYTES).min(self.segment_bytes + PREALLOCATE_GAP);
        if to >= from + PREALLOCATE_BYTES / 4
            && zeroer.requests.send((self.file.clone(), from, to)).is_ok()
        {
            self.zeroing_from = Some(from);
        }
    }

    /// Ends writing to the current segment: waits for its zeroing and cuts the zeros off, so
    /// that a closed segment ends with its last record.
    fn finish_segment(&mut self) {
        self.zeroing_done(true);
        if self.allocated > self.size
            && let Err(e) = self.file.set_len(self.size)
        {
            // replay reads the zeros as the end of the segment and cuts them then
            tracing::warn!(path = %self.path.display(), "could not cut a WAL segment's preallocated zeros: {e}");
        }
        self.allocated = self.size;
    }

    /// Frames `payloads` as records and writes them with one system call. They are durable
    /// only after [`WalWriter::sync`].
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        if self.size >= self.segment_bytes {
            self.rotate()?;
        }
        self.scratch.clear();
        for p in payloads {
            self.scratch
                .extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.scratch
                .extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            self.scratch.extend_from_slice(p);
        }
        let end = self.size + self.scratch.len() as u64;
        self.zeroing_done(self.zeroing_from.is_some_and(|from| end > from));
        self.file
            .write_all_at(&self.scratch, self.size)
            .map_err(io_err(&self.path))?;
        self.size = end;
        self.preallocate();
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Makes the current segment durable and starts the next one. Returns the number of the
    /// segment just closed: every record appended so far is in it or an earlier one.
    pub fn rotate(&mut self) -> Result<u64> {
        self.sync()?;
        let closed = self.sequence;
        let (file, path) = new_segment(&self.dir, self.sequence + 1)?;
        self.finish_segment();
        self.sequence += 1;
        self.file = Arc::new(file);
        self.path = path;
        self.size = HEADER_LEN as u64;
        self.allocated = self.size;
        Ok(closed)
    }

    /// The segment being written.
    pub fn current_segment(&self) -> &Path {
        &self.path
    }

    /// The number of the segment being written.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.finish_segment();
        if let Some(zeroer) = self.zeroer.take() {
            drop(zeroer.requests);
            let _ = zeroer.thread.join();
        }
    }
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
}

fn new_segment(dir: &Path, sequence: u64) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, sequence);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(MAGIC).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    // The new file's directory entry must be durable too, or a crash could lose the segment.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok((file, path))
}

/// Segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// What replay found wrong at the end of a segment, which it cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutTail {
    pub segment: PathBuf,
    /// Where the good records end; the file was truncated to this length.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
    pub reason: String,
}

/// Deletes the segments numbered below `keep_from` (their records are all persisted).
/// Returns how many were deleted.
pub fn delete_before(dir: &Path, keep_from: u64) -> Result<usize> {
    let mut deleted = 0;
    for (seq, path) in list_segments(dir)? {
        if seq >= keep_from {
            break;
        }
        fs::remove_file(&path).map_err(io_err(&path))?;
        deleted += 1;
    }
    if deleted > 0 {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(deleted)
}

/// Reads every record of every segment in `dir`, oldest first, calling `each` with the
/// segment's number and the payload. A segment whose tail is torn or corrupt (short record,
/// bad checksum, bad magic) is truncated to its last good record and reported; records before
/// it are all delivered.
pub fn replay(dir: &Path, mut each: impl FnMut(u64, &[u8])) -> Result<Vec<CutTail>> {
    let mut cuts = Vec::new();
    for (seq, path) in list_segments(dir)? {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err(&path))?;
        let (good, reason) = scan(&data, &mut |payload| each(seq, payload));
        if reason.is_none() && good < data.len() {
            // preallocated zeros after the last record: the writer stopped without cutting them
            file.set_len(good as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        if let Some(reason) = reason {
            file.set_len(good as u64).map_err(io_err(&path))?;
            file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            cuts.push(CutTail {
                segment: path.clone(),
                offset: good as u64,
                bytes_cut: (data.len() - good) as u64,
                reason,
            });
        }
    }
    Ok(cuts)
}

/// Delivers the good records of one segment's bytes; returns where they end and, if the
/// segment does not end there, why (nothing when only preallocated zeros follow them).
fn scan(data: &[u8], each: &mut impl FnMut(&[u8])) -> (usize, Option<String>) {
    if data.len() < HEADER_LEN || &data[..HEADER_LEN] != MAGIC {
        return (0, Some("segment header is missing or damaged".into()));
    }
    let mut pos = HEADER_LEN;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 {
            return (
                pos,
                Some(format!("torn record header ({} bytes)", rest.len())),
            );
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 && crc == 0 {
            // no record is empty: this is where the preallocated zeros begin
            if rest.iter().all(|&b| b == 0) {
                return (pos, None);
            }
            return (
                pos,
                Some("a run of zeros followed by more data (a write torn by a crash)".into()),
            );
        }
        if len > MAX_RECORD_BYTES {
            return (pos, Some(format!("record length {len} is implausible")));
        }
        let end = 8 + len as usize;
        if rest.len() < end {
            return (
                pos,
                Some(format!(
                    "torn record: {} of {} payload bytes present",
                    rest.len() - 8,
                    len
                )),
            );
        }
        let payload = &rest[8..end];
        if crc32fast::hash(payload) != crc {
            return (pos, Some("record checksum mismatch".into()));
        }
        each(payload);
        pos += end;
    }
    (pos, None)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(w.rotate().unwrap(), 1);
        w.append([b"b".as_slice()]).unwrap();
        assert_eq!(w.rotate().unwrap(), 2);
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
        w.sync().unwrap();
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
        w.sync().unwrap();
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
        w.sync().unwrap();
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
    fn preallocated_zeros_are_the_end_of_a_segment_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 64 << 20).unwrap();
        let record = vec![7u8; 100_000];
        for _ in 0..20 {
            w.append([record.as_slice()]).unwrap();
        }
        w.sync().unwrap();
        w.zeroing_done(true);
        let seg = w.current_segment().to_path_buf();
        let records_end = w.size;
        assert!(w.allocated > records_end, "zeros were written ahead");
        // a crash: the writer never cuts its zeros
        std::mem::forget(w);
        assert!(fs::metadata(&seg).unwrap().len() > records_end);
        let (got, cuts) = read_all(dir.path());
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|r| *r == record));
        assert!(cuts.is_empty(), "{cuts:?}");
        assert_eq!(fs::metadata(&seg).unwrap().len(), records_end);
    }

    #[test]
    fn a_stopped_writer_leaves_its_segments_ending_with_their_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 64 << 20).unwrap();
        let record = vec![1u8; 300_000];
        for _ in 0..5 {
            w.append([record.as_slice()]).unwrap();
        }
        w.rotate().unwrap();
        w.append([b"last".as_slice()]).unwrap();
        w.sync().unwrap();
        drop(w);
        let sizes: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![8 + 5 * (8 + 300_000), 8 + 8 + 4]);
    }

    #[test]
    fn zeros_followed_by_data_are_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1 << 20).unwrap();
        w.append([b"good".as_slice()]).unwrap();
        w.sync().unwrap();
        let seg = w.current_segment().to_path_buf();
        drop(w);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0; 20]).unwrap();
        f.write_all(b"later bytes").unwrap();
        let (got, cuts) = read_all(dir.path());
        assert_eq!(got, vec![b"good".to_vec()]);
        assert_eq!(cuts.len(), 1);
        assert!(cuts[0].reason.contains("zeros followed"), "{cuts:?}");
        assert_eq!(cuts[0].bytes_cut, 31);
    }
}
