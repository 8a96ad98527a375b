//! Experiment outputs: one JSON file per run, a Markdown table (`results.md`) and SVG plots of
//! online bytes and seconds per operator kind across protocols and networks. Written by
//! `duet bench model --out DIR` after its runs and rebuilt from the JSON files by
//! `duet bench table --dir DIR`.
//!
//! The tables have one row per run (model, tokens, protocol, network) and quote the published
//! figures of each system ([`PUBLISHED`]). Per-kind cells print `predicted / measured` where
//! the run carries the cost model's prediction ([`predicted_per_kind`], the one place to
//! change when `ModelReport` gains its `predicted` field), else the measured figure alone.

use crate::model_report::ModelReport;
use crate::report::human_bytes;
use crate::DuetError;
use duet_protocols::cost_model::MachineProfile;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the Markdown table in the output folder.
pub const TABLE_FILE: &str = "results.md";
/// Name of the plot of online bytes per operator kind.
pub const BYTES_PLOT: &str = "bytes_per_kind.svg";
/// Name of the plot of online seconds per operator kind.
pub const TIME_PLOT: &str = "time_per_kind.svg";
/// Title of the bytes plot (followed by the model and tokens).
pub const BYTES_TITLE: &str = "Online bytes per operator kind";
/// Title of the time plot (followed by the model and tokens).
pub const TIME_TITLE: &str = "Online seconds per operator kind";

fn err(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// One published figure of another system (or of the paper a preset follows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Published {
    /// System, e.g. `iron`, as our preset spells it.
    pub system: &'static str,
    /// Model, as our built-in spells it.
    pub model: &'static str,
    /// Tokens.
    pub seq_len: usize,
    /// Communication, as published.
    pub communication: &'static str,
    /// Time, as published.
    pub time: &'static str,
    /// Setting (parties, machines, network).
    pub setting: &'static str,
    /// Where the number comes from.
    pub source: &'static str,
}

/// The published figures ARCHITECTURE.md anchors on (rounded as there; "-" where it quotes none).
pub const PUBLISHED: &[Published] = &[
    Published {
        system: "iron",
        model: "bert-base",
        seq_len: 128,
        communication: "about 281 GB",
        time: "-",
        setting: "two parties",
        source: "Iron (Hao et al., NeurIPS 2022), as quoted by ARCHITECTURE.md",
    },
    Published {
        system: "bolt",
        model: "bert-base",
        seq_len: 128,
        communication: "about 25.7 GB (10.9x less than Iron)",
        time: "-",
        setting: "two parties",
        source: "BOLT (Pang et al., IEEE S&P 2024), as quoted by ARCHITECTURE.md",
    },
    Published {
        system: "bumblebee",
        model: "bert-base",
        seq_len: 128,
        communication: "about one tenth of BOLT's (about 2.6 GB)",
        time: "3x faster than BOLT",
        setting: "two parties",
        source: "BumbleBee (Lu et al., NDSS 2025), as quoted by ARCHITECTURE.md",
    },
    Published {
        system: "bumblebee",
        model: "llama-7b-shape",
        seq_len: 1,
        communication: "-",
        time: "8 to 14 minutes per token",
        setting: "two parties, large CPU servers",
        source: "BumbleBee (Lu et al., NDSS 2025), as quoted by ARCHITECTURE.md",
    },
    Published {
        system: "puma",
        model: "llama-7b-shape",
        seq_len: 1,
        communication: "-",
        time: "about 5 minutes per token, about 1 TB RAM per party",
        setting: "three parties (replicated sharing)",
        source: "PUMA (Dong et al., 2023), as quoted by ARCHITECTURE.md",
    },
];

/// The cost model's figures for one operator kind of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Predicted {
    /// Online bytes, both directions.
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
}

/// PREDICTED HOOK: the cost model's figures per operator kind of a run, `None` for kinds
/// without a prediction. Today they are the sums of the operator rows' `predicted_bytes` /
/// `predicted_s` (schema fields, zero until the planner fills them); when `ModelReport` gains
/// its `predicted` field, read it here: the tables and nothing else call this.
pub fn predicted_per_kind(r: &ModelReport) -> BTreeMap<String, Predicted> {
    let mut m: BTreeMap<String, Predicted> = BTreeMap::new();
    for o in &r.report.ops {
        if o.predicted_bytes == 0 && o.predicted_s == 0.0 {
            continue;
        }
        let p = m.entry(o.kind.clone()).or_default();
        p.bytes += o.predicted_bytes;
        p.seconds += o.predicted_s;
    }
    m
}

