//! The buckets of flag-format.md §6. Changing anything here reshuffles every
//! user of every rollout and experiment; `testdata/hashing` pins it against an
//! independent implementation.

use sha2::{Digest, Sha256};

use sha2::digest::generic_array::GenericArray;

const U32_MAX: f64 = 4_294_967_295.0;

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The hashes of one flag, prepared when the snapshot is compiled.
///
/// Keys, units and salts are short, so a message almost always fits one
/// 64-byte block with its padding. The block is laid out ahead of time with
/// `"{flag_key}:"` in place; an evaluation copies it, writes the unit and the
/// suffix (`":{salt}"` or `":variants"`), and compresses once. The first
/// digest word is then the first state word, so there is no finalization
/// either. Longer messages take the streaming hasher; the unit tests check
/// both agree at every length.
#[derive(Debug, Clone)]
pub(crate) struct FlagHasher {
    key: Box<str>,
    /// `":{salt}"`
    salt_suffix: Box<[u8]>,
    block: [u8; 64],
    prefix_len: usize,
}

const VARIANTS_SUFFIX: &[u8] = b":variants";
/// A message of 56 bytes or more needs a second block for its length.
const ONE_BLOCK: usize = 56;

impl FlagHasher {
    pub(crate) fn new(flag_key: &str, salt: &str) -> FlagHasher {
        let mut block = [0u8; 64];
        let prefix_len = flag_key.len() + 1;
        if prefix_len < ONE_BLOCK {
            block[..flag_key.len()].copy_from_slice(flag_key.as_bytes());
            block[flag_key.len()] = b':';
        }
        let mut salt_suffix = Vec::with_capacity(salt.len() + 1);
        salt_suffix.push(b':');
        salt_suffix.extend_from_slice(salt.as_bytes());
        FlagHasher {
            key: flag_key.into(),
            salt_suffix: salt_suffix.into(),
            block,
            prefix_len,
        }
    }

    /// `be_u32(sha256("{flag_key}:{unit}:{salt}")[0..4]) / 4294967295 * 100`.
    pub(crate) fn rollout_bucket(&self, unit: &str) -> f64 {
        f64::from(self.first_digest_word(unit.as_bytes(), &self.salt_suffix)) / U32_MAX * 100.0
    }

    /// `be_u32(sha256("{flag_key}:{unit}:variants")[0..4]) / 4294967295`.
    pub(crate) fn variant_selection(&self, unit: &str) -> f64 {
        f64::from(self.first_digest_word(unit.as_bytes(), VARIANTS_SUFFIX)) / U32_MAX
    }

    fn first_digest_word(&self, unit: &[u8], suffix: &[u8]) -> u32 {
        let p = self.prefix_len;
        let len = p + unit.len() + suffix.len();
        if len >= ONE_BLOCK {
            return first_digest_word_streaming(&[self.key.as_bytes(), b":", unit, suffix]);
        }
        let mut block = self.block;
        block[p..p + unit.len()].copy_from_slice(unit);
        block[p + unit.len()..len].copy_from_slice(suffix);
        compress_one_block(block, len)
    }
}

/// The first digest word of the concatenation of `parts`, in one block
/// when it fits: what the public functions use, without a prepared hasher.
fn first_digest_word_of(parts: &[&[u8]]) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len >= ONE_BLOCK {
        return first_digest_word_streaming(parts);
    }
    let mut block = [0u8; 64];
    let mut at = 0;
    for part in parts {
        block[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    compress_one_block(block, len)
}

/// Pads a message of `len` < 56 bytes already in `block` and compresses it.
fn compress_one_block(mut block: [u8; 64], len: usize) -> u32 {
    block[len] = 0x80;
    block[ONE_BLOCK..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    let mut state = IV;
    sha2::compress256(&mut state, &[*GenericArray::from_slice(&block)]);
    state[0]
}

fn first_digest_word_streaming(parts: &[&[u8]]) -> u32 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `be_u32(sha256("{flag_key}:{unit}:{salt}")[0..4]) / 4294967295 * 100`, in [0, 100].
pub fn rollout_bucket(flag_key: &str, unit: &str, salt: &str) -> f64 {
    let word = first_digest_word_of(&[
        flag_key.as_bytes(),
        b":",
        unit.as_bytes(),
        b":",
        salt.as_bytes(),
    ]);
    f64::from(word) / U32_MAX * 100.0
}

/// `be_u32(sha256("{flag_key}:{unit}:variants")[0..4]) / 4294967295`, in [0, 1].
pub fn variant_selection(flag_key: &str, unit: &str) -> f64 {
    let word = first_digest_word_of(&[flag_key.as_bytes(), b":", unit.as_bytes(), VARIANTS_SUFFIX]);
    f64::from(word) / U32_MAX
}

/// `percentage > 0 && bucket <= percentage`.
pub(crate) fn in_percentage(bucket: f64, percentage: f64) -> bool {
    percentage > 0.0 && bucket <= percentage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_block_path_agrees_with_the_streaming_hasher_at_every_length() {
        for key_len in [1, 20, 54, 55, 56, 128] {
            let key = "k".repeat(key_len);
            for unit_len in 0..140 {
                let unit = "u".repeat(unit_len);
                let hasher = FlagHasher::new(&key, "salt");
                let bytes = unit.as_bytes();
                assert_eq!(
                    hasher.first_digest_word(bytes, b":salt"),
                    first_digest_word_streaming(&[key.as_bytes(), b":", bytes, b":salt"]),
                    "key {key_len} bytes, unit {unit_len} bytes"
                );
                assert_eq!(
                    first_digest_word_of(&[key.as_bytes(), b":", bytes, b":", b"salt"]),
                    first_digest_word_streaming(&[key.as_bytes(), b":", bytes, b":salt"]),
                    "key {key_len} bytes, unit {unit_len} bytes"
                );
                assert_eq!(
                    hasher.first_digest_word(bytes, VARIANTS_SUFFIX),
                    first_digest_word_streaming(&[key.as_bytes(), b":", bytes, VARIANTS_SUFFIX]),
                    "key {key_len} bytes, unit {unit_len} bytes"
                );
            }
        }
    }

    #[test]
    fn bucket_matches_a_hand_computed_digest() {
        // sha256("f:u:") = 7341a2c8... computed with `printf 'f:u:' | sha256sum`.
        let expected = f64::from(0x7341_a2c8u32) / U32_MAX * 100.0;
        assert_eq!(rollout_bucket("f", "u", ""), expected);
    }
}
