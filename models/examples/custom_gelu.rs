//! Adding a new GELU approximation end to end: define it once as a piecewise polynomial (the
//! `Exec` interpreters of `duet-mpc` run it on shares and price it), check its error in the
//! clear, run a whole model with it securely, and check that the cost model predicts the run's
//! bytes exactly. `cargo run --release -p duet-models --example custom_gelu`

#![allow(
    clippy::indexing_slicing,
    reason = "small fixed-size arrays indexed within their bounds"
)]

use duet_models::open::{ModelSpec, ServerModel};
use duet_models::run_reference;
use duet_models::secure::predict::Prediction;
use duet_models::session::{run_request, Reveal};
use duet_mpc::fixed_math::piecewise::{Piece, Piecewise};
use duet_mpc::fixed_math::poly::{Poly, PolyPlan};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{ActKind, CostBackend, SecureBackend, SecureOptions, Tokens};
use duet_transport::{run_two_party, Role};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// `x/2 + p(x^2)` on `[-3, 3)` (GELU minus `x/2` is even), `0` below, `x` above; `p` of degree
/// 3 in `x^2` fitted by least squares (normal equations). The backends run it in the narrowest
/// ring that holds its intermediates (`Piecewise::min_ring_bits`), extending the input first
/// when that is wider than the activation ring.
fn approximation(frac: u32) -> Result<Piecewise, Error> {
    const K: usize = 4;
    const T: f64 = 3.0;
    let mut a = [[0.0f64; K + 1]; K];
    for i in 0..2000 {
        let x = -T + 2.0 * T * (i as f64 + 0.5) / 2000.0;
        let basis: Vec<f64> = (0..K).map(|k| (x * x).powi(k as i32)).collect();
        for r in 0..K {
            for c in 0..K {
                a[r][c] += basis[r] * basis[c];
            }
            a[r][K] += basis[r] * (gelu(x) - x / 2.0);
        }
    }
    for p in 0..K {
        let pivot = a[p];
        for row in a.iter_mut().skip(p + 1) {
            let f = row[p] / pivot[p];
            for (v, pv) in row.iter_mut().zip(pivot).skip(p) {
                *v -= f * pv;
            }
        }
    }
    let mut even = [0.0; K];
    for r in (0..K).rev() {
        even[r] = (a[r][K] - (r + 1..K).map(|c| a[r][c] * even[c]).sum::<f64>()) / a[r][r];
    }
    let mut coeffs = vec![0.0; 2 * K - 1];
    for (k, c) in even.iter().enumerate() {
        coeffs[2 * k] = *c;
    }
    coeffs[1] = 0.5;
    let poly = Poly::new(&coeffs, PolyPlan::Powers, frac, 20, -T, T)?;
    Ok(Piecewise::new(
        &[-T, T],
        vec![Piece::Zero, Piece::Poly(poly), Piece::Identity],
        frac,
    )?)
}

fn main() -> Result<(), Error> {
    let opts = SecureOptions::default();
    let f = approximation(opts.frac)?;
    let worst = (0..=16000)
        .map(|i| -8.0 + i as f64 / 1000.0)
        .map(|x| (f.eval_f64(x) - gelu(x)).abs())
        .fold(0.0, f64::max);
    println!(
        "in the clear: max |error| {worst:.2e} on [-8, 8]; runs in Z_2^{}",
        f.min_ring_bits()?
    );

    let model = ServerModel::open(&ModelSpec::parse("bert-tiny")?)?;
    let g = &model.graph;
    let ids = [101u32, 7592, 2088, 999, 102];
    // both parties run the model walk on their backend with the new GELU
    let party = |role: Role, ch| -> Result<_, Error> {
        let mut b = SecureBackend::setup(ch, role, &opts)?;
        b.set_activation(ActKind::Gelu, f.clone());
        let (weights, tokens) = match role {
            Role::Server => (
                Some(&model.weights as &dyn duet_models::WeightSource),
                Tokens::Count(ids.len()),
            ),
            Role::Client => (None, Tokens::Ids(&ids)),
        };
        let out = run_request(
            &mut b,
            g,
            weights,
            tokens,
            None,
            &Reveal::Hidden,
            &mut |_| {},
        )?;
        Ok((out, b.take_records()))
    };
    let (s, c) = run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    let ((_, server_records), (out, records)) = (s?, c?);
    let hidden = out.hidden.ok_or("the client got no output")?;
    let plain = run_reference(g, &model.weights, &ids)?;
    let err = hidden
        .data
        .iter()
        .zip(&plain.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("bert-tiny with it, securely: max |error| vs the exact model {err:.2e}");

    // the cost model with the same GELU: every node's bytes as measured
    let mut cost = CostBackend::new(&opts, &MachineProfile::default_profile()?)?;
    cost.set_activation(ActKind::Gelu, f);
    run_request(
        &mut cost,
        g,
        None,
        Tokens::Count(ids.len()),
        None,
        &Reveal::Hidden,
        &mut |_| {},
    )?;
    let mut p = Prediction::default();
    p.add_records(&mut cost);
    for (r, (name, _, e)) in records.iter().zip(&p.nodes) {
        if r.name != *name || r.bytes != e.bytes {
            return Err(format!("{name}: predicted {} B, measured {} B", e.bytes, r.bytes).into());
        }
    }
    let gelu_bytes: u64 = records
        .iter()
        .filter(|r| r.name.ends_with("gelu"))
        .map(|r| r.bytes)
        .sum();
    println!(
        "predicted = measured bytes for all {} nodes ({} on the server's side too); GELU {gelu_bytes} B",
        records.len(),
        server_records.len()
    );
    Ok(())
}