/// `<model>-<seq>-<protocol>-<net>.json`, with characters other than letters, digits, `.`,
/// `_` and `-` replaced by `_` (custom profiles such as `rate=1gbit:rtt=2ms`).
pub fn file_name(r: &ModelReport) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}-{}-{}-{}.json",
        clean(&r.report.model),
        r.report.seq_len,
        clean(&r.report.protocol),
        clean(&r.report.network)
    )
}

fn create_dir(dir: &Path) -> Result<(), DuetError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| err(format!("cannot create the folder {}: {e}", dir.display())))
}

fn write(path: &Path, text: &str) -> Result<(), DuetError> {
    std::fs::write(path, text).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// The file [`write_run`] writes `r` to in `dir`.
pub fn run_path(dir: &Path, r: &ModelReport) -> PathBuf {
    dir.join(file_name(r))
}

/// Writes one run's report as `DIR/<model>-<seq>-<protocol>-<net>.json`.
pub fn write_run(dir: &Path, r: &ModelReport) -> Result<PathBuf, DuetError> {
    create_dir(dir)?;
    let path = dir.join(file_name(r));
    write(&path, &(serde_json::to_string_pretty(r)? + "\n"))?;
    Ok(path)
}

/// Parses one JSON report. JSON has no NaN: serde writes an unmeasured accuracy as `null`,
/// which is read back as NaN here.
pub fn parse_report(mut v: serde_json::Value) -> Result<ModelReport, DuetError> {
    let mut nan = [false; 2];
    if let Some(acc) = v.get_mut("accuracy").and_then(|a| a.as_object_mut()) {
        for (i, k) in ["max_abs_err", "cosine_vs_reference"].iter().enumerate() {
            if acc.get(*k).is_some_and(serde_json::Value::is_null) {
                acc.insert((*k).to_string(), serde_json::Value::from(0.0));
                if let Some(n) = nan.get_mut(i) {
                    *n = true;
                }
            }
        }
    }
    let mut r: ModelReport = serde_json::from_value(v)?;
    if nan.first().copied().unwrap_or(false) {
        r.report.accuracy.max_abs_err = f64::NAN;
    }
    if nan.get(1).copied().unwrap_or(false) {
        r.report.accuracy.cosine_vs_reference = f64::NAN;
    }
    Ok(r)
}

/// Reads every `*.json` in `dir` (a report, or an array of them as `--json FILE` writes for
/// several runs), sorted as the tables show them. A machine profile kept beside the runs
/// (`duet calibrate`'s output, e.g. the profile fitted after a run) is skipped; any other file
/// that is not a report is an error naming the file.
pub fn read_dir(dir: &Path) -> Result<Vec<ModelReport>, DuetError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read the folder {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        // generation runs (`duet bench generate`) have their own table
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("-generate-"))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p)
            .map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
        let bad = |e: DuetError| err(format!("{} is not a run report: {e}", p.display()));
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.into()))?;
        if is_machine_profile(&v) {
            continue;
        }
        match v {
            serde_json::Value::Array(items) => {
                for it in items {
                    out.push(parse_report(it).map_err(bad)?);
                }
            }
            one => out.push(parse_report(one).map_err(bad)?),
        }
    }
    if out.is_empty() {
        return Err(err(format!("no run reports (*.json) in {}", dir.display())));
    }
    sort_runs(&mut out);
    Ok(out)
}

/// Whether `v` is a machine profile (it parses as one: a report lacks the profile's constants).
fn is_machine_profile(v: &serde_json::Value) -> bool {
    v.is_object() && serde_json::from_value::<MachineProfile>(v.clone()).is_ok()
}

fn rank(list: &[&str], x: &str) -> usize {
    list.iter().position(|p| *p == x).unwrap_or(list.len())
}

