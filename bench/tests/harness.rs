//! The experiment harness's outputs: the Markdown table and SVG plots of `duet bench model
//! --out DIR` / `duet bench table --dir DIR`, on fake reports and end to end on bert-tiny.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_bench::harness::results;
use duet_bench::model_report::ModelReport;
use serde_json::json;
use std::path::Path;
use std::process::Command;

/// A fake report: two kinds (linear: 1 MB, 0.5 s; gelu: 2 kB, 0.01 s, scaled by `scale`), and
/// optionally the cost model's prediction for `linear`.
fn fake(protocol: &str, net: &str, scale: u64, predicted: bool) -> ModelReport {
    let (lin, act) = (1_000_000 * scale, 2_000 * scale);
    let v = json!({
        "model": "bert-tiny", "seq_len": 4, "protocol": protocol, "network": net,
        "wall_s": 2.0, "offline_s": 0.5, "online_s": 1.5,
        "bytes": { "client_to_server": lin, "server_to_client": act, "total": lin + act,
                   "setup": 777, "cached": 0 },
        "rounds": 10,
        "peak_rss_bytes": { "server": 300 << 20, "client": 200 << 20 },
        // JSON has no NaN: an unmeasured accuracy is written as null
        "accuracy": { "max_abs_err": if predicted { json!(null) } else { json!(0.0123) },
                      "cosine_vs_reference": if predicted { json!(null) } else { json!(0.9999) } },
        "ops": [
            { "name": "layer0.q", "kind": "linear", "backend": "he", "bytes": lin, "rounds": 2,
              "wall_s": 0.5, "predicted_bytes": if predicted { 990_000 * scale } else { 0 },
              "predicted_s": if predicted { 0.4 } else { 0.0 } },
            { "name": "layer0.gelu", "kind": "gelu", "backend": "mpc", "bytes": act,
              "rounds": 8, "wall_s": 0.01 * scale as f64, "predicted_bytes": 0, "predicted_s": 0.0 }
        ],
        "network_note": format!("note of {protocol}/{net}"),
        "shaping": "netns+tbf, relay delay",
        "reference": "f64 reference",
        "runs": 1,
        "kinds": [
            { "kind": "linear", "backend": "he", "calls": 1, "bytes": lin, "rounds": 2, "wall_s": 0.5 },
            { "kind": "gelu", "backend": "mpc", "calls": 1, "bytes": act, "rounds": 8,
              "wall_s": 0.01 * scale as f64 }
        ]
    });
    results::parse_report(v).unwrap()
}

/// Well-formed XML: every tag closed in order, attributes quoted, one root element.
fn assert_well_formed_xml(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = text.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").expect("unterminated XML declaration") + 2..];
    }
    while let Some(i) = rest.find('<') {
        let before = &rest[..i];
        assert!(
            !before.contains('>'),
            "stray '>' in text content: {before:?}"
        );
        if stack.is_empty() {
            assert!(
                before.trim().is_empty(),
                "text outside the root: {before:?}"
            );
        }
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").expect("unterminated comment") + 3..];
            continue;
        }
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().expect("closing tag without an opening one");
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
        } else {
            let name: String = tag
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            assert!(!name.is_empty(), "empty tag name in <{tag}>");
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
    }
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    assert_eq!(roots, 1, "expected one root element");
}

fn check_svg(path: &Path, title: &str, series: &[&str], kinds: &[&str]) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert_well_formed_xml(&svg);
    assert!(svg.contains(title), "title {title:?} missing");
    for s in series.iter().chain(kinds) {
        assert!(svg.contains(&format!(">\n{s}\n<")), "label {s:?} missing");
    }
    // one bar per (run, kind with traffic or time) plus legend swatches and the background
    assert!(svg.matches("<rect").count() >= series.len() * kinds.len());
}

