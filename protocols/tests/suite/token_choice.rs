//! Tests of the private next-token choice (`duet_protocols::nonlinear::token_choice`): greedy
//! against the plaintext argmax (random shares, range bounds, negatives, ties, odd and large
//! vocabularies), sampling against the plaintext distribution (chi-square on small
//! vocabularies), the logits mode, measured bytes and COTs against the cost formula for every
//! mode, and corrupted or short messages from the peer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use duet_mpc::nonlinear::{self as nl, Cost, CotCount, NlConfig, NlSession};
use duet_mpc::{AShare, FixedPoint, Prg, Ring};
use duet_protocols::nonlinear::token_choice::{
    choose_token, choose_token_cost, LogitFormat, TokenChoice, TokenOutcome, TOP_P_DEFAULT_K,
};
use duet_protocols::Result;
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use std::time::Instant;

/// One call of [`choose_token`]: the logits' two shares, the format and each party's choice.
struct Case {
    x: [AShare; 2],
    fmt: LogitFormat,
    choice: [TokenChoice; 2],
}

/// What one party saw of a case.
struct Seen {
    out: Result<TokenOutcome>,
    stats: ChannelStats,
    cots: CotCount,
    secs: f64,
}

/// Runs the cases in order on one pair of sessions (COTs for each case reserved before its
/// measured part); returns, per case, (server, client, measured cost incl. consumed COTs,
/// client seconds).
fn run_cases(cfg: NlConfig, cases: &[Case]) -> Vec<(TokenOutcome, TokenOutcome, Cost, f64)> {
    let party = |role: Role, mut ch: MemoryChannel| -> Vec<Seen> {
        let mut rng = Prg::from_seed([role.index() as u8 + 40; 32]);
        let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
        cases
            .iter()
            .map(|c| {
                let (rows, v) = rows_vocab(&c.x[0]);
                let need = choose_token_cost(rows, v, &c.fmt, &c.choice[0], cfg).unwrap();
                s.reserve(&mut ch, need.cots).unwrap();
                let (before, cb) = (ch.stats(), s.cots_consumed());
                let t = Instant::now();
                let out = choose_token(
                    &mut s,
                    &mut ch,
                    &c.x[role.index()],
                    &c.fmt,
                    &c.choice[role.index()],
                );
                let secs = t.elapsed().as_secs_f64();
                let ca = s.cots_consumed();
                Seen {
                    out,
                    stats: ch.stats() - before,
                    cots: CotCount {
                        server_sends: ca.server_sends - cb.server_sends,
                        client_sends: ca.client_sends - cb.client_sends,
                    },
                    secs,
                }
            })
            .collect()
    };
    let (a, b) = run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    a.into_iter()
        .zip(b)
        .map(|(sa, sb)| {
            assert_eq!(sa.cots, sb.cots);
            let measured = Cost {
                bytes: sa.stats.bytes_sent + sb.stats.bytes_sent,
                rounds: sa.stats.rounds + sb.stats.rounds,
                cots: sa.cots,
            };
            (sa.out.unwrap(), sb.out.unwrap(), measured, sb.secs)
        })
        .collect()
}

fn rows_vocab(x: &AShare) -> (usize, usize) {
    let v = *x.shape().last().unwrap();
    (x.len() / v, v)
}

fn fmt37() -> LogitFormat {
    LogitFormat::new(Ring::new(37).unwrap(), 12, 6).unwrap()
}

/// Uniformly random shares of the encoded `vals` (shape `[rows, v]`).
fn share(fmt: &LogitFormat, rows: usize, vals: &[i64], prg: &mut Prg) -> [AShare; 2] {
    let r = fmt.ring;
    let enc: Vec<u64> = vals.iter().map(|&v| r.from_i64(v)).collect();
    let v = vals.len() / rows;
    let (a, b) = AShare::share(r, vec![rows, v], &enc, prg).unwrap();
    [a, b]
}