/// Model, tokens, then protocols in the order duet, iron, bolt, bumblebee, puma (others
/// after, by name), then networks lan, wan, wan-slow (others after).
pub fn sort_runs(runs: &mut [ModelReport]) {
    const PROTOCOLS: [&str; 5] = ["duet", "iron", "bolt", "bumblebee", "puma"];
    const NETS: [&str; 3] = ["lan", "wan", "wan-slow"];
    runs.sort_by(|a, b| {
        let (a, b) = (&a.report, &b.report);
        (a.model.as_str(), a.seq_len)
            .cmp(&(b.model.as_str(), b.seq_len))
            .then(rank(&PROTOCOLS, &a.protocol).cmp(&rank(&PROTOCOLS, &b.protocol)))
            .then(a.protocol.cmp(&b.protocol))
            .then(rank(&NETS, &a.network).cmp(&rank(&NETS, &b.network)))
            .then(a.network.cmp(&b.network))
    });
}

/// Operator kinds in order of first appearance (the graph's order).
pub fn kinds_of(runs: &[ModelReport]) -> Vec<String> {
    let mut kinds: Vec<String> = Vec::new();
    for r in runs {
        for k in &r.kinds {
            if !kinds.contains(&k.kind) {
                kinds.push(k.kind.clone());
            }
        }
    }
    kinds
}

fn several_models(runs: &[ModelReport]) -> bool {
    runs.windows(2).any(|w| match w {
        [a, b] => (&a.report.model, a.report.seq_len) != (&b.report.model, b.report.seq_len),
        _ => false,
    })
}

/// A run's label in plots: `protocol/net` (prefixed by `model@tokens` when several).
fn label(r: &ModelReport, models: bool) -> String {
    let base = format!("{}/{}", r.report.protocol, r.report.network);
    if models {
        format!("{}@{} {base}", r.report.model, r.report.seq_len)
    } else {
        base
    }
}

