//! Malformed or wrong-length peer messages give errors, never panics, at every OT layer.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test and bench code outside #[test] functions: a failed unwrap is a failed test"
)]

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::traits::Identity;
use duet_mpc::ot::base::{simplest_ot_receive, SimplestOtSender};
use duet_mpc::ot::rot::{
    chosen_receiver_finish, chosen_sender_respond, one_of_n_receiver_finish,
    one_of_n_sender_respond,
};
use duet_mpc::ot::{CotReceiver, CotSender, IknpReceiver, IknpSender, OtPair};
use duet_mpc::{MpcError, Prg};
use duet_transport::{run_two_party, Channel, Role};

fn peer_error<T: std::fmt::Debug>(r: duet_mpc::Result<T>) {
    assert!(
        matches!(
            r,
            Err(MpcError::InvalidPeerData { .. }) | Err(MpcError::Transport(_))
        ),
        "expected a peer-data error, got {r:?}"
    );
}

#[test]
fn ot_base_ot_rejects_bad_points_and_lengths() {
    let mut rng = Prg::from_seed([1; 32]);
    let sid = [0; 32];
    let choices = [true, false, true];
    // The sender's point: wrong length, non-canonical, identity.
    peer_error(simplest_ot_receive(&mut rng, sid, &choices, &[1u8; 31]));
    peer_error(simplest_ot_receive(&mut rng, sid, &choices, &[0xffu8; 32]));
    peer_error(simplest_ot_receive(&mut rng, sid, &choices, &[]));
    let id = RistrettoPoint::identity().compress().to_bytes();
    peer_error(simplest_ot_receive(&mut rng, sid, &choices, &id));
    // The receiver's answer: wrong length, one bad point among good ones.
    let (s, a) = SimplestOtSender::new(&mut rng, sid, 3);
    let (good, _) = simplest_ot_receive(&mut rng, sid, &choices, &a).unwrap();
    let (s2, _) = SimplestOtSender::new(&mut rng, sid, 3);
    peer_error(s2.finish(&good[..95]));
    let mut bad = good.clone();
    bad[32..64].copy_from_slice(&[0xff; 32]);
    peer_error(s.finish(&bad));
    // A valid point is accepted (sanity of the check above).
    let g = RISTRETTO_BASEPOINT_POINT.compress().to_bytes();
    assert!(simplest_ot_receive(&mut rng, sid, &choices, &g).is_ok());
}

#[test]
fn ot_base_ot_keys_agree() {
    let mut rng = Prg::from_seed([2; 32]);
    let choices: Vec<bool> = (0..128).map(|i| i % 3 == 1).collect();
    let (s, a) = SimplestOtSender::new(&mut rng, [9; 32], 128);
    let (answer, keys) = simplest_ot_receive(&mut rng, [9; 32], &choices, &a).unwrap();
    let pairs = s.finish(&answer).unwrap();
    for ((p, k), &c) in pairs.iter().zip(&keys).zip(&choices) {
        assert_eq!(*k, p[usize::from(c)]);
        assert_ne!(*k, p[1 - usize::from(c)]);
    }
    // Keys of a batch differ from each other and from another session's.
    let distinct: std::collections::HashSet<_> = pairs.iter().flatten().collect();
    assert_eq!(distinct.len(), 256);
}

#[test]
fn ot_iknp_setup_rejects_malformed_base_messages() {
    // The extension receiver sends a non-point as its base-OT message.
    let (s, _) = run_two_party(
        |mut ch| IknpSender::setup(&mut ch, &mut Prg::from_seed([1; 32]), [0; 32]).map(|_| ()),
        |mut ch| {
            ch.send_bytes(&[0xee; 32]).unwrap();
        },
    );
    peer_error(s);
    // The extension sender answers with a short message.
    let (_, r) = run_two_party(
        |mut ch| {
            let _ = ch.recv_bytes().unwrap();
            ch.send_bytes(&[0u8; 4095]).unwrap();
        },
        |mut ch| IknpReceiver::setup(&mut ch, &mut Prg::from_seed([2; 32]), [0; 32]).map(|_| ()),
    );
    peer_error(r);
}

