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
fn demo_json_follows_the_report_schema_and_is_exact_enough() {
    let out = duet().args(["demo", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = duet_bench::demo::DEMO_LEN as u64;
    // client sends its share, server sends its share and the output share
    assert_eq!(v["bytes"]["client_to_server"], 8 * n);
    assert_eq!(v["bytes"]["server_to_client"], 16 * n);
    assert_eq!(v["bytes"]["total"], 24 * n);
    assert_eq!(v["rounds"], 3);
    // 3 (x + y) in fixed point with 16 fractional bits: error at most 3 * 2^-16
    let err = v["accuracy"]["max_abs_err"].as_f64().unwrap();
    assert!(err <= 3.0 / 65536.0, "max_abs_err {err}");
    assert!(v["accuracy"]["cosine_vs_reference"].as_f64().unwrap() > 0.999_999);
    assert_eq!(v["ops"].as_array().unwrap().len(), 3);
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

#[test]
fn serve_and_connect_with_pinned_fingerprints() {
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
    // pick a free port
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
            "share-demo",
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
        .args([
            "connect",
            &addr,
            "--json",
            "--peer-fingerprint",
            &sfp,
            "--state-dir",
        ])
        .arg(&cdir)
        .output()
        .unwrap();
    let server = server.wait_with_output().unwrap();
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
    assert!(v["accuracy"]["max_abs_err"].as_f64().unwrap() <= 3.0 / 65536.0);
    let s: serde_json::Value = serde_json::from_slice(&server.stdout).unwrap();
    assert_eq!(s["bytes"]["total"], v["bytes"]["total"]);
}