/// The plaintext argmax of each row (lowest index among ties).
fn argmax(vals: &[i64], v: usize) -> Vec<u32> {
    vals.chunks(v)
        .map(|row| {
            let mut best = 0;
            for (i, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// A uniform integer in `[-b, b]`.
fn unif(prg: &mut Prg, b: i64) -> i64 {
    (prg.ring_element(Ring::z64()) % (2 * b as u64 + 1)) as i64 - b
}

fn check_cost(what: &str, measured: Cost, cost: Cost) {
    assert_eq!(measured.bytes, cost.bytes, "{what}: bytes");
    assert!(
        measured.rounds <= cost.rounds,
        "{what}: {} flights > {}",
        measured.rounds,
        cost.rounds
    );
    assert_eq!(measured.cots, cost.cots, "{what}: COTs");
}

fn greedy_case(fmt: LogitFormat, rows: usize, vals: &[i64], prg: &mut Prg) -> Case {
    Case {
        x: share(&fmt, rows, vals, prg),
        fmt,
        choice: [TokenChoice::Greedy, TokenChoice::Greedy],
    }
}

/// Greedy on uniformly random shares of random logits over the whole declared range (and in
/// a narrow band, with duplicates), vocabularies of 2 .. 1,023 (powers of two and not), 1 and
/// 3 rows: the plaintext argmax, measured bytes and COTs equal to the cost, flights within it.
#[test]
fn greedy_matches_the_plaintext_argmax() {
    let mut prg = Prg::from_seed([1; 32]);
    let fmt = fmt37();
    let bound = (1i64 << 18) - 1;
    let mut cases = Vec::new();
    let mut want = Vec::new();
    for &v in &[2usize, 3, 5, 7, 8, 64, 100, 1000, 1023] {
        for rows in [1usize, 3] {
            for band in [bound, 40] {
                let vals: Vec<i64> = (0..rows * v).map(|_| unif(&mut prg, band)).collect();
                want.push((v, argmax(&vals, v)));
                cases.push(greedy_case(fmt, rows, &vals, &mut prg));
            }
        }
    }
    let got = run_cases(NlConfig::default(), &cases);
    for ((s, c, m, _), (case, (v, w))) in got.into_iter().zip(cases.iter().zip(want)) {
        assert_eq!(s, TokenOutcome::Nothing);
        assert_eq!(c.tokens().unwrap(), w.as_slice(), "V = {v}");
        let (rows, _) = rows_vocab(&case.x[0]);
        let cost = choose_token_cost(rows, v, &fmt, &TokenChoice::Greedy, NlConfig::default());
        check_cost(&format!("greedy V = {v}"), m, cost.unwrap());
    }
}

/// Extreme values at the declared range bounds `±(2^18 - 1)`, negative logits, ties (lowest
/// index wins), the maximum as the odd element that passes through every level, monotone rows.
#[test]
fn greedy_extremes_negatives_and_ties() {
    let mut prg = Prg::from_seed([2; 32]);
    let fmt = fmt37();
    let b = (1i64 << 18) - 1;
    let mut rows: Vec<(Vec<i64>, u32)> = Vec::new();
    let v = 77usize;
    let mut one = vec![-b; v];
    one[37] = b;
    rows.push((one, 37));
    let mut two = vec![-b; v];
    two[20] = b;
    two[10] = b;
    two[76] = b;
    rows.push((two, 10));
    let mut near = vec![-b; v];
    near[50] = -b + 1;
    rows.push((near, 50));
    rows.push((vec![-b; v], 0));
    rows.push((vec![b; v], 0));
    rows.push((vec![0; v], 0));
    let neg: Vec<i64> = (0..v).map(|_| -unif(&mut prg, b).abs() - 1).collect();
    let w = argmax(&neg, v)[0];
    rows.push((neg, w));
    let mut last = vec![-5; v];
    last[76] = -4;
    rows.push((last, 76));
    rows.push(((0..v as i64).collect(), 76));
    rows.push(((0..v as i64).map(|i| -i).collect(), 0));
    let mut tie_last = vec![b - 1; v];
    tie_last[76] = b;
    tie_last[75] = b;
    rows.push((tie_last, 75));
    let n = rows.len();
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let want: Vec<u32> = rows.iter().map(|r| r.1).collect();
    assert_eq!(argmax(&flat, v), want);
    let cases = [greedy_case(fmt, n, &flat, &mut prg)];
    let got = run_cases(NlConfig::default(), &cases);
    let (_, c, m, _) = &got[0];
    assert_eq!(c.tokens().unwrap(), want.as_slice());
    let cost = choose_token_cost(n, v, &fmt, &TokenChoice::Greedy, NlConfig::default());
    check_cost("extremes", *m, cost.unwrap());
}

/// `V = 1`: the id is 0 without any message; an input ring narrower than the declared range
/// needs (Z_2^20 with 12 fractional bits and |logit| < 256: one signed extension first), values
/// over the whole ring.
#[test]
fn vocabulary_of_one_and_a_narrow_input_ring() {
    let mut prg = Prg::from_seed([3; 32]);
    let fmt = fmt37();
    let narrow = LogitFormat::new(Ring::new(20).unwrap(), 12, 8).unwrap();
    let h = (1i64 << 19) - 1;
    let vals: Vec<i64> = (0..2 * 300).map(|_| unif(&mut prg, h)).collect();
    let mut edge = vec![-h - 1; 300];
    edge[299] = h;
    let cases = [
        greedy_case(fmt, 4, &[5, -3, 0, 7], &mut prg),
        greedy_case(narrow, 2, &vals, &mut prg),
        greedy_case(narrow, 1, &edge, &mut prg),
    ];
    let got = run_cases(NlConfig::default(), &cases);
    assert_eq!(got[0].1.tokens().unwrap(), &[0, 0, 0, 0]);
    assert_eq!(got[0].2.bytes, 0);
    assert_eq!(
        choose_token_cost(4, 1, &fmt, &TokenChoice::Greedy, NlConfig::default()).unwrap(),
        Cost::default()
    );
    assert_eq!(got[1].1.tokens().unwrap(), argmax(&vals, 300).as_slice());
    assert_eq!(got[2].1.tokens().unwrap(), &[299]);
    for (i, (_, _, m, _)) in got.iter().enumerate().skip(1) {
        let (rows, v) = rows_vocab(&cases[i].x[0]);
        let cost = choose_token_cost(rows, v, &narrow, &TokenChoice::Greedy, NlConfig::default());
        check_cost("narrow ring", *m, cost.unwrap());
    }
}

/// Roughly normal logits (sum of 4 uniforms, sd about 4) over 49,152 tokens.
fn big_logits(prg: &mut Prg, v: usize) -> Vec<i64> {
    (0..v)
        .map(|_| (0..4).map(|_| unif(prg, 7 << 12)).sum::<i64>() / 4 * 2)
        .collect()
}

/// `V = 49,152`: greedy finds the argmax (one row, and three rows: more logits than one batch
/// of the mpc layer); sampling with top-k 50 (and top-p 0.9) at T = 0.8 returns a token of
/// the top 50; every call costs what the formula says (printed: bytes, flights, COTs, client
/// seconds).
#[test]
fn vocabulary_of_49152() {
    let mut prg = Prg::from_seed([4; 32]);
    let fmt = fmt37();
    let v = 49_152;
    let vals = big_logits(&mut prg, v);
    let sample = TokenChoice::Sample {
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.9),
        seed: 77,
    };
    let topk = TokenChoice::Sample {
        temperature: 0.8,
        top_k: Some(50),
        top_p: None,
        seed: 78,
    };
    let plain = TokenChoice::Sample {
        temperature: 0.8,
        top_k: None,
        top_p: None,
        seed: 79,
    };
    let mut cases = vec![greedy_case(fmt, 1, &vals, &mut prg)];
    // three rows: 147,456 logits, more than one batch of the mpc layer
    let three: Vec<i64> = (0..3).flat_map(|_| big_logits(&mut prg, v)).collect();
    cases.push(greedy_case(fmt, 3, &three, &mut prg));
    for ch in [&sample, &topk, &plain] {
        cases.push(Case {
            x: share(&fmt, 1, &vals, &mut prg),
            fmt,
            choice: [ch.public(), ch.clone()],
        });
    }
    let got = run_cases(NlConfig::default(), &cases);
    assert_eq!(got[0].1.token(), Some(argmax(&vals, v)[0]));
    assert_eq!(got[1].1.tokens().unwrap(), argmax(&three, v).as_slice());
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(vals[i]));
    let top50 = &order[..50];
    for (i, (_, c, m, secs)) in got.iter().enumerate() {
        let choice = &cases[i].choice[1];
        let rows = rows_vocab(&cases[i].x[0]).0;
        let cost = choose_token_cost(rows, v, &fmt, choice, NlConfig::default()).unwrap();
        check_cost(&format!("{choice:?}"), *m, cost);
        eprintln!(
            "V = 49152 x {rows} {choice:?}: token {:?}, {} bytes, {} flights (bound {}), COTs \
             {:?}, {secs:.2} s",
            c.token(),
            m.bytes,
            m.rounds,
            cost.rounds,
            m.cots
        );
        if i == 2 || i == 3 {
            assert!(top50.contains(&(c.token().unwrap() as usize)));
        }
    }
}

/// The carried-bits index against the suggested alternative, the index in the low bits of
/// the values (`v 2^b + 2^b - 1 - i`: comparisons and muxes `b` bits wider, no index ANDs),
/// from the exact cost formulas at V = 49,152: the carried index needs 42% fewer bytes.
#[test]
fn carried_index_beats_the_index_in_the_low_bits() {
    let cfg = NlConfig::default();
    let fmt = fmt37();
    let v = 49_152usize;
    let ours = choose_token_cost(1, v, &fmt, &TokenChoice::Greedy, cfg).unwrap();
    let b = usize::BITS - (v - 1).leading_zeros();
    let wide = Ring::new(18 + b + 2).unwrap();
    let mut low = Cost::default();
    let mut cur = v;
    while cur > 1 {
        let np = cur / 2;
        low = low + nl::msb_cost(np, wide, cfg);
        if cur.div_ceil(2) > 1 {
            low = low + nl::mux_cost(np, wide, cfg);
        }
        cur = cur.div_ceil(2);
    }
    // the low b bits of the winner opened (8 bytes)
    low.bytes += 8;
    eprintln!(
        "greedy V = 49152: carried index {} B, {} flights; index in the low bits {} B, {} \
         flights",
        ours.bytes, ours.rounds, low.bytes, low.rounds
    );
    assert!((ours.bytes as f64) < 0.6 * low.bytes as f64);
}

/// The probabilities of sampling with `choice` from the (decoded) logits `x` of one row, as
/// HuggingFace's warpers define them (temperature, top-k keeping ties, top-p keeping `i` iff
/// the mass strictly above `x_i` is below `p`, ties together), top-p within the top 64 when
/// `top_k` is not given.
fn reference(x: &[f64], t: f64, top_k: Option<usize>, top_p: Option<f64>) -> Vec<f64> {
    let v = x.len();
    let k = top_k.or(top_p.map(|_| TOP_P_DEFAULT_K)).unwrap_or(v).min(v);
    let mut sorted = x.to_vec();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let thr = sorted[k - 1];
    let keep_k: Vec<bool> = x.iter().map(|&a| a >= thr).collect();
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = (0..v)
        .map(|i| {
            if keep_k[i] {
                ((x[i] - m) / t).exp()
            } else {
                0.0
            }
        })
        .collect();
    let z: f64 = e.iter().sum();
    let q: Vec<f64> = e.iter().map(|a| a / z).collect();
    let keep: Vec<bool> = match top_p {
        Some(p) if p < 1.0 => (0..v)
            .map(|i| {
                let above: f64 = (0..v).filter(|&j| x[j] > x[i]).map(|j| q[j]).sum();
                keep_k[i] && above < p
            })
            .collect(),
        _ => keep_k,
    };
    let zz: f64 = (0..v).filter(|&i| keep[i]).map(|i| q[i]).sum();
    (0..v)
        .map(|i| if keep[i] { q[i] / zz } else { 0.0 })
        .collect()
}

/// Chi-square statistic of `counts` against `probs` over the support, and its degrees of
/// freedom; panics if a count falls outside the support.
fn chi2(counts: &[usize], probs: &[f64]) -> (f64, usize) {
    let n: usize = counts.iter().sum();
    let mut s = 0.0;
    let mut df = 0;
    for (&c, &p) in counts.iter().zip(probs) {
        if p == 0.0 {
            assert_eq!(c, 0, "a token outside the support was sampled");
            continue;
        }
        let e = p * n as f64;
        s += (c as f64 - e).powi(2) / e;
        df += 1;
    }
    (s, df - 1)
}

/// Chi-square critical values at significance 1e-4 by degrees of freedom (0 unused).
const CHI2_CRIT: [f64; 11] = [
    0.0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72, 35.56,
];

/// Logits, temperature, top-k, top-p.
type Setting<'a> = (&'a [f64], f64, Option<usize>, Option<f64>);

/// Sampling against the plaintext distribution: 3,000 independent draws (rows) of the same
/// logits per setting (V = 8 and V = 11; temperatures 0.8, 1.3, 2.0; top-k 3 and 4; top-p 0.93
/// alone (5 tokens); top-k 6 with top-p 0.8 (4 tokens); the nucleus boundaries at least 0.02
/// away from `p`), each setting one protocol call with uniformly random
/// shares. Tokens outside the top-k / nucleus never appear; the chi-square statistic over the
/// support is below the 1e-4 critical value, while the same counts reject the distribution
/// of twice the temperature or of the unfiltered softmax (the test has power); bytes and COTs
/// equal the cost.
#[test]
fn sampling_matches_the_plaintext_distribution() {
    let mut prg = Prg::from_seed([5; 32]);
    let fmt = fmt37();
    let fx = FixedPoint::new(fmt.ring, fmt.frac).unwrap();
    let l8 = [1.2, 0.3, -0.5, 2.0, 0.0, -1.5, 1.9, 0.7];
    let l11 = [0.5, -2.0, 3.0, 2.2, -0.7, 1.0, 2.9, -3.0, 0.1, 1.7, -1.2];
    let settings: Vec<Setting<'_>> = vec![
        (&l8, 0.8, None, None),
        (&l8, 0.8, Some(3), None),
        (&l8, 0.8, None, Some(0.93)),
        (&l8, 1.3, Some(6), Some(0.8)),
        (&l11, 2.0, Some(4), None),
        (&l11, 2.0, None, None),
    ];
    let rows = 3000;
    let mut cases = Vec::new();
    for (i, &(l, t, k, p)) in settings.iter().enumerate() {
        let enc: Vec<i64> = l.iter().map(|&a| fmt.ring.to_i64(fx.encode(a))).collect();
        let flat: Vec<i64> = (0..rows).flat_map(|_| enc.clone()).collect();
        let choice = TokenChoice::Sample {
            temperature: t,
            top_k: k,
            top_p: p,
            seed: 1000 + i as u64,
        };
        cases.push(Case {
            x: share(&fmt, rows, &flat, &mut prg),
            fmt,
            choice: [choice.public(), choice],
        });
    }
    let got = run_cases(NlConfig::default(), &cases);
    for ((&(l, t, k, p), (_, c, m, secs)), case) in settings.iter().zip(&got).zip(&cases) {
        let v = l.len();
        let dec: Vec<f64> = l.iter().map(|&a| fx.decode(fx.encode(a))).collect();
        let want = reference(&dec, t, k, p);
        let mut counts = vec![0usize; v];
        for &id in c.tokens().unwrap() {
            counts[id as usize] += 1;
        }
        let (stat, df) = chi2(&counts, &want);
        eprintln!(
            "V = {v}, T = {t}, top-k {k:?}, top-p {p:?}: counts {counts:?}, expected {:?}, \
             chi2 {stat:.2} (df {df}), {} B, {secs:.2} s",
            want.iter()
                .map(|q| (q * rows as f64).round())
                .collect::<Vec<_>>(),
            m.bytes
        );
        assert!(
            stat < CHI2_CRIT[df],
            "chi2 {stat} with {df} degrees of freedom"
        );
        // power: a wrong temperature and the unfiltered softmax are rejected
        let wrong_t = reference(&dec, t * 2.0, k, p);
        let s_wrong = chi2_lenient(&counts, &wrong_t);
        assert!(s_wrong > CHI2_CRIT[df], "wrong T not rejected: {s_wrong}");
        if k.is_some() || p.is_some() {
            let unfiltered = reference(&dec, t, None, None);
            assert!(chi2_lenient(&counts, &unfiltered) > CHI2_CRIT[v - 1]);
        }
        let cost = choose_token_cost(rows, v, &fmt, &case.choice[1], NlConfig::default());
        check_cost("sampling", *m, cost.unwrap());
    }
}

