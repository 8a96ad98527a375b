//! The `duet` binary as a user runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn duet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duet"))
}

#[test]
fn demo_runs_a_secure_linear_layer_within_the_fixed_point_bound() {
    let out = duet().args(["demo", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model"], "linear-demo");
    assert!(
        v["bytes"]["setup"].as_u64().unwrap() > 0,
        "keys are setup traffic"
    );
    let total = v["bytes"]["total"].as_u64().unwrap();
    let parts = v["bytes"]["client_to_server"].as_u64().unwrap()
        + v["bytes"]["server_to_client"].as_u64().unwrap();
    assert_eq!(total, parts);
    // X and W are rounded to 12 fractional bits (error <= 2^-13 each), |x| <= 4, |w| <= 1,
    // 64 terms per output, bias rounded to 24 bits: |err| <= 64 (2^-13 (1 + 4) + 2^-26) + 2^-25
    let bound = 64.0 * (5.0 / 8192.0 + 2f64.powi(-26)) + 2f64.powi(-25);
    let err = v["accuracy"]["max_abs_err"].as_f64().unwrap();
    assert!(err <= bound, "max_abs_err {err} > {bound}");
    assert!(v["accuracy"]["cosine_vs_reference"].as_f64().unwrap() > 0.9999);
    assert_eq!(v["ops"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_usage_exits_nonzero_with_one_line() {
    let out = duet()
        .args(["connect", "127.0.0.1:1", "--peer-fingerprint", "abcd"])
        .env("DUET_STATE_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("duet: error:") && err.contains("fingerprint"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1);
}

/// Runs `duet serve` and `duet connect` with fresh identities pinned to each other.
fn serve_and_connect(
    server_builtin: &str,
    client_builtin: &str,
) -> (std::process::Output, std::process::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let (sdir, cdir) = (dir.path().join("s"), dir.path().join("c"));
    let fp = |d: &std::path::Path| {
        let o = duet()
            .args(["fingerprint", "--state-dir"])
            .arg(d)
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let (sfp, cfp) = (fp(&sdir), fp(&cdir));
    assert_eq!(sfp.len(), 64);
    assert_eq!(fp(&sdir), sfp, "the identity persists");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let server = duet()
        .args([
            "serve",
            "--listen",
            &addr,
            "--builtin",
            server_builtin,
            "--json",
        ])
        .args(["--peer-fingerprint", &cfp, "--state-dir"])
        .arg(&sdir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let client = duet()
        .args(["connect", &addr, "--builtin", client_builtin, "--json"])
        .args(["--peer-fingerprint", &sfp, "--state-dir"])
        .arg(&cdir)
        .output()
        .unwrap();
    let server = server.wait_with_output().unwrap();
    (server, client, sfp)
}

#[test]
fn serve_and_connect_with_pinned_fingerprints() {
    let (server, client, sfp) = serve_and_connect("share-demo", "share-demo");
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        server.status.success(),
        "{}",
        String::from_utf8_lossy(&server.stderr)
    );
    assert!(String::from_utf8_lossy(&server.stderr).contains(&sfp));
    let v: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    // 3 (x + y) in fixed point with 16 fractional bits: error at most 3 * 2^-16
    assert!(v["accuracy"]["max_abs_err"].as_f64().unwrap() <= 3.0 / 65536.0);
    let n = duet_bench::demo::DEMO_LEN as u64;
    // client sends its share, server sends its share and the output share
    assert_eq!(v["bytes"]["client_to_server"], 8 * n);
    assert_eq!(v["bytes"]["server_to_client"], 16 * n);
    let s: serde_json::Value = serde_json::from_slice(&server.stdout).unwrap();
    assert_eq!(s["bytes"]["total"], v["bytes"]["total"]);
}

#[test]
fn different_payloads_fail_fast_on_both_sides() {
    let t = std::time::Instant::now();
    let (server, client, _) = serve_and_connect("share-demo", "linear-demo");
    assert!(!client.status.success() && !server.status.success());
    let err = String::from_utf8_lossy(&client.stderr);
    assert!(err.contains("--builtin"), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}
