//! The buckets of flag-format.md §6. Changing anything here reshuffles every
//! user of every rollout and experiment; `testdata/hashing` pins it against an
//! independent implementation.

use sha2::{Digest, Sha256};

const U32_MAX: f64 = 4_294_967_295.0;

fn be_u32_of_sha256(parts: [&[u8]; 5]) -> u32 {
    // Fed piecewise so no "{key}:{unit}:{salt}" string is ever allocated.
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `be_u32(sha256("{flag_key}:{unit}:{salt}")[0..4]) / 4294967295 * 100`, in [0, 100].
pub fn rollout_bucket(flag_key: &str, unit: &str, salt: &str) -> f64 {
    let x = be_u32_of_sha256([
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
    let x = be_u32_of_sha256([
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
    fn bucket_matches_a_hand_computed_digest() {
        // sha256("f:u:") = 7341a2c8... computed with `printf 'f:u:' | sha256sum`.
        let expected = f64::from(0x7341_a2c8u32) / U32_MAX * 100.0;
        assert_eq!(rollout_bucket("f", "u", ""), expected);
    }
}
