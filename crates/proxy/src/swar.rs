//! Byte checks eight at a time in a `u64` (SWAR: SIMD within a register), for the bytes every
//! request's fields pass through, where a loop over bytes costs several instructions a byte.
//! Each test says whether *any* byte of a word matches, exactly: the borrows and carries of
//! the arithmetic start only at a byte that matches, so they never make a match of nothing.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Whether `bad` holds for any word of `bytes` (a short one padded with `pad`, a byte `bad`
/// must not flag). Words overlap where the length is not a multiple of eight: a byte looked
/// at twice changes nothing, and no copy of a variable length is made (a call to `memcpy`
/// costs more than the test of a field name).
#[inline]
pub(crate) fn any(bytes: &[u8], pad: u8, bad: impl Fn(u64) -> bool) -> bool {
    let n = bytes.len();
    if n < 8 {
        return bad(short_word(bytes, pad));
    }
    let mut chunks = bytes.chunks_exact(8);
    let mut found = false;
    for chunk in &mut chunks {
        found |= bad(word(chunk));
    }
    if !chunks.remainder().is_empty() {
        found |= bad(word(&bytes[n - 8..]));
    }
    found
}

/// Eight bytes as a word.
#[inline]
fn word(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

/// Fewer than eight bytes as a word, the bytes past them `pad`: from two reads that overlap.
#[inline]
fn short_word(bytes: &[u8], pad: u8) -> u64 {
    let n = bytes.len();
    let pads = ONES * u64::from(pad);
    let (low, high, width) = match n {
        0 => return pads,
        1 => return pads << 8 | u64::from(bytes[0]),
        2 | 3 => {
            (u64::from(u16::from_le_bytes(array(bytes, 0))), u64::from(u16::from_le_bytes(array(bytes, n - 2))), 2)
        }
        _ => (u64::from(u32::from_le_bytes(array(bytes, 0))), u64::from(u32::from_le_bytes(array(bytes, n - 4))), 4),
    };
    low | high << ((n - width) * 8) | pads << (n * 8)
}

/// The `N` bytes at `at`.
#[inline]
fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes.get(at..at + N).and_then(|b| <[u8; N]>::try_from(b).ok()).unwrap_or([0; N])
}

/// Whether a byte of `x` is `b`.
#[inline]
pub(crate) fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (ONES * u64::from(b)), 1)
}

/// Whether a byte of `x` is below `n` (`n` at most 128).
#[inline]
pub(crate) fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0
}

/// Whether a byte of `x` is above `n` (`n` at most 127; bytes of 128 and more count).
#[inline]
pub(crate) fn has_more(x: u64, n: u8) -> bool {
    (x.wrapping_add(ONES * u64::from(127 - n)) | x) & HIGHS != 0
}

/// Whether a byte of `x` is above `m` and below `n` (`m` at most 127, `n` at most 128).
#[inline]
pub(crate) fn has_between(x: u64, m: u8, n: u8) -> bool {
    let low = x & LOW7;
    (ONES * (127 + u64::from(n))).wrapping_sub(low) & !x & low.wrapping_add(ONES * u64::from(127 - m)) & HIGHS != 0
}

/// Whether `bytes` is `known` in any case, `known` being lowercase letters, digits and `-`
/// (a header name the proxy acts on), eight bytes at a time. A word of `bytes` may differ from
/// `known`'s only in bit 5 of a letter's byte (`A` is `a` without it); letters are the bytes
/// of `known` with bit 6 set, which digits and `-` lack. Exact for any `bytes`.
pub(crate) fn eq_lowercase(bytes: &[u8], known: &[u8]) -> bool {
    debug_assert!(known.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'), "{known:?}");
    if bytes.len() != known.len() {
        return false;
    }
    let same = |x: u64, k: u64| (x ^ k) & !((k & (ONES * 0x40)) >> 1) == 0;
    let mut at = 0;
    while at + 8 <= known.len() {
        if !same(u64::from_le_bytes(array(bytes, at)), u64::from_le_bytes(array(known, at))) {
            return false;
        }
        at += 8;
    }
    let (mut x, mut k) = ([0u8; 8], [0u8; 8]);
    x[..known.len() - at].copy_from_slice(&bytes[at..]);
    k[..known.len() - at].copy_from_slice(&known[at..]);
    same(u64::from_le_bytes(x), u64::from_le_bytes(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq_lowercase_is_eq_ignore_ascii_case() {
        for known in ["te", "host", "content-length", "x-amzn-lattice-", "x-forwarded-port", "h2c", "0123456789-abc"] {
            let mut bytes = known.as_bytes().to_vec();
            assert!(eq_lowercase(&bytes, known.as_bytes()));
            assert!(eq_lowercase(known.to_ascii_uppercase().as_bytes(), known.as_bytes()));
            assert!(!eq_lowercase(&bytes[1..], known.as_bytes()));
            // Every byte in every place: the same answer as the byte-wise comparison.
            for at in 0..bytes.len() {
                let keep = bytes[at];
                for b in 0..=255u8 {
                    bytes[at] = b;
                    assert_eq!(
                        eq_lowercase(&bytes, known.as_bytes()),
                        bytes.eq_ignore_ascii_case(known.as_bytes()),
                        "{known} {at} {b}"
                    );
                }
                bytes[at] = keep;
            }
        }
    }

    /// A test's name, the test of words, and what it must find in one byte.
    type Case = (&'static str, fn(u64) -> bool, fn(u8) -> bool);

    /// Every byte value at every place of words (and of a short last word), among good bytes,
    /// against the plain definition.
    #[test]
    fn each_test_finds_exactly_the_bytes_it_should() {
        let tests: [Case; 5] = [
            ("byte ':'", |x| has_byte(x, b':'), |b| b == b':'),
            ("byte 0", |x| has_byte(x, 0), |b| b == 0),
            ("less than 0x21", |x| has_less(x, 0x21), |b| b < 0x21),
            ("more than 0x7e", |x| has_more(x, 0x7e), |b| b > 0x7e),
            ("between 0x40 and 0x5b", |x| has_between(x, 0x40, 0x5b), |b| b > 0x40 && b < 0x5b),
        ];
        for (what, word_test, byte_test) in tests {
            assert!(!any(&[], b'a', word_test), "{what}: nothing");
            for len in 1..=17 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![b'a'; len];
                        bytes[at] = b;
                        assert_eq!(any(&bytes, b'a', word_test), byte_test(b), "{what}: {b:#x} at {at} of {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn bytes_that_match_next_to_each_other_are_found() {
        for (a, b) in [(0xffu8, 0x7eu8), (0x00, 0x01), (0x80, 0x7f), (0x41, 0x5a)] {
            let word = u64::from_le_bytes([b'a', a, b, b'a', b'a', b'a', b'a', b'a']);
            assert!(has_more(word, 0x7e) == (a > 0x7e || b > 0x7e));
            assert!(has_less(word, 0x21) == (a < 0x21 || b < 0x21));
            assert!(has_between(word, 0x40, 0x5b) == ((0x41..0x5b).contains(&a) || (0x41..0x5b).contains(&b)));
        }
    }
}