/// Chi-square of `counts` against `probs` summed over every token with `p > 0`.
fn chi2_lenient(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .filter(|(_, &p)| p > 0.0)
        .map(|(&c, &p)| (c as f64 - p * n as f64).powi(2) / (p * n as f64))
        .sum()
}

/// Deterministic properties of the filters: top-k 1 and top-p 0.01 always give the argmax;
/// ties at the top-k threshold are kept (`[5, 3, 3, 3, 1, 0]` with k = 2 samples from the
/// first four only, each of them seen); the same client seed gives the same tokens whatever
/// seed the server passes; `k >= V` and `p = 1` cost what the unfiltered sampler costs.
#[test]
fn filters_are_exact_and_the_seed_is_the_clients() {
    let mut prg = Prg::from_seed([6; 32]);
    let fmt = fmt37();
    let rows = 200;
    let v = 37;
    let vals: Vec<i64> = (0..rows * v).map(|_| unif(&mut prg, 5 << 12)).collect();
    let greedy = argmax(&vals, v);
    let mk = |t: f64, k: Option<usize>, p: Option<f64>, seed: u64| TokenChoice::Sample {
        temperature: t,
        top_k: k,
        top_p: p,
        seed,
    };
    let ties: Vec<i64> = (0..rows)
        .flat_map(|_| [5, 3, 3, 3, 1, 0].map(|a| a << 12))
        .collect();
    let mut cases = Vec::new();
    for choice in [mk(3.0, Some(1), None, 1), mk(3.0, None, Some(0.01), 2)] {
        cases.push(Case {
            x: share(&fmt, rows, &vals, &mut prg),
            fmt,
            choice: [choice.public(), choice],
        });
    }
    let tie = mk(50.0, Some(2), None, 3);
    cases.push(Case {
        x: share(&fmt, rows, &ties, &mut prg),
        fmt,
        choice: [tie.public(), tie],
    });
    // the server's seed does not matter
    for server_seed in [0, 12345] {
        let c = mk(1.0, Some(10), Some(0.9), 99);
        let mut sc = c.clone();
        if let TokenChoice::Sample { seed, .. } = &mut sc {
            *seed = server_seed;
        }
        cases.push(Case {
            x: share(&fmt, rows, &vals, &mut prg),
            fmt,
            choice: [sc, c],
        });
    }
    let got = run_cases(NlConfig::default(), &cases);
    assert_eq!(got[0].1.tokens().unwrap(), greedy.as_slice());
    assert_eq!(got[1].1.tokens().unwrap(), greedy.as_slice());
    let mut seen = [0usize; 6];
    for &id in got[2].1.tokens().unwrap() {
        seen[id as usize] += 1;
    }
    assert!(
        seen[..4].iter().all(|&c| c > 0) && seen[4] == 0 && seen[5] == 0,
        "{seen:?}"
    );
    assert_eq!(got[3].1, got[4].1);
    for (i, (_, _, m, _)) in got.iter().enumerate() {
        let (r, vv) = rows_vocab(&cases[i].x[0]);
        let cost = choose_token_cost(r, vv, &fmt, &cases[i].choice[1], NlConfig::default());
        check_cost("filters", *m, cost.unwrap());
    }
    let cfg = NlConfig::default();
    let plain = choose_token_cost(rows, v, &fmt, &mk(1.0, None, None, 0), cfg).unwrap();
    for c in [mk(1.0, Some(v), None, 0), mk(1.0, None, Some(1.0), 0)] {
        assert_eq!(choose_token_cost(rows, v, &fmt, &c, cfg).unwrap(), plain);
    }
}