#[test]
fn ot_iknp_extension_rejects_wrong_lengths() {
    let (s, _) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([1; 32])).unwrap();
            let core = pair.sender().extend_core(100, &[0u64; 128 * 2 - 1]);
            assert!(matches!(core, Err(MpcError::InvalidPeerData { .. })));
            // Wrong word count, then a byte count that is not whole words, then a closed peer.
            let a = pair.sender().send_cot(&mut ch, 100).map(|_| ());
            let b = pair.sender().send_cot(&mut ch, 100).map(|_| ());
            let c = pair.sender().send_cot(&mut ch, 100).map(|_| ());
            (a, b, c)
        },
        |mut ch| {
            let _pair = OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([2; 32])).unwrap();
            ch.send_u64s(&[7u64; 128]).unwrap();
            ch.send_bytes(&[1u8; 2049]).unwrap();
        },
    );
    peer_error(s.0);
    peer_error(s.1);
    peer_error(s.2);
}

#[test]
fn ot_chosen_and_one_of_n_reject_wrong_lengths() {
    let keys2 = vec![[1u128, 2u128]; 10];
    let keys1 = vec![1u128; 10];
    let msgs = vec![[0u64, 1u64]; 10];
    // e: 10 bits = 2 bytes exactly, padding bits zero.
    peer_error(chosen_sender_respond(&keys2, &[0u8; 1], &msgs, 8));
    peer_error(chosen_sender_respond(&keys2, &[0u8; 3], &msgs, 8));
    peer_error(chosen_sender_respond(&keys2, &[0u8, 0xff], &msgs, 8));
    assert!(chosen_sender_respond(&keys2, &[0u8; 2], &msgs, 8).is_ok());
    let choices = vec![true; 10];
    peer_error(chosen_receiver_finish(&keys1, &choices, &[0u8; 19], 8));
    peer_error(chosen_receiver_finish(&keys1, &choices, &[0u8; 21], 8));
    assert!(chosen_receiver_finish(&keys1, &choices, &[0u8; 20], 8).is_ok());
    // 1-of-4 with 5 instances: 10 random OTs, 10 bits from the receiver, 5*4*3 bits back.
    let msgs4 = vec![0u64; 20];
    peer_error(one_of_n_sender_respond(&keys2, &[0u8; 1], &msgs4, 2, 3));
    assert!(one_of_n_sender_respond(&keys2, &[0u8; 2], &msgs4, 2, 3).is_ok());
    let ch4 = vec![3u8; 5];
    peer_error(one_of_n_receiver_finish(&keys1, &ch4, &[0u8; 7], 2, 3));
    assert!(one_of_n_receiver_finish(&keys1, &ch4, &[0u8; 8], 2, 3).is_ok());
}

#[test]
fn ot_drivers_fail_cleanly_on_garbage() {
    // A chosen-OT receiver gets a short answer; a 1-of-N sender gets a short choice message.
    let (s, r) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([3; 32])).unwrap();
            pair.sender().precompute(&mut ch, 64).unwrap();
            let _ = ch.recv_bytes().unwrap();
            ch.send_bytes(&[0u8; 3]).unwrap();
            pair.sender().send_one_of_n(&mut ch, &[0u64; 16 * 4], 4, 8)
        },
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([4; 32])).unwrap();
            pair.receiver().precompute(&mut ch, 64).unwrap();
            let r = pair.receiver().recv_chosen(&mut ch, &[true; 16], 8);
            ch.send_bytes(&[0u8; 1]).unwrap();
            r
        },
    );
    peer_error(s);
    peer_error(r);
}

#[test]
fn ot_bad_arguments_are_errors() {
    let (s, r) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([5; 32])).unwrap();
            let a = pair.sender().send_chosen(&mut ch, &[[0, 0]], 0);
            let b = pair.sender().send_chosen(&mut ch, &[[0, 0]], 65);
            let c = pair.sender().send_one_of_n(&mut ch, &[0; 15], 4, 8);
            let d = pair.sender().send_one_of_n(&mut ch, &[0; 512], 9, 8);
            [a, b, c, d]
                .into_iter()
                .all(|x| matches!(x, Err(MpcError::InvalidArgument { .. })))
        },
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([6; 32])).unwrap();
            let a = pair.receiver().recv_one_of_n(&mut ch, &[16], 4, 8);
            let b = pair.receiver().recv_chosen(&mut ch, &[true], 0);
            [a, b]
                .into_iter()
                .all(|x| matches!(x, Err(MpcError::InvalidArgument { .. })))
        },
    );
    assert!(s && r);
}
