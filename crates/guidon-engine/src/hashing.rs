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

/// `be_u32(sha256(concat(parts))[0..4])`: the first word of the digest.
///
/// Keys, units and salts are short, so the message almost always fits one
/// 64-byte block with its padding: the block is laid out on the stack and
/// compressed once, and the first digest word is the first state word. This
/// skips the streaming hasher's buffering and finalization (measured: 72 ns
/// against 88 ns per hash with SHA-NI). Longer messages take the ordinary
/// path; the unit tests check both agree at every length.
fn first_digest_word(parts: [&[u8]; 5]) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len >= 56 {
        return first_digest_word_streaming(parts);
    }
    let mut block = [0u8; 64];
    let mut at = 0;
    for part in parts {
        block[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    block[len] = 0x80;
    block[56..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    let mut state = IV;
    sha2::compress256(&mut state, &[*GenericArray::from_slice(&block)]);
    state[0]
}

fn first_digest_word_streaming(parts: [&[u8]; 5]) -> u32 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `be_u32(sha256("{flag_key}:{unit}:{salt}")[0..4]) / 4294967295 * 100`, in [0, 100].
pub fn rollout_bucket(flag_key: &str, unit: &str, salt: &str) -> f64 {
    let x = first_digest_word([
        flag_key.as_bytes(),
        b":",
        unit.as_bytes(),
        b":",
        salt.as_bytes(),
    ]);
    f64::from(x) / U32_MAX * 100.0
}

/// `be_u32(sha256("{flag_key}:{unit}:variants")[0..4]) / 4294967295`, in [0, 1].
pub fn variant_selection(flag_key: &str, unit: &str) -> f64 {
    let x = first_digest_word([
        flag_key.as_bytes(),
        b":",
        unit.as_bytes(),
        b":",
        b"variants",
    ]);
    f64::from(x) / U32_MAX
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
        for len in 0..140 {
            let unit = "u".repeat(len);
            for parts in [
                [b"flag".as_slice(), b":", unit.as_bytes(), b":", b"salt"],
                [b"", b"", unit.as_bytes(), b"", b""],
            ] {
                assert_eq!(
                    first_digest_word(parts),
                    first_digest_word_streaming(parts),
                    "message of {} bytes",
                    parts.iter().map(|p| p.len()).sum::<usize>()
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