#[test]
fn the_table_and_plots_show_every_run_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let runs = vec![
        fake("iron", "wan", 30, false),
        fake("duet", "wan", 1, true),
        fake("duet", "lan", 1, false),
    ];
    for r in &runs {
        let p = results::write_run(dir.path(), r).unwrap();
        assert_eq!(
            p.file_name().unwrap().to_str().unwrap(),
            format!(
                "bert-tiny-4-{}-{}.json",
                r.report.protocol, r.report.network
            )
        );
    }
    // rebuilt from the folder, as `duet bench table --dir` does
    let read = results::read_dir(dir.path()).unwrap();
    assert_eq!(read.len(), 3);
    // sorted: duet before iron, lan before wan
    let order: Vec<(String, String)> = read
        .iter()
        .map(|r| (r.report.protocol.clone(), r.report.network.clone()))
        .collect();
    assert_eq!(
        order,
        [("duet", "lan"), ("duet", "wan"), ("iron", "wan")]
            .map(|(p, n)| (p.to_string(), n.to_string()))
    );
    // null accuracy comes back as NaN and prints as "-"
    assert!(read[1].report.accuracy.cosine_vs_reference.is_nan());
    let files = results::write_results(dir.path(), &read).unwrap();
    assert_eq!(files.len(), 3);

    let md = std::fs::read_to_string(dir.path().join(results::TABLE_FILE)).unwrap();
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| bert-tiny | 4 |"))
        .collect();
    // three tables (runs, bytes per kind, seconds per kind), one row per run in each
    assert_eq!(rows.len(), 9, "{md}");
    let runs_rows = &rows[..3];
    assert!(
        runs_rows[0].contains("| duet | lan | 978.52 KiB | 777 B |"),
        "{}",
        runs_rows[0]
    );
    assert!(runs_rows[0].contains("| 300.00 MiB | 200.00 MiB | 0.999900 | 1.230e-2 |"));
    assert!(runs_rows[0].ends_with("| netns+tbf, relay delay |"));
    assert!(
        runs_rows[1].contains("| - | - | netns+tbf"),
        "{}",
        runs_rows[1]
    );
    assert!(
        runs_rows[2].contains("| iron | wan | 28.67 MiB |"),
        "{}",
        runs_rows[2]
    );
    // per kind: "predicted / measured" only where predicted
    let header = md
        .lines()
        .find(|l| l.starts_with("| model | tokens | protocol | net | linear |"))
        .unwrap();
    assert_eq!(
        header,
        "| model | tokens | protocol | net | linear | gelu | total |"
    );
    let bytes_rows = &rows[3..6];
    assert_eq!(
        bytes_rows[1],
        "| bert-tiny | 4 | duet | wan | 966.80 KiB / 976.56 KiB | 1.95 KiB | 978.52 KiB |"
    );
    assert_eq!(
        bytes_rows[0],
        "| bert-tiny | 4 | duet | lan | 976.56 KiB | 1.95 KiB | 978.52 KiB |"
    );
    let secs_rows = &rows[6..9];
    assert_eq!(
        secs_rows[1],
        "| bert-tiny | 4 | duet | wan | 0.4000 / 0.5000 | 0.0100 | 0.5100 |"
    );
    assert!(md.contains("Cells are `predicted / measured`"));
    assert!(md.contains("- bert-tiny 4 tokens, iron on wan: note of iron/wan"));
    // no published figure for bert-tiny, but iron ran: its figures are quoted
    assert!(
        md.contains("| iron | bert-base | 128 | about 281 GB |"),
        "{md}"
    );
    assert!(!md.contains("| bolt | bert-base |"), "{md}");
    let md = results::markdown(&[fake("duet", "lan", 1, false)]);
    assert!(md.contains("(none published for these models)"), "{md}");
    assert!(!md.contains("Machine check"), "{md}");
    // --machine-check's ratio is listed, and survives the JSON round trip of a run file
    let mut checked = fake("duet", "lan", 1, false);
    checked.machine_check = Some(0.49);
    let v = serde_json::to_value(&checked).unwrap();
    assert_eq!(results::parse_report(v).unwrap().machine_check, Some(0.49));
    let md = results::markdown(&[checked]);
    assert!(md.contains("Machine check before each run"), "{md}");
    assert!(md.contains("duet lan 4: 0.49"), "{md}");
    // PUMA has no BERT figure in ARCHITECTURE.md; a PUMA run quotes its LLaMA one
    let md = results::markdown(&[fake("puma", "lan", 1, false)]);
    assert!(md.contains("| puma | llama-7b-shape | 1 |"), "{md}");
    let mut base = fake("iron", "lan", 1, false);
    base.report.model = "bert-base".into();
    base.report.seq_len = 128;
    let md = results::markdown(&[base]);
    assert!(
        md.contains("| iron | bert-base | 128 | about 281 GB |"),
        "{md}"
    );
    assert!(md.contains("| bolt | bert-base | 128 | about 25.7 GB"));

    let series = ["duet/lan", "duet/wan", "iron/wan"];
    let kinds = ["linear", "gelu"];
    check_svg(
        &dir.path().join(results::BYTES_PLOT),
        &format!("{} (bert-tiny, 4 tokens)", results::BYTES_TITLE),
        &series,
        &kinds,
    );
    check_svg(
        &dir.path().join(results::TIME_PLOT),
        &format!("{} (bert-tiny, 4 tokens)", results::TIME_TITLE),
        &series,
        &kinds,
    );
}