fn secs(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s >= 100.0 {
        format!("{s:.1}")
    } else if s >= 1.0 {
        format!("{s:.2}")
    } else {
        format!("{s:.4}")
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown of `results.md`: runs, bytes per kind, seconds per kind, shaping notes and
/// the published figures for the models and the systems present.
pub fn markdown(runs: &[ModelReport]) -> String {
    let kinds = kinds_of(runs);
    let mut s = String::from("# Results\n\n");
    s.push_str(&format!(
        "{} run(s), written by `duet bench model --out DIR` (rebuild with `duet bench table --dir DIR`). \
         Bytes are online traffic in both directions (setup apart); seconds are the client's wall \
         clock. Peak RSS is each party's own process.\n\n",
        runs.len()
    ));
    s.push_str("## Runs\n\n");
    s.push_str(
        "| model | tokens | protocol | net | online bytes | setup bytes | online s | wall s | rounds \
         | peak RSS server | peak RSS client | cosine | max abs err | shaping |\n",
    );
    s.push_str("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in runs {
        let p = &r.report;
        let acc = &p.accuracy;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&p.model),
            p.seq_len,
            cell(&p.protocol),
            cell(&p.network),
            human_bytes(p.bytes.total),
            human_bytes(p.bytes.setup),
            secs(p.online_s),
            secs(p.wall_s),
            p.rounds,
            human_bytes(p.peak_rss_bytes.server),
            human_bytes(p.peak_rss_bytes.client),
            if acc.cosine_vs_reference.is_finite() {
                format!("{:.6}", acc.cosine_vs_reference)
            } else {
                "-".into()
            },
            if acc.max_abs_err.is_finite() {
                format!("{:.3e}", acc.max_abs_err)
            } else {
                "-".into()
            },
            cell(if r.shaping.is_empty() {
                "-"
            } else {
                &r.shaping
            }),
        ));
    }
    let checked: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.machine_check.map(|m| {
                format!(
                    "{} {} {}: {m:.2}",
                    r.report.protocol, r.report.network, r.report.seq_len
                )
            })
        })
        .collect();
    if !checked.is_empty() {
        s.push_str(&format!(
            "\nMachine check before each run (`--machine-check`: median predicted / measured \
             seconds of the calibration's check operators against the shipped profile; near 1, \
             the machine was in the profile's state): {}.\n",
            checked.join(", ")
        ));
    }
    let any_predicted = runs.iter().any(|r| !predicted_per_kind(r).is_empty());
    let per_kind = |s: &mut String, title: &str, bytes: bool| {
        s.push_str(&format!("\n## {title}\n\n"));
        if any_predicted {
            s.push_str(
                "Cells are `predicted / measured` where the cost model predicted the kind.\n\n",
            );
            let mut profiles: Vec<&str> = runs
                .iter()
                .map(|r| r.profile.as_str())
                .filter(|p| !p.is_empty())
                .collect();
            profiles.sort_unstable();
            profiles.dedup();
            for p in profiles {
                s.push_str(&format!(
                    "Predicted with the machine profile measured {p}.\n\n"
                ));
            }
        } else {
            s.push_str(
                "Measured (the cost model's predictions will show as `predicted / measured`).\n\n",
            );
        }
        s.push_str("| model | tokens | protocol | net |");
        for k in &kinds {
            s.push_str(&format!(" {} |", cell(k)));
        }
        s.push_str(&format!(
            " total |\n|---|---:|---|---|{}---:|\n",
            "---:|".repeat(kinds.len())
        ));
        for r in runs {
            let pred = predicted_per_kind(r);
            let p = &r.report;
            s.push_str(&format!(
                "| {} | {} | {} | {} |",
                cell(&p.model),
                p.seq_len,
                cell(&p.protocol),
                cell(&p.network)
            ));
            for k in &kinds {
                let measured = r.kinds.iter().find(|t| &t.kind == k);
                let m = match measured {
                    None => "-".to_string(),
                    Some(t) if bytes => human_bytes(t.bytes),
                    Some(t) => secs(t.wall_s),
                };
                match pred.get(k) {
                    Some(q) if bytes => s.push_str(&format!(" {} / {m} |", human_bytes(q.bytes))),
                    Some(q) => s.push_str(&format!(" {} / {m} |", secs(q.seconds))),
                    None => s.push_str(&format!(" {m} |")),
                }
            }
            if bytes {
                s.push_str(&format!(" {} |\n", human_bytes(p.bytes.total)));
            } else {
                let sum: f64 = r.kinds.iter().map(|t| t.wall_s).sum();
                s.push_str(&format!(" {} |\n", secs(sum)));
            }
        }
    };
    per_kind(&mut s, "Online bytes per operator kind", true);
    per_kind(&mut s, "Online seconds per operator kind", false);
    s.push_str("\n## Shaping\n\n");
    for r in runs {
        let p = &r.report;
        s.push_str(&format!(
            "- {} {} tokens, {} on {}: {}\n",
            p.model,
            p.seq_len,
            p.protocol,
            p.network,
            if r.network_note.is_empty() {
                "-"
            } else {
                &r.network_note
            }
        ));
    }
    s.push_str(
        "\n## Published figures\n\nFor comparison (not measured here; other hardware, networks and \
         threat models).\n\n| system | model | tokens | communication | time | setting | source |\n\
         |---|---|---:|---|---|---|---|\n",
    );
    // every figure for a model that ran, and every figure of a system that ran (PUMA, for
    // one, publishes no two-party BERT figure ARCHITECTURE.md quotes: its LLaMA one is listed)
    let models: Vec<&str> = runs.iter().map(|r| r.report.model.as_str()).collect();
    let systems: Vec<&str> = runs.iter().map(|r| r.report.protocol.as_str()).collect();
    let mut quoted = 0;
    for f in PUBLISHED
        .iter()
        .filter(|f| models.contains(&f.model) || systems.contains(&f.system))
    {
        quoted += 1;
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            f.system, f.model, f.seq_len, f.communication, f.time, f.setting, f.source
        ));
    }
    if quoted == 0 {
        s.push_str("| - | (none published for these models) | | | | | |\n");
    }
    s.push_str(&format!(
        "\nPlots: [{BYTES_PLOT}]({BYTES_PLOT}), [{TIME_PLOT}]({TIME_PLOT}).\n"
    ));
    s
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn plot_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> DuetError {
    err(format!("cannot draw the plot: {e}"))
}

