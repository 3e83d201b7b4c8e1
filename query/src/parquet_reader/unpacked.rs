//! A Parquet file as scans see it with its ZSTD pages decompressed: the same rows, pages and
//! statistics, a footer whose column chunks say they are not compressed, and every page at a
//! new offset with its header saying so.
//!
//! The `parquet` crate makes a ZSTD compressor and decompressor for every column chunk a reader
//! opens (about 32 us on a VM, where the `cpuid` each runs traps to the hypervisor) and
//! decompresses a whole page to read a few rows of it. Served this way, a hot page is
//! decompressed once, kept in the page cache, and read with no codec at all.
//!
//! Only files the layout understands are served so: every column chunk has an offset index,
//! its pages are dictionary or version-1 data pages without checksums, and its codec is ZSTD
//! or none. Other files are read as written.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parquet::basic::Compression;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataBuilder};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};

/// Files larger than this are read as written: the layout reads every page header once.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// A page of the unpacked file: where it is there and where it was in the file.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// Its place in the unpacked file, header included.
    pub(crate) new: Range<u64>,
    /// Its place in the file as written, header included.
    pub(crate) old: Range<u64>,
    /// The header as served, if it differs from the written one (its length in the written
    /// file is `old_header_len`): a decompressed page's.
    pub(crate) header: Option<Bytes>,
    pub(crate) old_header_len: usize,
    /// Bytes of the page's data once decompressed (when `header` is set).
    pub(crate) uncompressed: usize,
}

/// The unpacked layout of one file.
#[derive(Debug)]
pub(crate) struct Unpacked {
    pub(crate) metadata: Arc<ParquetMetaData>,
    /// By `new.start`, without gaps between a column chunk's pages.
    pub(crate) pages: Vec<Page>,
}

impl Unpacked {
    /// The layout of the file with footer `metadata`, whose column chunks' bytes (each
    /// [`ColumnChunkMetaData::byte_range`], in row group then column order) are `chunks`;
    /// `None` if the file is not one the layout understands.
    pub(crate) fn of(metadata: &ParquetMetaData, chunks: &[Bytes]) -> Option<Unpacked> {
        let offsets = metadata.offset_index()?;
        let mut pages = Vec::new();
        let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
        let mut new_offsets = Vec::with_capacity(metadata.num_row_groups());
        // the unpacked file starts as the written one does, with the magic
        let mut at = 4u64;
        let mut chunk_bytes = chunks.iter();
        for (rg, rg_offsets) in metadata.row_groups().iter().zip(offsets) {
            let mut columns = Vec::with_capacity(rg.num_columns());
            let mut column_offsets = Vec::with_capacity(rg.num_columns());
            for (column, index) in rg.columns().iter().zip(rg_offsets) {
                let bytes = chunk_bytes.next()?;
                let (start, len) = column.byte_range();
                if bytes.len() as u64 != len {
                    return None;
                }
                let unpack = match column.compression() {
                    Compression::ZSTD(_) => true,
                    Compression::UNCOMPRESSED => false,
                    _ => return None,
                };
                let chunk_start = at;
                let locations = index.page_locations();
                // a dictionary page comes before the first data page
                let first = locations.first()?.offset as u64;
                let mut cuts: Vec<u64> = Vec::with_capacity(locations.len() + 1);
                if first > start {
                    cuts.push(start);
                }
                cuts.extend(locations.iter().map(|l| l.offset as u64));
                let mut new_locations = Vec::with_capacity(locations.len());
                let mut dictionary = None;
                for (i, &page_start) in cuts.iter().enumerate() {
                    let page_end = cuts.get(i + 1).copied().unwrap_or(start + len);
                    let raw =
                        bytes.get((page_start - start) as usize..(page_end - start) as usize)?;
                    let header = Header::parse(raw)?;
                    if header.len + header.compressed != raw.len() || header.crc {
                        return None;
                    }
                    let (served, uncompressed) = if unpack {
                        let patched = header.with_compressed_size(raw, header.uncompressed)?;
                        let size = patched.len() + header.uncompressed;
                        (Some(Bytes::from(patched)), size)
                    } else {
                        (None, raw.len())
                    };
                    let new = at..at + uncompressed as u64;
                    let is_dictionary = first > start && i == 0;
                    if is_dictionary {
                        dictionary = Some(new.start);
                    } else {
                        let old = &locations[i - usize::from(first > start)];
                        new_locations.push(PageLocation {
                            offset: new.start as i64,
                            compressed_page_size: (new.end - new.start) as i32,
                            first_row_index: old.first_row_index,
                        });
                    }
                    pages.push(Page {
                        new: new.clone(),
                        old: page_start..page_end,
                        header: served,
                        old_header_len: header.len,
                        uncompressed: header.uncompressed,
                    });
                    at = new.end;
                }
                let mut builder = column
                    .clone()
                    .into_builder()
                    .set_total_compressed_size((at - chunk_start) as i64)
                    .set_dictionary_page_offset(dictionary.map(|d| d as i64))
                    .set_data_page_offset(new_locations.first()?.offset)
                    .set_index_page_offset(None);
                if unpack {
                    builder = builder.set_compression(Compression::UNCOMPRESSED);
                }
                columns.push(builder.build().ok()?);
                column_offsets.push(OffsetIndexMetaData {
                    page_locations: new_locations,
                    unencoded_byte_array_data_bytes: index.unencoded_byte_array_data_bytes.clone(),
                });
            }
            let file_offset = columns.first().map(|c| c.byte_range().0 as i64);
            let mut builder = rg.clone().into_builder().set_column_metadata(columns);
            if let Some(offset) = file_offset {
                builder = builder.set_file_offset(offset);
            }
            row_groups.push(builder.build().ok()?);
            new_offsets.push(column_offsets);
        }
        let metadata = ParquetMetaDataBuilder::new_from_metadata(metadata.clone())
            .set_row_groups(row_groups)
            .set_offset_index(Some(new_offsets))
            .build();
        Some(Unpacked {
            metadata: Arc::new(metadata),
            pages,
        })
    }

