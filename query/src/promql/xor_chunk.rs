//! Prometheus's XOR chunks (Gorilla compression) and the frames of a streamed remote read
//! answer (`STREAMED_XOR_CHUNKS`), as `tsdb/chunkenc/xor.go` and `storage/remote/chunked.go`
//! write them.
//!
//! A chunk is a big-endian sample count (2 bytes), then a bit stream, most significant bit
//! first: the first time as a signed varint and value as 64 bits; the second time as an
//! unsigned varint delta; after that delta-of-deltas in 1, 16, 20, 24 or 68 bits; each value
//! after the first XORed with the previous one, written as 1 bit (equal), or its meaningful
//! bits within the previous leading/trailing zero window, or with a new window.

/// Samples per chunk, as Prometheus cuts them.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Bits written most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    /// Bits used of the last byte (0 = none, a new byte is needed).
    used: u8,
}

impl Bits {
    fn bit(&mut self, on: bool) {
        if self.used == 0 || self.used == 8 {
            self.bytes.push(0);
            self.used = 0;
        }
        if on {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.used;
        }
        self.used += 1;
    }

    /// The low `n` bits of `v`, the highest first.
    fn bits(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }

    fn byte(&mut self, b: u8) {
        self.bits(u64::from(b), 8);
    }

    fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    fn varint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
}

/// Whether `x` fits a signed field of `n` bits as Prometheus's `bitRange` decides it.
fn fits(x: i64, n: u32) -> bool {
    -((1i64 << (n - 1)) - 1) <= x && x <= 1i64 << (n - 1)
}

/// One chunk of at most [`SAMPLES_PER_CHUNK`] samples: (first time, last time, bytes).
fn chunk(t: &[i64], v: &[f64]) -> (i64, i64, Vec<u8>) {
    let mut b = Bits::default();
    b.bytes.extend_from_slice(&(t.len() as u16).to_be_bytes());
    b.used = 8;
    let (mut prev_t, mut prev_delta, mut prev_v) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0xffu32, 0u32);
    for (i, (&ti, &vi)) in t.iter().zip(v).enumerate() {
        let bits = vi.to_bits();
        match i {
            0 => {
                b.varint(ti);
                b.bits(bits, 64);
            }
            _ => {
                let delta = ti - prev_t;
                if i == 1 {
                    b.uvarint(delta as u64);
                } else {
                    let dod = delta - prev_delta;
                    if dod == 0 {
                        b.bit(false);
                    } else if fits(dod, 14) {
                        b.bits(0b10, 2);
                        b.bits(dod as u64, 14);
                    } else if fits(dod, 17) {
                        b.bits(0b110, 3);
                        b.bits(dod as u64, 17);
                    } else if fits(dod, 20) {
                        b.bits(0b1110, 4);
                        b.bits(dod as u64, 20);
                    } else {
                        b.bits(0b1111, 4);
                        b.bits(dod as u64, 64);
                    }
                }
                prev_delta = delta;
                let xor = bits ^ prev_v;
                if xor == 0 {
                    b.bit(false);
                } else {
                    b.bit(true);
                    let lead = xor.leading_zeros().min(31);
                    let trail = xor.trailing_zeros();
                    if leading != 0xff && lead >= leading && trail >= trailing {
                        b.bit(false);
                        b.bits(xor >> trailing, 64 - leading - trailing);
                    } else {
                        leading = lead;
                        trailing = trail;
                        b.bit(true);
                        b.bits(u64::from(lead), 5);
                        let significant = 64 - lead - trail;
                        // 64 significant bits are written as 0 (six bits hold 0-63)
                        b.bits(u64::from(significant % 64), 6);
                        b.bits(xor >> trail, significant);
                    }
                }
            }
        }
        prev_t = ti;
        prev_v = bits;
    }
    (t[0], t[t.len() - 1], b.bytes)
}

/// A series' samples as XOR chunks of at most [`SAMPLES_PER_CHUNK`] samples each:
/// (first time, last time, bytes).
pub fn xor_chunks(t: &[i64], v: &[f64]) -> Vec<(i64, i64, Vec<u8>)> {
    t.chunks(SAMPLES_PER_CHUNK)
        .zip(v.chunks(SAMPLES_PER_CHUNK))
        .map(|(t, v)| chunk(t, v))
        .collect()
}

/// CRC-32 with the Castagnoli polynomial, which the frames carry.
fn crc32c(bytes: &[u8]) -> u32 {
    const POLY: u32 = 0x82f6_3b78;
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One frame of a streamed answer: the message's length (unsigned varint), its CRC-32C
/// (big-endian), the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 14);
    let mut n = message.len() as u64;
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(&crc32c(message).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests;