#[test]
fn the_xml_check_can_fail() {
    let bad = [
        "<svg><g></svg>",
        "<svg></svg><svg></svg>",
        "<svg a=\"1></svg>",
        "<svg>",
    ];
    for b in bad {
        let r = std::panic::catch_unwind(|| assert_well_formed_xml(b));
        assert!(r.is_err(), "{b} passed");
    }
    assert_well_formed_xml(
        "<?xml version=\"1.0\"?>\n<svg><g a=\"x\"/><!-- c --><text>t</text></svg>",
    );
}

#[test]
fn bench_table_on_a_folder_without_reports_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["bench", "table", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no run reports"), "{err}");
    std::fs::write(dir.path().join("x.json"), "{\"model\": 1}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["bench", "table", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("x.json"), "{err}");
}

/// `--shaping netns` where `ip`/`tc` cannot run (here: not on the PATH) is a one-line error
/// before any run, and leaves no namespace behind.
#[test]
fn netns_shaping_when_unavailable_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["bench", "model", "--builtin", "bert-tiny", "--seq-len", "4"])
        .args(["--net", "wan", "--shaping", "netns"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--shaping netns is unavailable"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args([
            "bench",
            "model",
            "--builtin",
            "bert-tiny",
            "--shaping",
            "tc",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--shaping tc"),
        "{err}"
    );
}

/// End to end: `duet bench model --net wan --out DIR` writes the run's JSON, results.md and
/// both plots; `duet bench table --dir DIR` rebuilds the same table from the JSON.
#[test]
fn bench_model_out_writes_json_table_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["bench", "model", "--builtin", "bert-tiny", "--seq-len", "4"])
        .args(["--net", "wan", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = dir.path().join("bert-tiny-4-duet-wan.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["network"], "wan");
    let shaping = v["shaping"].as_str().unwrap();
    let note = v["network_note"].as_str().unwrap();
    if duet_bench::harness::netns::netns_available().is_ok() {
        assert!(shaping.starts_with("netns+tbf"), "{shaping}");
        assert!(
            note.contains("tc tbf") && note.contains("400 Mbit/s"),
            "{note}"
        );
    } else {
        eprintln!("netns unavailable here: the run used {shaping}");
        assert_eq!(shaping, "relay");
    }
    assert!(note.contains("10.0 ms RTT"), "{note}");
    let md_path = dir.path().join(results::TABLE_FILE);
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.contains("| bert-tiny | 4 | duet | wan |"), "{md}");
    assert!(md.contains(shaping));
    for (f, t) in [
        (results::BYTES_PLOT, results::BYTES_TITLE),
        (results::TIME_PLOT, results::TIME_TITLE),
    ] {
        let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_well_formed_xml(&svg);
        assert!(svg.contains(t) && svg.contains("duet/wan"));
    }
    std::fs::remove_file(&md_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_duet"))
        .args(["bench", "table", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&md_path).unwrap(), md);
}
