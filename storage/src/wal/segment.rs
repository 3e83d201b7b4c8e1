//! WAL segment files: an append-only sequence of checksummed records.
//!
//! Layout: `<wal-dir>/<sequence:020>.wal`, each file starting with an 8-byte magic, followed by
//! records of `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`. A segment is
//! only ever appended to by the process that created it; a restart opens a new one, so a
//! torn tail left by a crash is never written after.
//!
//! Space is zero-filled ahead of the records, a few megabytes at a time, as PostgreSQL fills
//! its WAL files (`wal_init_zero`). Writing into space the file already has changes no
//! metadata, so the fsync after each group is a data flush alone; an fsync after growing the
//! file must also commit the filesystem's journal, which on ext4 waits for the journal thread
//! and took 2.6 ms instead of 0.15 ms on a busy 2-core machine. A segment closed in order is
//! cut back to its records; after a crash, zeros follow the last record, and a record length
//! of zero (no record is empty) marks the end.
//!
//! This module knows bytes and files, not what the records mean (`record.rs`) nor when to
//! sync (`writer.rs`, group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SLUICEW1";
const HEADER_LEN: usize = 8;
/// A record larger than this is treated as corruption when reading: no valid write comes
/// close (request bodies are limited far below it).
const MAX_RECORD_BYTES: u32 = 1 << 30;
/// How far ahead of the records a segment is zero-filled (at most to the segment size).
const ZERO_AHEAD: u64 = 8 << 20;

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

/// Appends records to the current segment and rolls to a new one past a size.
///
/// A failed append or sync leaves the segment as it is (its torn end, if any, is cut at the
/// next start, as after a crash) and is never written after: after a failed fsync the file's
/// pages are in an unknown state, and a retried fsync may report success for data that is
/// gone. The next append opens a new segment, and fails while that cannot be done (the disk
/// is still full, no file descriptor is free).
pub struct WalWriter {
    dir: PathBuf,
    /// The open segment; `None` after a failed append or sync (segment `sequence` is opened
    /// by the next append).
    file: Option<File>,
    path: PathBuf,
    sequence: u64,
    /// Where the next record goes: the end of the records.
    size: u64,
    /// The file's length: zeros from `size` to here.
    zeroed: u64,
    segment_bytes: u64,
    scratch: Vec<u8>,
}

impl WalWriter {
    /// Opens a new segment in `dir` numbered after every existing one.
    pub fn create(dir: &Path, segment_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let sequence = list_segments(dir)?.last().map_or(1, |(seq, _)| seq + 1);
        let mut writer = WalWriter {
            dir: dir.to_path_buf(),
            file: None,
            path: segment_path(dir, sequence),
            sequence,
            size: HEADER_LEN as u64,
            zeroed: HEADER_LEN as u64,
            segment_bytes,
            scratch: Vec::new(),
        };
        writer.open()?;
        Ok(writer)
    }

    /// Opens segment `sequence` if none is open.
    pub fn open(&mut self) -> Result<()> {
        if self.file.is_none() {
            let (file, path) = new_segment(&self.dir, self.sequence)?;
            self.file = Some(file);
            self.path = path;
            self.size = HEADER_LEN as u64;
            self.zeroed = HEADER_LEN as u64;
        }
        Ok(())
    }

    /// Gives up the open segment after a failed write or sync: the next one is written.
    fn abandon<T>(&mut self, e: Error) -> Result<T> {
        if self.file.take().is_some() {
            self.sequence += 1;
        }
        Err(e)
    }

