//! Calls larger than one batch ([`nl::MAX_BATCH`] elements) run as consecutive batches: the
//! results are right across batch boundaries and the cost formulas replay the same batches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::*;
use duet_mpc::nonlinear::{self as nl, BShare, CotBackend, NlConfig};
use duet_mpc::{Prg, Ring};
use duet_transport::Role;

#[test]
fn comparison_over_several_batches_iknp_exact_cost() {
    let ring = Ring::new(37).unwrap();
    let n = 2 * nl::MAX_BATCH + 5;
    let mut prg = Prg::from_seed([21; 32]);
    let x = prg.ring_elements(ring, n);
    let (x0, x1) = share(ring, &x, &mut prg);
    let cfg = NlConfig {
        cot: CotBackend::Iknp,
        ..NlConfig::default()
    };
    let (a, b, c) = run2(cfg, |role, s, ch| {
        nl::msb(s, ch, by_role(role, &x0, &x1)).unwrap()
    });
    let got = a.reconstruct(&b).unwrap();
    assert!((0..n).all(|i| got[i] == ring.msb(x[i])));
    assert_eq!(c, nl::msb_cost(n, ring, cfg));
    // three batches: the flights of each (the last one, small, on the ping-pong tree)
    assert_eq!(
        c.rounds,
        2 * nl::msb_cost(nl::MAX_BATCH, ring, cfg).rounds + nl::msb_cost(5, ring, cfg).rounds
    );
}

#[test]
fn b2a_over_several_batches_ferret_reserves_per_batch() {
    let ring = Ring::new(32).unwrap();
    let n = nl::MAX_BATCH + 77;
    let mut prg = Prg::from_seed([22; 32]);
    let bits: Vec<bool> = prg
        .ring_elements(Ring::z64(), 2 * n)
        .iter()
        .map(|v| v & 1 == 1)
        .collect();
    let (b0, b1) = (BShare::from_bits(&bits[..n]), BShare::from_bits(&bits[n..]));
    for sender in [Role::Server, Role::Client] {
        let cfg = NlConfig {
            ot_sender: sender,
            ..default_cfg()
        };
        let (a, b, c) = run2(cfg, |role, s, ch| {
            nl::b2a(s, ch, by_role(role, &b0, &b1), ring).unwrap()
        });
        let got = a.reconstruct(&b).unwrap();
        assert!((0..n).all(|i| got[i] == u64::from(bits[i] ^ bits[n + i])));
        assert_eq!(c.cots, nl::b2a_cost(n, ring, cfg).cots);
    }
}
