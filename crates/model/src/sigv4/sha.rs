//! SHA-256 and HMAC-SHA256 for signatures, on `sha2`'s compression function (SHA-NI where the
//! CPU has it). A request's check hashes its canonical request and signs one short string:
//! written here, the hash runs over the caller's bytes in place and a signing key is two
//! 32-byte states that copy for free, with no context objects built and torn down around
//! a few blocks of work.

use sha2::block_api::compress256;

/// SHA-256's initial state.
const IV: [u32; 8] =
    [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// A SHA-256 in progress.
#[derive(Clone)]
pub(super) struct Sha256 {
    state: [u32; 8],
    /// Bytes taken so far, the buffered ones included.
    total: u64,
    buf: [u8; 64],
    /// How many of `buf` hold bytes not yet compressed.
    len: usize,
}

impl Sha256 {
    pub(super) fn new() -> Self {
        Self::from_state(IV, 0)
    }

    /// A hash that has already absorbed `taken` bytes (whole blocks) into `state`.
    fn from_state(state: [u32; 8], taken: u64) -> Self {
        Self { state, total: taken, buf: [0; 64], len: 0 }
    }

    /// Takes `data`: the many short pieces of a canonical request are copied into the
    /// buffer in place, and only a full block calls out (so that the dozens of places that
    /// feed a hash stay small code).
    #[inline]
    pub(super) fn update(&mut self, data: &[u8]) {
        if self.len + data.len() < 64 {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
            self.total += data.len() as u64;
            return;
        }
        self.absorb(data);
    }

    #[inline(never)]
    fn absorb(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.len > 0 {
            let n = data.len().min(64 - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len < 64 {
                return;
            }
            compress256(&mut self.state, std::slice::from_ref(&self.buf));
            self.len = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        if !blocks.is_empty() {
            compress256(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
    }

    pub(super) fn finish(mut self) -> [u8; 32] {
        let mut tail = [0u8; 128];
        tail[..self.len].copy_from_slice(&self.buf[..self.len]);
        tail[self.len] = 0x80;
        let end = if self.len < 56 { 64 } else { 128 };
        tail[end - 8..end].copy_from_slice(&(self.total * 8).to_be_bytes());
        compress256(&mut self.state, tail[..end].as_chunks::<64>().0);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// SHA-256 of `data`.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// An HMAC-SHA256 key with its pads hashed once.
#[derive(Clone, Copy)]
pub(super) struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl HmacKey {
    pub(super) fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&sha256(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let padded = |pad: u8| {
            let mut state = IV;
            compress256(&mut state, &[block.map(|b| b ^ pad)]);
            state
        };
        Self { inner: padded(0x36), outer: padded(0x5c) }
    }

    /// The MAC of what `context` was given.
    pub(super) fn context(&self) -> Sha256 {
        Sha256::from_state(self.inner, 64)
    }

    /// The MAC of `inner`, a finished [`HmacKey::context`].
    pub(super) fn finish(&self, inner: Sha256) -> [u8; 32] {
        let mut outer = Sha256::from_state(self.outer, 64);
        outer.update(&inner.finish());
        outer.finish()
    }

    pub(super) fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut inner = self.context();
        inner.update(data);
        self.finish(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against ring's, at every length around the block and padding edges, fed whole and in
    /// pieces.
    #[test]
    fn hashes_and_macs_match_ring() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        for len in 0..data.len() {
            let d = &data[..len];
            assert_eq!(sha256(d)[..], *ring::digest::digest(&ring::digest::SHA256, d).as_ref(), "{len}");
            let mut pieces = Sha256::new();
            for chunk in d.chunks(7) {
                pieces.update(chunk);
            }
            assert_eq!(pieces.finish(), sha256(d), "{len} in pieces");
        }
        for key_len in [0, 1, 32, 63, 64, 65, 200] {
            let key = &data[..key_len];
            let ours = HmacKey::new(key);
            let theirs = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
            for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 200] {
                let d = &data[50..50 + len];
                assert_eq!(ours.sign(d)[..], *ring::hmac::sign(&theirs, d).as_ref(), "key {key_len}, data {len}");
            }
        }
    }
}