/// A grouped bar chart on a log axis: one group per kind, one bar per series (zero values,
/// e.g. local kinds' bytes, draw no bar).
fn grouped_bars(
    title: &str,
    y_desc: &str,
    kinds: &[String],
    series: &[(String, Vec<f64>)],
    fmt: &dyn Fn(f64) -> String,
) -> Result<String, DuetError> {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0f64, f64::max);
    let (lo, hi) = if values.is_empty() {
        (0.1, 1.0)
    } else {
        (lo / 2.0, hi * 4.0)
    };
    let n = kinds.len().max(1);
    let width = u32::try_from(150 * n).unwrap_or(u32::MAX).max(900);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_desc)
            .y_label_formatter(&|v| fmt(*v))
            .draw()
            .map_err(plot_err)?;
        let m = series.len().max(1) as f64;
        let w = 0.8 / m;
        for (j, (name, vals)) in series.iter().enumerate() {
            let color = COLORS.get(j % COLORS.len()).copied().unwrap_or(BLACK);
            let x_off = 0.1 + j as f64 * w;
            chart
                .draw_series(
                    vals.iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite() && **v > 0.0)
                        .map(|(i, v)| {
                            let x0 = i as f64 + x_off;
                            Rectangle::new([(x0, lo), (x0 + w * 0.92, *v)], color.filled())
                        }),
                )
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        let style =
            TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, k) in kinds.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
            root.draw(&Text::new(k.clone(), (px, py + 8), style.clone()))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn title_suffix(runs: &[ModelReport]) -> String {
    match runs.first() {
        Some(r) if !several_models(runs) => {
            format!(" ({}, {} tokens)", r.report.model, r.report.seq_len)
        }
        _ => String::new(),
    }
}

fn series(runs: &[ModelReport], kinds: &[String], bytes: bool) -> Vec<(String, Vec<f64>)> {
    let models = several_models(runs);
    runs.iter()
        .map(|r| {
            let v = kinds
                .iter()
                .map(|k| {
                    r.kinds.iter().find(|t| &t.kind == k).map_or(0.0, |t| {
                        if bytes {
                            t.bytes as f64
                        } else {
                            t.wall_s
                        }
                    })
                })
                .collect();
            (label(r, models), v)
        })
        .collect()
}

/// Decimal units for the log axis, whose ticks fall on powers of ten: `100 kB`, `1 MB`.
fn si_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = v;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let unit = UNITS.get(u).copied().unwrap_or("B");
    if v >= 10.0 || v == v.round() {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// SVG of online bytes per operator kind, one bar per run (log scale).
pub fn bytes_svg(runs: &[ModelReport]) -> Result<String, DuetError> {
    let kinds = kinds_of(runs);
    grouped_bars(
        &format!("{BYTES_TITLE}{}", title_suffix(runs)),
        "online bytes (log scale)",
        &kinds,
        &series(runs, &kinds, true),
        &si_bytes,
    )
}

/// SVG of online seconds per operator kind, one bar per run (log scale).
pub fn time_svg(runs: &[ModelReport]) -> Result<String, DuetError> {
    let kinds = kinds_of(runs);
    grouped_bars(
        &format!("{TIME_TITLE}{}", title_suffix(runs)),
        "seconds (log scale)",
        &kinds,
        &series(runs, &kinds, false),
        &|v| {
            if v >= 1.0 {
                format!("{v:.0} s")
            } else if v >= 1e-3 {
                format!("{:.0} ms", v * 1e3)
            } else {
                format!("{:.0} us", v * 1e6)
            }
        },
    )
}

/// Writes `results.md` and both plots into `dir`; returns their paths.
pub fn write_results(dir: &Path, runs: &[ModelReport]) -> Result<Vec<PathBuf>, DuetError> {
    if runs.is_empty() {
        return Err(err("no runs to tabulate"));
    }
    create_dir(dir)?;
    let mut runs = runs.to_vec();
    sort_runs(&mut runs);
    let files = [
        (TABLE_FILE, markdown(&runs)),
        (BYTES_PLOT, bytes_svg(&runs)?),
        (TIME_PLOT, time_svg(&runs)?),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        write(&p, &text)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped five-preset folder keeps the profile fitted after its run beside the ten
    /// run reports: the table reads the reports and skips the profile.
    #[test]
    fn a_profile_beside_the_runs_is_skipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/presets");
        assert!(dir.join("profile-after-run.json").exists());
        let runs = read_dir(&dir).unwrap();
        assert_eq!(runs.len(), 10);
    }

    /// Any other JSON that is not a report is still an error naming the file.
    #[test]
    fn another_json_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("duet-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.json"), "{\"hello\": 1}").unwrap();
        let e = read_dir(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("notes.json") && e.contains("not a run report"),
            "{e}"
        );
    }
}