    /// Frames `payloads` as records and writes them with one system call. They are durable
    /// only after [`WalWriter::sync`].
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        if self.file.is_some() && self.size >= self.segment_bytes {
            self.rotate();
        }
        self.open()?;
        self.scratch.clear();
        for p in payloads {
            self.scratch
                .extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.scratch
                .extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            self.scratch.extend_from_slice(p);
        }
        let end = self.size + self.scratch.len() as u64;
        if end > self.zeroed {
            let ahead = end.max((self.zeroed + ZERO_AHEAD).min(self.segment_bytes));
            // short of room for the zeros ahead, the records alone may still fit
            if self.zero_fill(ahead).is_err()
                && let Err(e) = self.zero_fill(end)
            {
                return self.abandon(e);
            }
        }
        let file = self.file.as_ref().expect("opened above");
        if let Err(e) = file.write_all_at(&self.scratch, self.size) {
            return self.abandon(io_err(&self.path)(e));
        }
        self.size = end;
        Ok(())
    }

    /// Grows the file with zeros to `to` bytes.
    fn zero_fill(&mut self, to: u64) -> Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let file = self.file.as_ref().expect("called with a segment open");
        while self.zeroed < to {
            let n = (to - self.zeroed).min(ZEROS.len() as u64) as usize;
            file.write_all_at(&ZEROS[..n], self.zeroed)
                .map_err(io_err(&self.path))?;
            self.zeroed += n as u64;
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if let Err(e) = file.sync_data() {
            return self.abandon(io_err(&self.path)(e));
        }
        Ok(())
    }

    /// Closes the current segment (made durable and cut to its records, as far as the disk
    /// lets it) and starts the next one. Returns the number of the segment just closed: every
    /// record appended so far is in it or an earlier one. Does not fail: a segment that
    /// cannot be finished stays as it is (every record acknowledged in it was synced), and a
    /// next one that cannot be opened is opened by the next append.
    pub fn rotate(&mut self) -> u64 {
        if self.file.is_none() {
            return self.sequence - 1;
        }
        if let Err(e) = self.finish() {
            tracing::warn!("cannot finish WAL segment {}: {e}", self.path.display());
        }
        let closed = self.sequence;
        self.file = None;
        self.sequence += 1;
        if let Err(e) = self.open() {
            tracing::warn!("cannot open the next WAL segment; the next write tries again: {e}");
        }
        closed
    }

    /// Makes everything appended so far durable and cuts the segment's zero-filled space off:
    /// at shutdown, the segment ends with its last record.
    pub fn finish(&mut self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.zeroed > self.size {
            file.set_len(self.size).map_err(io_err(&self.path))?;
            self.zeroed = self.size;
        }
        file.sync_all().map_err(io_err(&self.path))
    }

    /// The segment being written (or last written).
    pub fn current_segment(&self) -> &Path {
        &self.path
    }

    /// The number of the segment being written, or, with none open, of the next one.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

/// Makes `dir`'s entries (files created or removed in it) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
}

fn new_segment(dir: &Path, sequence: u64) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, sequence);
    // (not in append mode: records are written at their offset, into zero-filled space)
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let made = file
        .write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(io_err(&path))
        // The new file's directory entry must be durable too, or a crash could lose the
        // segment.
        .and_then(|()| sync_dir(dir));
    if let Err(e) = made {
        // a half-made segment (no room for its header) is not left to be tried again
        let _ = fs::remove_file(&path);
        return Err(e);
    }
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

/// Bytes the segments in `dir` take on disk (the open segment with its zero-filled room).
pub fn bytes_on_disk(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for (_, path) in list_segments(dir)? {
        match fs::metadata(&path) {
            Ok(m) => total += m.len(),
            // deleted since it was listed
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(total)
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
        sync_dir(dir)?;
    }
    Ok(deleted)
}

/// Reads every record of every segment in `dir`, oldest first, calling `each` with the
/// segment's number and the payload. A segment whose tail is torn or corrupt (short record,
/// bad checksum, bad magic) is truncated to its last good record and reported; records before
/// it are all delivered. Zeros after the last record (space filled ahead of a crash) are the
/// segment's end, not damage.
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
/// segment does not end there, why.
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
        if len == 0 {
            // no record is empty: zero-filled space the records did not reach
            if rest.iter().all(|&b| b == 0) {
                return (pos, None);
            }
            return (pos, Some("an empty record, with data after it".into()));
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
mod tests;