/// Every mode with IKNP COTs (their extension messages are online traffic): measured bytes
/// equal the cost; the logits mode reveals the exact logits to the client only.
#[test]
fn every_mode_costs_what_it_says_with_iknp_and_logits_are_exact() {
    let mut prg = Prg::from_seed([7; 32]);
    let fmt = fmt37();
    let (rows, v) = (2, 300);
    let vals: Vec<i64> = (0..rows * v).map(|_| unif(&mut prg, 30 << 12)).collect();
    let choices = [
        TokenChoice::Greedy,
        TokenChoice::Sample {
            temperature: 0.7,
            top_k: None,
            top_p: None,
            seed: 5,
        },
        TokenChoice::Sample {
            temperature: 0.7,
            top_k: Some(20),
            top_p: Some(0.95),
            seed: 6,
        },
        TokenChoice::Logits,
    ];
    let cases: Vec<Case> = choices
        .iter()
        .map(|c| Case {
            x: share(&fmt, rows, &vals, &mut prg),
            fmt,
            choice: [c.public(), c.clone()],
        })
        .collect();
    let cfg = NlConfig::iknp();
    let got = run_cases(cfg, &cases);
    for (c, (s, _, m, _)) in choices.iter().zip(&got) {
        assert_eq!(*s, TokenOutcome::Nothing);
        let cost = choose_token_cost(rows, v, &fmt, c, cfg).unwrap();
        check_cost(&format!("IKNP {c:?}"), *m, cost);
        eprintln!("IKNP {c:?}: {} B, {} flights", m.bytes, m.rounds);
    }
    assert_eq!(got[0].1.tokens().unwrap(), argmax(&vals, v).as_slice());
    let want: Vec<f64> = vals.iter().map(|&a| a as f64 / 4096.0).collect();
    assert_eq!(got[3].1.logits().unwrap(), want.as_slice());
}

