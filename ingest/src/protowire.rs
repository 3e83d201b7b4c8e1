//! Reading protobuf wire format in place: field keys, varints, fixed-width numbers and
//! length-delimited slices borrowed from the message, with no allocation. The remote write
//! and OTLP decoders walk their messages with it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the message ends in the middle of a field at byte {0}")]
    Truncated(usize),
    #[error("a varint longer than 10 bytes at byte {0}")]
    LongVarint(usize),
    #[error("unsupported wire type {0} at byte {1}")]
    WireType(u64, usize),
    #[error("a string that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// A message that is well-formed protobuf but breaks its own rules.
    #[error("{0}")]
    Invalid(String),
}

/// A protobuf reader over one message's bytes.
pub(crate) struct Reader<'b> {
    buf: &'b [u8],
    /// The offset of the next byte to read.
    pub(crate) pos: usize,
}

impl<'b> Reader<'b> {
    pub(crate) fn new(buf: &'b [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        // keys, lengths and label references are nearly always one byte
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let mut v = 0u64;
        for (i, &b) in rest.iter().take(10).enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        if rest.len() < 10 {
            Err(WireError::Truncated(self.pos + rest.len()))
        } else {
            Err(WireError::LongVarint(self.pos + 10))
        }
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<Option<(u64, WireType)>, WireError> {
        if self.done() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Len,
            5 => WireType::Fixed32,
            w => return Err(WireError::WireType(w, at)),
        };
        Ok(Some((key >> 3, wire)))
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'b [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Result<&'b [u8], WireError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| WireError::Truncated(self.pos))?)
    }

    pub(crate) fn str(&mut self) -> Result<&'b str, WireError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::NotUtf8(at))
    }

    #[inline]
    pub(crate) fn fixed64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    #[inline]
    pub(crate) fn skip(&mut self, wire: WireType) -> Result<(), WireError> {
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::Fixed64 => self.take(8).map(drop),
            WireType::Len => self.bytes().map(drop),
            WireType::Fixed32 => self.take(4).map(drop),
        }
    }
}

/// Reads a length-delimited field (a message, string or bytes).
#[inline]
pub fn len<'b>(r: &mut Reader<'b>, wire: WireType) -> Result<&'b [u8], WireError> {
    if wire != WireType::Len {
        return Err(WireError::Invalid(format!(
            "a message field has wire type {wire:?}, not length-delimited"
        )));
    }
    r.bytes()
}

/// Reads a string field.
#[inline]
pub fn string<'b>(r: &mut Reader<'b>, wire: WireType) -> Result<&'b str, WireError> {
    if wire != WireType::Len {
        return Err(WireError::Invalid(format!(
            "a string field has wire type {wire:?}, not length-delimited"
        )));
    }
    r.str()
}

/// Calls `f` with each 8-byte little-endian value of a packed field.
#[inline]
pub fn fixed64s(bytes: &[u8], mut f: impl FnMut(u64)) -> Result<(), WireError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(WireError::Invalid(format!(
            "a packed fixed64 field of {} bytes (not a multiple of 8)",
            bytes.len()
        )));
    }
    for c in bytes.chunks_exact(8) {
        f(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    Ok(())
}

/// prost's error for a message decoded in place.
#[inline]
pub fn invalid(e: prost::DecodeError) -> WireError {
    WireError::Invalid(e.to_string())
}
