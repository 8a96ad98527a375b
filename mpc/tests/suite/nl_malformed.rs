//! Malformed peer messages give errors, not panics: one party runs the honest protocol over a
//! channel that corrupts its `k`-th message (one byte short, or one byte long), for every `k`;
//! the other party must return an error.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use crate::common;
use common::*;
use duet_mpc::nonlinear::{self as nl, BShare, NlConfig, NlSession, TruncMode};
use duet_mpc::{AShare, Prg, Result, Ring};
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};

fn inputs(role: Role) -> (AShare, AShare, BShare) {
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([role.index() as u8 + 40; 32]);
    let x = AShare::new(ring, vec![100], prg.ring_elements(ring, 100)).unwrap();
    let y = AShare::new(ring, vec![100], prg.ring_elements(ring, 100)).unwrap();
    let b = BShare::from_bits(&(0..100).map(|i| i % 3 == role.index()).collect::<Vec<_>>());
    (x, y, b)
}

const PROTOS: [&str; 9] = [
    "msb",
    "eq",
    "and",
    "b2a",
    "mux",
    "mul",
    "trunc",
    "trunc-known",
    "extend",
];

fn call<C: Channel>(name: &str, s: &mut NlSession, ch: &mut C, r: Role) -> Result<()> {
    let (x, y, b) = inputs(r);
    let ring = x.ring();
    match name {
        "msb" => nl::msb(s, ch, &x).map(drop),
        "eq" => nl::eq(s, ch, &x, &y).map(drop),
        "and" => nl::and(s, ch, &b, &b).map(drop),
        "b2a" => nl::b2a(s, ch, &b, ring).map(drop),
        "mux" => nl::mux(s, ch, &b, &x).map(drop),
        "mul" => nl::mul(s, ch, &x, &y).map(drop),
        "trunc" => nl::trunc(s, ch, &x, 12, TruncMode::Faithful).map(drop),
        "trunc-known" => nl::trunc(s, ch, &x, 12, TruncMode::KnownMsb(false)).map(drop),
        _ => nl::extend(s, ch, &x, Ring::z64(), true).map(drop),
    }
}

fn session(role: Role, ch: &mut MemoryChannel, cfg: NlConfig) -> NlSession {
    NlSession::setup(
        ch,
        role,
        &mut Prg::from_seed([role.index() as u8 + 1; 32]),
        cfg,
    )
    .unwrap()
}

#[test]
fn every_corrupted_message_is_an_error() {
    for cfg in [
        NlConfig {
            radix: 4,
            ot_sender: Role::Server,
            ..default_cfg()
        },
        NlConfig {
            radix: 4,
            ot_sender: Role::Client,
            ..default_cfg()
        },
    ] {
        for name in PROTOS {
            // clean run: how many messages each party sends
            let (ms, mc, _) = run2(cfg, |role, s, ch| {
                let before = ch.stats().messages_sent;
                call(name, s, ch, role).unwrap();
                ch.stats().messages_sent - before
            });
            for bad in [Role::Server, Role::Client] {
                let total = if bad == Role::Server { ms } else { mc };
                assert!(total > 0, "{name}");
                for target in 0..total {
                    for longer in [false, true] {
                        let run = |role: Role, mut ch: MemoryChannel| {
                            let mut s = session(role, &mut ch, cfg);
                            if role == bad {
                                let mut c = Corrupt {
                                    inner: &mut ch,
                                    target,
                                    count: 0,
                                    longer,
                                };
                                let _ = call(name, &mut s, &mut c, role);
                                None
                            } else {
                                Some(call(name, &mut s, &mut ch, role).is_err())
                            }
                        };
                        let (a, b) =
                            run_two_party(|ch| run(Role::Server, ch), |ch| run(Role::Client, ch));
                        let honest_failed = a.or(b).unwrap();
                        assert!(
                            honest_failed,
                            "{name} {cfg:?}: corrupted message {target} of {bad:?} accepted"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let cfg = default_cfg();
    assert!(NlConfig { radix: 0, ..cfg }.validate().is_err());
    assert!(NlConfig { radix: 9, ..cfg }.validate().is_err());
    let (a, b, _) = run2(cfg, |role, s, ch| {
        let (x, _, bits) = inputs(role);
        let short = AShare::new(x.ring(), vec![3], vec![0; 3]).unwrap();
        [
            nl::trunc(s, ch, &x, 37, TruncMode::Faithful).is_err(),
            nl::mux(s, ch, &BShare::zeros(3), &x).is_err(),
            nl::mul(s, ch, &x, &short).is_err(),
            nl::lt(s, ch, &x, &short).is_err(),
            nl::and(s, ch, &bits, &BShare::zeros(3)).is_err(),
            nl::millionaire(s, ch, &[1 << 20], 20, nl::CmpMode::Lt).is_err(),
            nl::millionaire(s, ch, &[1], 65, nl::CmpMode::Lt).is_err(),
            nl::reduce(&x, Ring::z64()).is_err(),
        ]
    });
    assert!(a.iter().chain(&b).all(|&e| e));
}