    /// About the bytes it holds.
    pub(crate) fn memory_size(&self) -> usize {
        self.metadata.memory_size()
            + self.pages.len() * std::mem::size_of::<Page>()
            + self
                .pages
                .iter()
                .map(|p| p.header.as_ref().map_or(0, |h| h.len()))
                .sum::<usize>()
    }

    /// The pages that `range` of the unpacked file covers, by index.
    pub(crate) fn pages_in(&self, range: &Range<u64>) -> Range<usize> {
        let first = self.pages.partition_point(|p| p.new.end <= range.start);
        let end = self.pages.partition_point(|p| p.new.start < range.end);
        first..end.max(first)
    }

    /// `page` as served, from its written bytes `old` (header included).
    pub(crate) fn serve(page: &Page, old: &[u8]) -> Option<Bytes> {
        if old.len() as u64 != page.old.end - page.old.start {
            return None;
        }
        let Some(header) = &page.header else {
            return Some(Bytes::copy_from_slice(old));
        };
        let mut out = BytesMut::with_capacity(header.len() + page.uncompressed);
        out.extend_from_slice(header);
        let compressed = old.get(page.old_header_len..)?;
        let data = DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            let d = d.as_mut()?;
            d.decompress(compressed, page.uncompressed).ok()
        })?;
        if data.len() != page.uncompressed {
            return None;
        }
        out.extend_from_slice(&data);
        Some(out.freeze())
    }
}

thread_local! {
    /// One ZSTD context per thread, made once: what the layout saves every reader.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().ok());
}

/// What the layout needs of a page header (thrift compact protocol).
#[derive(Debug)]
struct Header {
    /// Bytes of the header.
    len: usize,
    uncompressed: usize,
    compressed: usize,
    /// Where the value of field 3 (`compressed_page_size`) is.
    compressed_at: Range<usize>,
    /// Whether it carries a checksum (of the compressed bytes).
    crc: bool,
}

impl Header {
    fn parse(buf: &[u8]) -> Option<Header> {
        let mut r = Reader { buf, at: 0 };
        let mut last = 0i16;
        let (mut uncompressed, mut compressed, mut compressed_at, mut crc) =
            (None, None, None, false);
        let mut page_type = None;
        loop {
            let byte = r.byte()?;
            if byte == 0 {
                break;
            }
            let kind = byte & 0x0f;
            let delta = (byte >> 4) as i16;
            let id = if delta == 0 {
                r.zigzag()? as i16
            } else {
                last + delta
            };
            last = id;
            match (id, kind) {
                (1, 5) => page_type = Some(r.zigzag()?),
                (2, 5) => uncompressed = Some(r.zigzag()?),
                (3, 5) => {
                    let start = r.at;
                    compressed = Some(r.zigzag()?);
                    compressed_at = Some(start..r.at);
                }
                (4, _) => {
                    crc = true;
                    r.skip(kind)?;
                }
                _ => r.skip(kind)?,
            }
        }
        // data page (0) and dictionary page (2) only
        if !matches!(page_type, Some(0) | Some(2)) {
            return None;
        }
        Some(Header {
            len: r.at,
            uncompressed: usize::try_from(uncompressed?).ok()?,
            compressed: usize::try_from(compressed?).ok()?,
            compressed_at: compressed_at?,
            crc,
        })
    }

    /// The header (the first `self.len` bytes of `raw`) with `compressed_page_size` `size`.
    fn with_compressed_size(&self, raw: &[u8], size: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len + 2);
        out.extend_from_slice(raw.get(..self.compressed_at.start)?);
        let v = i64::try_from(size).ok()?;
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                break;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.extend_from_slice(raw.get(self.compressed_at.end..self.len)?);
        Some(out)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.buf.len()).then(|| self.at = end)
    }

    /// Skips a value of compact type `kind`, nested at most a few levels.
    fn skip(&mut self, kind: u8) -> Option<()> {
        self.skip_nested(kind, 0)
    }

    fn skip_nested(&mut self, kind: u8, depth: u8) -> Option<()> {
        if depth > 8 {
            return None;
        }
        match kind {
            1 | 2 => Some(()),
            3 => self.advance(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.advance(8),
            8 => {
                let n = usize::try_from(self.varint()?).ok()?;
                self.advance(n)
            }
            9 | 10 => {
                let head = self.byte()?;
                let n = match head >> 4 {
                    15 => usize::try_from(self.varint()?).ok()?,
                    n => n as usize,
                };
                let elem = head & 0x0f;
                for _ in 0..n {
                    // booleans in a list are a byte each
                    if matches!(elem, 1 | 2) {
                        self.advance(1)?;
                    } else {
                        self.skip_nested(elem, depth + 1)?;
                    }
                }
                Some(())
            }
            11 => {
                let n = usize::try_from(self.varint()?).ok()?;
                if n == 0 {
                    return Some(());
                }
                let kinds = self.byte()?;
                for _ in 0..n {
                    self.skip_nested(kinds >> 4, depth + 1)?;
                    self.skip_nested(kinds & 0x0f, depth + 1)?;
                }
                Some(())
            }
            12 => loop {
                let byte = self.byte()?;
                if byte == 0 {
                    return Some(());
                }
                if byte >> 4 == 0 {
                    self.zigzag()?;
                }
                self.skip_nested(byte & 0x0f, depth + 1)?;
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
