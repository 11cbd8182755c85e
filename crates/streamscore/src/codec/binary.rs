//! Avro binary primitives read off a byte slice the way apache-avro 0.21's
//! `from_avro_datum` reads them, so the compiled plan accepts and refuses
//! exactly the datums the library does.
//!
//! That includes the library's leniencies at the end of the datum, kept on
//! purpose (the plan must agree with the oracle): a boolean with no byte left
//! reads as null; a string whose declared length runs past the end reads as
//! null and consumes the rest; a union whose index runs out of bytes reads as
//! null. Every length is checked against apache-avro's allocation limit
//! before it is compared with what is left, as the library does, and nothing
//! here allocates.

/// Why a datum cannot be read. Each is a `decode_failed` dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BinaryError {
    #[error("the datum ends inside {0}")]
    Eof(&'static str),
    #[error("a variable-length integer runs past 10 bytes")]
    Overlong,
    #[error("int {0} is out of the 32-bit range")]
    IntRange(i64),
    #[error("negative length {0}")]
    NegativeLength(i64),
    #[error("length {len} is over the allocation limit of {max} bytes")]
    TooLong { len: u64, max: usize },
    #[error("boolean byte {0} is neither 0 nor 1")]
    Boolean(u8),
    #[error("string is not UTF-8")]
    Utf8,
    #[error("union index {index} but the union has {variants} variants")]
    UnionIndex { index: i64, variants: usize },
    #[error("enum index {index} but the enum has {symbols} symbols")]
    EnumIndex { index: i64, symbols: usize },
    #[error("a block count of i64::MIN cannot be negated")]
    BlockOverflow,
    #[error("a map key runs past the end of the datum")]
    MapKey,
}

/// Where a varint stopped short.
enum VarintError {
    Eof,
    Overlong,
}

