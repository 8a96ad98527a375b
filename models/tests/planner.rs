//! The planner: its choices follow the cost model's formulas, change with the network where
//! the formulas say they should, and a planned run computes the right function.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::planner::{plan, AccuracyBudget, Decision, PlannedRun};
use duet_models::secure::{run_client, run_server, MulBackend, SecureOptions};
use duet_models::{run_reference, Arch, BuiltinModel, Graph, ModelConfig, RandomWeights};
use duet_protocols::cost_model::MachineProfile;
use duet_transport::relay::NetProfile;
use duet_transport::run_two_party;

fn small(b: BuiltinModel) -> ModelConfig {
    let mut c = b.config();
    c.layers = 1;
    c.vocab_size = 1000;
    c.max_positions = c.max_positions.min(128);
    c.hidden = 128;
    c.intermediate = 256;
    (c.heads, c.kv_heads) = if c.arch == Arch::Llama {
        (4, 2)
    } else {
        (2, 2)
    };
    c
}

fn planned(g: &Graph, seq: usize, net: &str) -> PlannedRun {
    let net = NetProfile::by_name(net).unwrap();
    let profile = MachineProfile::default_profile().unwrap();
    plan(
        g,
        seq,
        &SecureOptions::default(),
        &net,
        &profile,
        &AccuracyBudget::default(),
    )
    .unwrap()
}

/// Every decision keeps the candidate of least predicted latency.
fn check_argmin(ds: &[Decision]) {
    for d in ds {
        let best = d
            .candidates
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert_eq!(best.0, d.chosen, "{}: {:?}", d.target, d.candidates);
    }
}

fn chosen<'a>(ds: &'a [Decision], target: &str) -> &'a Decision {
    ds.iter().find(|d| d.target == target).unwrap()
}

/// LLaMA's gate product: slot-encoded HE has a fixed cost per batch of 8192 elements (a fixed
/// compute time and about a megabyte), Gilboa products from COTs cost bytes and compute per
/// element (IKNP many bytes and little compute, Ferret few bytes and more). So for some sizes
/// one backend is the fewer bytes and the other the less compute: the slow network must take
/// the first, the fast network the second. The test finds such a size among a few sequence
/// lengths and checks the planner's choices on both networks against the formulas: each
/// decision is the candidate of least predicted latency on its network, the slow network's
/// choice has the fewer bytes, and the fast network's choice won despite more bytes. Which
/// backend wins where depends on the machine profile (the shipped one: COTs on lan, HE on
/// wan-slow).
#[test]
fn elementwise_backend_follows_the_network() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let mut flipped = None;
    for seq in [4, 8, 16, 32, 64] {
        let fast = planned(&g, seq, "lan");
        let slow = planned(&g, seq, "wan-slow");
        check_argmin(&fast.decisions);
        check_argmin(&slow.decisions);
        let (f, s) = (
            chosen(&fast.decisions, "element-wise products"),
            chosen(&slow.decisions, "element-wise products"),
        );
        println!(
            "seq {seq}: lan {} {:?}; wan-slow {} {:?}",
            f.chosen, f.candidates, s.chosen, s.candidates
        );
        assert_eq!(
            fast.opts.plan.elementwise.name(),
            f.chosen,
            "the plan carries the decision"
        );
        if f.chosen != s.chosen {
            // the formulas: the winner on the slow network has fewer bytes, on the fast one
            // less latency without the network terms
            let bytes = |d: &Decision, l: &str| d.candidates.iter().find(|c| c.0 == l).unwrap().2;
            assert!(bytes(s, &s.chosen) <= bytes(s, &f.chosen));
            assert!(bytes(f, &f.chosen) >= bytes(f, &s.chosen));
            flipped = Some((seq, f.chosen.clone(), s.chosen.clone()));
        }
    }
    let (seq, lan, slow) =
        flipped.expect("no sequence length where the network changes the choice");
    println!("seq {seq}: lan picks {lan}, wan-slow picks {slow}");
    let names = [MulBackend::He.name(), MulBackend::Cot.name()];
    assert!(names.contains(&lan.as_str()) && names.contains(&slow.as_str()));
}

/// A planned run (BERT, one layer) computes the model: the plan's choices are executed by both
/// parties and its traffic is the predicted traffic.
#[test]
fn planned_run_matches_reference_and_prediction() {
    let g = Graph::build(&small(BuiltinModel::BertTiny));
    let w = RandomWeights { seed: 3 };
    let ids: Vec<u32> = vec![0, 999, 7, 7, 42, 1];
    for net in ["lan", "wan-slow"] {
        let p = planned(&g, ids.len(), net);
        check_argmin(&p.decisions);
        let (s, c) = run_two_party(
            |mut ch| run_server(&mut ch, &g, &w, &p.opts, &mut |_| {}),
            |mut ch| run_client(&mut ch, &g, &ids, &p.opts, &mut |_| {}),
        );
        s.unwrap();
        let (out, report) = c.unwrap();
        let want = run_reference(&g, &w, &ids).unwrap();
        let err = out
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 0.1, "{net}: max abs error {err}");
        let predicted: u64 = p.prediction.nodes.iter().map(|n| n.2.bytes).sum();
        assert_eq!(report.online_bytes, predicted, "{net}: online bytes");
    }
}
