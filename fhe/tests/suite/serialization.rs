//! Round trips and rejection of malformed bytes (never a panic).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn setup() -> (std::sync::Arc<RlweParameters>, SecretKey, ChaCha20Rng) {
    let params = RlweParameters::preset(
        Preset::N4096Q109,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let sk = SecretKey::generate(&params, &mut rng);
    (params, sk, rng)
}

#[test]
fn seeded_ciphertext_roundtrip_and_rejections() {
    let (params, sk, mut rng) = setup();
    let ct = sk.encrypt(&[1, 2, 3], &mut rng).unwrap();
    let bytes = ct.to_bytes(&params).unwrap();
    // 10 header + 32 seed + 4096 * (55 + 54) / 8
    assert_eq!(bytes.len(), 10 + 32 + 4096 * 55 / 8 + 4096 * 54 / 8);
    assert_eq!(SeededCiphertext::from_bytes(&params, &bytes).unwrap(), ct);

    // wrong lengths
    for len in [0, 1, 9, 10, 41, bytes.len() - 1] {
        let e = SeededCiphertext::from_bytes(&params, &bytes[..len]).unwrap_err();
        assert!(matches!(e, FheError::Malformed { .. }), "{len}: {e}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        SeededCiphertext::from_bytes(&params, &longer),
        Err(FheError::Malformed { .. })
    ));

    // version
    let mut bad = bytes.clone();
    bad[0] = 2;
    assert!(matches!(
        SeededCiphertext::from_bytes(&params, &bad),
        Err(FheError::UnsupportedVersion { found: 2, .. })
    ));
    // kind
    let mut bad = bytes.clone();
    bad[1] = 3;
    assert!(matches!(
        SeededCiphertext::from_bytes(&params, &bad),
        Err(FheError::Malformed { .. })
    ));
    // parameter id
    let mut bad = bytes.clone();
    bad[5] ^= 1;
    assert!(matches!(
        SeededCiphertext::from_bytes(&params, &bad),
        Err(FheError::ParameterMismatch { .. })
    ));
    let other = RlweParameters::preset(
        Preset::N4096Q109,
        RingBits(36),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    assert!(matches!(
        SeededCiphertext::from_bytes(&other, &bytes),
        Err(FheError::ParameterMismatch { .. })
    ));
    // out-of-range residue: first residue (55 bits) set to all ones >= p0
    let mut bad = bytes.clone();
    for byte in &mut bad[42..48] {
        *byte = 0xff;
    }
    bad[48] |= 0x7f;
    let e = SeededCiphertext::from_bytes(&params, &bad).unwrap_err();
    assert!(e.to_string().contains("not below its modulus"), "{e}");
}

#[test]
fn public_key_roundtrip() {
    let (params, sk, mut rng) = setup();
    let pk = sk.public_key(&mut rng);
    let bytes = pk.to_bytes();
    assert_eq!(bytes.len(), PublicKey::serialized_len(&params));
    let pk2 = PublicKey::from_bytes(&params, &bytes).unwrap();
    assert_eq!(pk2.to_bytes(), bytes);
    let mut bad = bytes.clone();
    bad[1] = 1; // seeded-ciphertext kind is not a public key
    assert!(PublicKey::from_bytes(&params, &bad).is_err());
    assert!(PublicKey::from_bytes(&params, &bytes[..100]).is_err());
}

#[test]
fn output_roundtrip_and_rejections() {
    let (params, sk, mut rng) = setup();
    let pk = sk.public_key(&mut rng);
    let ct = sk
        .encrypt(&[5, 6], &mut rng)
        .unwrap()
        .expand(&params)
        .unwrap();
    let w = PlainWeights::from_signed(&params, &[-3, 1]).unwrap();
    let mut acc = MacAccumulator::new(&params);
    acc.mul_acc(&ct, &w).unwrap();
    let positions = [0usize, 1, 2];
    let out = acc.finalize(&pk, &[], &positions, &mut rng).unwrap();
    let bytes = out.to_bytes(&params).unwrap();
    let expect_len = 14
        + (3 * params.output_b_bits() as usize + 4096 * params.output_a_bits() as usize)
            .div_ceil(8);
    assert_eq!(bytes.len(), expect_len);
    let back = OutputCiphertext::from_bytes(&params, &bytes, 3).unwrap();
    assert_eq!(back, out);
    let mask = params.plain_mask();
    assert_eq!(
        sk.decrypt_output(&back, &positions).unwrap(),
        vec![(-15i64 as u64) & mask, (5u64.wrapping_sub(18)) & mask, 6]
    );
    // wrong expected count, lengths, header
    assert!(OutputCiphertext::from_bytes(&params, &bytes, 2).is_err());
    assert!(OutputCiphertext::from_bytes(&params, &bytes, 0).is_err());
    assert!(OutputCiphertext::from_bytes(&params, &bytes, 5000).is_err());
    assert!(OutputCiphertext::from_bytes(&params, &bytes[..bytes.len() - 1], 3).is_err());
    let mut bad = bytes.clone();
    bad[10] = 4; // count field says 4 but length is for 3
    assert!(OutputCiphertext::from_bytes(&params, &bad, 3).is_err());
    // non-zero padding bits in the last byte (if there is padding)
    let total_bits = 3 * params.output_b_bits() as usize + 4096 * params.output_a_bits() as usize;
    if total_bits % 8 != 0 {
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() |= 0x80;
        assert!(OutputCiphertext::from_bytes(&params, &bad, 3).is_err());
    }
}

#[test]
fn random_bytes_never_panic() {
    let (params, _sk, mut rng) = setup();
    let seeded_len = SeededCiphertext::serialized_len(&params);
    let out_len = OutputCiphertext::serialized_len(&params, 7);
    for i in 0..200 {
        let len = match i % 4 {
            0 => seeded_len,
            1 => out_len,
            _ => rng.gen_range(0..200),
        };
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 2 == 0 && len > 10 {
            bytes[0] = FORMAT_VERSION;
            bytes[1] = if i % 4 == 0 { 1 } else { 3 };
            bytes[2..10].copy_from_slice(&params.id().to_le_bytes());
        }
        let _ = SeededCiphertext::from_bytes(&params, &bytes);
        let _ = PublicKey::from_bytes(&params, &bytes);
        let _ = OutputCiphertext::from_bytes(&params, &bytes, 7);
    }
}