/// The choice travels as a control message (serde): the client sends its public part.
#[test]
fn the_choice_is_a_control_message() {
    let c = TokenChoice::Sample {
        temperature: 0.7,
        top_k: Some(40),
        top_p: Some(0.9),
        seed: 123,
    };
    let sent = c.public();
    let (got, ()) = run_two_party(
        |mut ch| ch.recv_msg::<TokenChoice>().unwrap(),
        |mut ch| {
            ch.send_msg(&sent).unwrap();
            ch.flush().unwrap();
        },
    );
    assert_eq!(got, sent);
    assert_ne!(got, c);
    let texts: Vec<&str> = [TokenChoice::Greedy, c, TokenChoice::Logits]
        .iter()
        .map(TokenChoice::reveals)
        .collect();
    assert!(texts.iter().all(|t| t.contains("server learns nothing")));
    assert!(texts[0] != texts[1] && texts[1] != texts[2]);
}

/// A channel that rewrites the `target`-th message this party sends.
struct Corrupt<C> {
    inner: C,
    sent: u64,
    target: u64,
    f: fn(&[u8]) -> Vec<u8>,
}

impl<C: Channel> Channel for Corrupt<C> {
    fn send_bytes(&mut self, data: &[u8]) -> duet_transport::Result<()> {
        self.sent += 1;
        if self.sent == self.target {
            self.inner.send_bytes(&(self.f)(data))
        } else {
            self.inner.send_bytes(data)
        }
    }
    fn recv_bytes_max(&mut self, max: usize) -> duet_transport::Result<Vec<u8>> {
        self.inner.recv_bytes_max(max)
    }
    fn max_frame(&self) -> u64 {
        self.inner.max_frame()
    }
    fn set_max_frame(&mut self, max: u64) {
        self.inner.set_max_frame(max)
    }
    fn flush(&mut self) -> duet_transport::Result<()> {
        self.inner.flush()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
    fn peer(&self) -> &str {
        self.inner.peer()
    }
}

/// Runs `choice` on `x` with the server's `target`-th message (counted from the start of
/// `choose_token`; 0: none) rewritten by `f`; returns the client's result and the number of
/// messages the server sent.
fn run_corrupted(
    x: &[AShare; 2],
    fmt: &LogitFormat,
    choice: &TokenChoice,
    target: u64,
    f: fn(&[u8]) -> Vec<u8>,
) -> (Result<TokenOutcome>, u64) {
    let cfg = NlConfig::default();
    let (rows, v) = rows_vocab(&x[0]);
    let need = choose_token_cost(rows, v, fmt, choice, cfg).unwrap();
    let (sent, client) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([50; 32]);
            let mut s = NlSession::setup(&mut ch, Role::Server, &mut rng, cfg).unwrap();
            s.reserve(&mut ch, need.cots).unwrap();
            let mut cc = Corrupt {
                inner: &mut ch,
                sent: 0,
                target,
                f,
            };
            let _ = choose_token(&mut s, &mut cc, &x[0], fmt, choice);
            cc.sent
        },
        |mut ch| {
            let mut rng = Prg::from_seed([51; 32]);
            let mut s = NlSession::setup(&mut ch, Role::Client, &mut rng, cfg).unwrap();
            s.reserve(&mut ch, need.cots).unwrap();
            choose_token(&mut s, &mut ch, &x[1], fmt, choice)
        },
    );
    (client, sent)
}