/// The unread rest of one datum, and the length limit apache-avro enforces.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
    max_len: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(datum: &'a [u8], max_len: usize) -> Self {
        Self {
            rest: datum,
            max_len,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            // As `Read for &[u8]` does on a short `read_exact`: the rest is gone.
            self.rest = &[];
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    /// Up to ten 7-bit groups, low first; bits past the 64th are dropped, as
    /// the library drops them, and an eleventh byte is refused.
    fn varint(&mut self) -> Result<u64, VarintError> {
        let mut value = 0u64;
        for group in 0..10 {
            let b = self.byte().ok_or(VarintError::Eof)?;
            value |= u64::from(b & 0x7f) << (group * 7);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(VarintError::Overlong)
    }

    fn zigzag(&mut self, what: &'static str) -> Result<i64, BinaryError> {
        match self.varint() {
            Ok(z) => Ok(unzigzag(z)),
            Err(VarintError::Eof) => Err(BinaryError::Eof(what)),
            Err(VarintError::Overlong) => Err(BinaryError::Overlong),
        }
    }

    pub(crate) fn long(&mut self) -> Result<i64, BinaryError> {
        self.zigzag("a long")
    }

    pub(crate) fn int(&mut self) -> Result<i32, BinaryError> {
        let n = self.zigzag("an int")?;
        i32::try_from(n).map_err(|_| BinaryError::IntRange(n))
    }

    /// `None`: no byte was left (the library's null).
    pub(crate) fn boolean(&mut self) -> Result<Option<bool>, BinaryError> {
        match self.byte() {
            None => Ok(None),
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            Some(b) => Err(BinaryError::Boolean(b)),
        }
    }

    pub(crate) fn float(&mut self) -> Result<f32, BinaryError> {
        let b = self.take(4).ok_or(BinaryError::Eof("a float"))?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn double(&mut self) -> Result<f64, BinaryError> {
        let b = self.take(8).ok_or(BinaryError::Eof("a double"))?;
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        Ok(f64::from_le_bytes(le))
    }

    /// A bytes or string length: not negative and within the allocation limit.
    fn len(&mut self, what: &'static str) -> Result<usize, BinaryError> {
        let n = self.zigzag(what)?;
        let len = u64::try_from(n).map_err(|_| BinaryError::NegativeLength(n))?;
        match usize::try_from(len) {
            Ok(len) if len <= self.max_len => Ok(len),
            _ => Err(BinaryError::TooLong {
                len,
                max: self.max_len,
            }),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], BinaryError> {
        let len = self.len("a bytes length")?;
        self.take(len).ok_or(BinaryError::Eof("bytes"))
    }

    /// `None`: the declared length runs past the end (the library's null;
    /// the rest of the datum is consumed).
    pub(crate) fn string(&mut self) -> Result<Option<&'a str>, BinaryError> {
        let len = self.len("a string length")?;
        match self.take(len) {
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| BinaryError::Utf8),
            None => Ok(None),
        }
    }

    pub(crate) fn fixed(&mut self, size: usize) -> Result<(), BinaryError> {
        self.take(size).map(drop).ok_or(BinaryError::Eof("a fixed"))
    }

    pub(crate) fn enum_index(&mut self, symbols: usize) -> Result<usize, BinaryError> {
        let i = self.int()?;
        usize::try_from(i)
            .ok()
            .filter(|&i| i < symbols)
            .ok_or(BinaryError::EnumIndex {
                index: i64::from(i),
                symbols,
            })
    }

    /// `None`: the index runs out of bytes (the library's union of null).
    pub(crate) fn union_index(&mut self, variants: usize) -> Result<Option<usize>, BinaryError> {
        let index = match self.varint() {
            Ok(z) => unzigzag(z),
            Err(VarintError::Eof) => return Ok(None),
            Err(VarintError::Overlong) => return Err(BinaryError::Overlong),
        };
        usize::try_from(index)
            .ok()
            .filter(|&i| i < variants)
            .map(Some)
            .ok_or(BinaryError::UnionIndex { index, variants })
    }

    /// The item count of the next array or map block; 0 ends the sequence. A
    /// negative count is followed by the block's size in bytes, which is read
    /// and ignored.
    pub(crate) fn block_len(&mut self) -> Result<usize, BinaryError> {
        let raw = self.zigzag("a block count")?;
        let count = match raw {
            0 => return Ok(0),
            n if n < 0 => {
                self.zigzag("a block size")?;
                n.checked_neg().ok_or(BinaryError::BlockOverflow)?
            }
            n => n,
        };
        // Positive here, so the conversion holds; the limit is the library's.
        let count = count.unsigned_abs();
        match usize::try_from(count) {
            Ok(n) if n <= self.max_len => Ok(n),
            _ => Err(BinaryError::TooLong {
                len: count,
                max: self.max_len,
            }),
        }
    }
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(bytes: &[u8]) -> Cursor<'_> {
        Cursor::new(bytes, 1024)
    }

    #[test]
    fn zigzag_varints_read_as_the_spec_writes_them() {
        for (bytes, n) in [
            (&[0x00][..], 0i64),
            (&[0x01], -1),
            (&[0x02], 1),
            (&[0x7f], -64),
            (&[0x80, 0x01], 64),
            (
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                i64::MAX,
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                i64::MIN,
            ),
        ] {
            assert_eq!(cursor(bytes).long(), Ok(n), "{bytes:?}");
        }
    }

    #[test]
    fn an_eleventh_varint_byte_is_refused_and_a_short_one_is_eof() {
        assert_eq!(cursor(&[0x80; 11]).long(), Err(BinaryError::Overlong));
        assert_eq!(
            cursor(&[0x80, 0x80]).long(),
            Err(BinaryError::Eof("a long"))
        );
        assert_eq!(
            cursor(&[0x80, 0x80, 0x80, 0x80, 0x10]).int(),
            Err(BinaryError::IntRange(1 << 31))
        );
    }

    #[test]
    fn lengths_past_the_limit_are_refused_before_the_end_is_looked_at() {
        // 2048, zigzagged: over the 1024 limit, with nothing after it.
        assert_eq!(
            cursor(&[0x80, 0x20]).bytes(),
            Err(BinaryError::TooLong {
                len: 2048,
                max: 1024
            })
        );
        assert_eq!(
            cursor(&[0x03]).string(),
            Err(BinaryError::NegativeLength(-2))
        );
        // At the limit exactly, a length is allowed (and runs past the end).
        assert_eq!(cursor(&[0x80, 0x10]).string(), Ok(None));
        assert_eq!(
            cursor(&[0x82, 0x10]).string(),
            Err(BinaryError::TooLong {
                len: 1025,
                max: 1024
            })
        );
    }

    #[test]
    fn the_librarys_end_of_datum_nulls_are_kept() {
        assert_eq!(cursor(&[]).boolean(), Ok(None));
        let mut c = cursor(&[0x0a, b'a', b'b']);
        assert_eq!(c.string(), Ok(None));
        assert_eq!(c.remaining(), 0);
        assert_eq!(cursor(&[0x80]).union_index(2), Ok(None));
        assert_eq!(
            cursor(&[0x0a, b'a']).bytes(),
            Err(BinaryError::Eof("bytes"))
        );
    }
}
