use super::*;

/// Reads bits most significant first: the decoder Prometheus's reader is, written apart
/// from the encoder so that the two check each other.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bit(&mut self) -> bool {
        let b = self.bytes[self.at / 8] & (0x80 >> (self.at % 8)) != 0;
        self.at += 1;
        b
    }

    fn bits(&mut self, n: u32) -> u64 {
        (0..n).fold(0, |acc, _| (acc << 1) | u64::from(self.bit()))
    }

    fn uvarint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..).step_by(7) {
            let b = self.bits(8);
            v |= (b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }
}

fn signed(v: u64, n: u32) -> i64 {
    if n < 64 && v >> (n - 1) & 1 == 1 {
        v as i64 - (1i64 << n)
    } else {
        v as i64
    }
}

fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
    let n = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    let mut r = Reader { bytes, at: 16 };
    let mut out: Vec<(i64, u64)> = Vec::new();
    let (mut delta, mut leading, mut trailing) = (0i64, 0u32, 0u32);
    for i in 0..n {
        if i == 0 {
            let z = r.uvarint();
            let t = ((z >> 1) as i64) ^ -((z & 1) as i64);
            out.push((t, r.bits(64)));
            continue;
        }
        if i == 1 {
            delta = r.uvarint() as i64;
        } else {
            let mut prefix = 0;
            while prefix < 4 && r.bit() {
                prefix += 1;
            }
            let dod = match prefix {
                0 => 0,
                1 => signed(r.bits(14), 14),
                2 => signed(r.bits(17), 17),
                3 => signed(r.bits(20), 20),
                _ => r.bits(64) as i64,
            };
            delta += dod;
        }
        let (pt, pv) = out[i - 1];
        let v = if !r.bit() {
            pv
        } else {
            if r.bit() {
                leading = r.bits(5) as u32;
                let mut significant = r.bits(6) as u32;
                if significant == 0 {
                    significant = 64;
                }
                trailing = 64 - leading - significant;
            }
            let significant = 64 - leading - trailing;
            pv ^ (r.bits(significant) << trailing)
        };
        out.push((pt + delta, v));
    }
    out
}

#[test]
fn chunks_decode_to_the_samples_they_were_made_of() {
    let mut t = Vec::new();
    let mut v = Vec::new();
    let mut x = 1_767_225_600_123i64;
    let mut seed = 7u64;
    for i in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // regular scrapes, jitter, long gaps and a step backwards in delta
        x += match i % 50 {
            0 => 3_600_000,
            7 => 1,
            _ => 15_000 + (seed >> 60) as i64 - 8,
        };
        t.push(x);
        v.push(match i % 7 {
            0 => f64::NAN,
            1 => f64::from_bits(sluice_model::staleness::STALE_NAN_BITS),
            2 => (seed >> 11) as f64 / 1e6,
            3 => -0.0,
            4 => f64::INFINITY,
            _ => i as f64,
        });
    }
    let chunks = xor_chunks(&t, &v);
    assert_eq!(chunks.len(), 3);
    let mut got = Vec::new();
    for (min, max, bytes) in &chunks {
        let samples = decode(bytes);
        assert_eq!((*min, *max), (samples[0].0, samples[samples.len() - 1].0));
        got.extend(samples);
    }
    let want: Vec<(i64, u64)> = t.iter().zip(&v).map(|(&t, v)| (t, v.to_bits())).collect();
    assert_eq!(got, want);
}

#[test]
fn frames_carry_the_length_and_castagnoli_checksum() {
    // CRC-32C of "123456789" is e3069283
    let f = frame(b"123456789");
    assert_eq!(f[0], 9);
    assert_eq!(&f[1..5], &0xe306_9283u32.to_be_bytes());
    assert_eq!(&f[5..], b"123456789");
    assert_eq!(frame(&[0u8; 300])[..2], [0xac, 0x02]);
}