/// Corrupted or short messages from the server give the client an error, never a panic: the
/// opened index with a high bit set, or one bit above the vocabulary's range, or cut short; a
/// garbage first message of the comparisons; short logits.
#[test]
fn corrupted_or_short_messages_are_errors() {
    let mut prg = Prg::from_seed([8; 32]);
    let fmt = fmt37();
    let v = 1000;
    let vals: Vec<i64> = (0..v).map(|_| unif(&mut prg, 1 << 15)).collect();
    let x = share(&fmt, 1, &vals, &mut prg);
    let g = TokenChoice::Greedy;
    let (ok, sent) = run_corrupted(&x, &fmt, &g, 0, |d| d.to_vec());
    assert_eq!(ok.unwrap().token(), Some(argmax(&vals, v)[0]));
    let flip_high: fn(&[u8]) -> Vec<u8> = |d| {
        let mut d = d.to_vec();
        d[7] ^= 0x40;
        d
    };
    // bit 10 of the index: at least 1024 > V
    let flip_range: fn(&[u8]) -> Vec<u8> = |d| {
        let mut d = d.to_vec();
        d[1] ^= 0x04;
        d
    };
    let cut: fn(&[u8]) -> Vec<u8> = |d| d[..d.len() - 1].to_vec();
    let garbage: fn(&[u8]) -> Vec<u8> = |d| vec![0xa5; d.len() + 3];
    for (what, target, f) in [
        ("high bit", sent, flip_high),
        ("out of range", sent, flip_range),
        ("short", sent, cut),
        ("garbage first message", 1, garbage),
        ("garbage middle message", sent / 2, garbage),
    ] {
        let (r, _) = run_corrupted(&x, &fmt, &g, target, f);
        let e = r.expect_err(what);
        eprintln!("{what}: {e}");
    }
    let (r, _) = run_corrupted(&x, &fmt, &TokenChoice::Logits, 1, cut);
    assert!(r.is_err());
    let sample = TokenChoice::Sample {
        temperature: 1.0,
        top_k: Some(5),
        top_p: Some(0.5),
        seed: 1,
    };
    let (ok, sent) = run_corrupted(&x, &fmt, &sample, 0, |d| d.to_vec());
    assert!(ok.is_ok());
    for target in [1, sent / 3, sent] {
        let (r, _) = run_corrupted(&x, &fmt, &sample, target, garbage);
        assert!(r.is_err(), "sampling, message {target} of {sent}");
    }
}

/// Inputs the call refuses: a ring that is not the format's, an empty vocabulary axis.
#[test]
fn bad_inputs_are_errors() {
    let fmt = fmt37();
    let other = AShare::zeros(Ring::new(40).unwrap(), vec![1, 5]).unwrap();
    let empty = AShare::zeros(fmt.ring, vec![2, 0]).unwrap();
    let (a, b) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([60; 32]);
            let mut s =
                NlSession::setup(&mut ch, Role::Server, &mut rng, NlConfig::default()).unwrap();
            (
                choose_token(&mut s, &mut ch, &other, &fmt, &TokenChoice::Greedy).is_err(),
                choose_token(&mut s, &mut ch, &empty, &fmt, &TokenChoice::Greedy).is_err(),
            )
        },
        |mut ch| {
            let mut rng = Prg::from_seed([61; 32]);
            NlSession::setup(&mut ch, Role::Client, &mut rng, NlConfig::default()).unwrap();
        },
    );
    assert!(a.0 && a.1);
    let () = b;
}
