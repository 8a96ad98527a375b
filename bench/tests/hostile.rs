//! `duet serve` / `duet connect` against strangers, signals and dead peers, as a user runs
//! them: each test starts real processes on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn duet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duet"))
}

fn fingerprint(dir: &Path) -> String {
    let o = duet()
        .args(["fingerprint", "--state-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn free_addr() -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Three identities (server, client, stranger) in a temporary folder.
struct Ids {
    _dir: tempfile::TempDir,
    server: PathBuf,
    client: PathBuf,
    stranger: PathBuf,
    sfp: String,
    cfp: String,
}

fn ids() -> Ids {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, stranger) = (
        dir.path().join("s"),
        dir.path().join("c"),
        dir.path().join("x"),
    );
    let (sfp, cfp) = (fingerprint(&server), fingerprint(&client));
    fingerprint(&stranger);
    Ids {
        _dir: dir,
        server,
        client,
        stranger,
        sfp,
        cfp,
    }
}

/// A running `duet` whose stderr lines are collected by a thread (each with its time).
struct Running {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `within`) for a stderr line containing `needle`.
    fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?} within {within:?}: {:?}", self.seen),
            }
        }
    }

    /// Waits (up to `within`) for the exit; returns the status, the time it took and stderr.
    fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration, String) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let waited = t.elapsed();
                // the reader thread ends with the pipe
                while let Ok((_, l)) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(l);
                }
                return (s, waited, self.seen.join("\n"));
            }
            if t.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {within:?}: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ids: &Ids, addr: &str, builtin: &str, extra: &[&str]) -> Running {
    let mut cmd = duet();
    cmd.args(["serve", "--listen", addr, "--builtin", builtin])
        .args(["--peer-fingerprint", &ids.cfp, "--state-dir"])
        .arg(&ids.server)
        .args(extra);
    Running::start(&mut cmd)
}

fn connect(state: &Path, sfp: &str, addr: &str, builtin: &str, extra: &[&str]) -> Command {
    let mut cmd = duet();
    cmd.args(["connect", addr, "--builtin", builtin])
        .args(["--peer-fingerprint", sfp, "--state-dir"])
        .arg(state)
        .args(extra);
    cmd
}

fn output(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn serve_refuses_strangers_with_a_reason_and_then_serves_its_client() {
    let ids = ids();
    let addr = free_addr();
    let mut server = serve(&ids, &addr, "share-demo", &[]);
    server.wait_line("listening on", Duration::from_secs(30));
    for _ in 0..3 {
        let t = Instant::now();
        let (status, err) = output(&mut connect(
            &ids.stranger,
            &ids.sfp,
            &addr,
            "share-demo",
            &[],
        ));
        assert!(!status.success());
        assert!(
            err.contains("refused the connection")
                && err.contains("the server pins another client certificate")
                && err.contains(&ids.cfp)
                && err.contains(&addr),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    // the server is still there: the pinned client is served
    let (status, err) = output(&mut connect(
        &ids.client,
        &ids.sfp,
        &addr,
        "share-demo",
        &[],
    ));
    assert!(status.success(), "{err}");
    let (status, _, text) = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{text}");
    // at most one refusal line per second, with counts for the others
    let refusals = text
        .lines()
        .filter(|l| l.contains("refused a connection"))
        .count();
    assert!((1..=3).contains(&refusals), "{text}");
}

#[test]
fn serve_once_ends_after_a_refused_stranger() {
    let ids = ids();
    let addr = free_addr();
    let mut server = serve(&ids, &addr, "share-demo", &["--once"]);
    server.wait_line("listening on", Duration::from_secs(30));
    let (status, err) = output(&mut connect(
        &ids.stranger,
        &ids.sfp,
        &addr,
        "share-demo",
        &[],
    ));
    assert!(!status.success());
    assert!(err.contains("pins another client certificate"), "{err}");
    let (status, _, text) = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        text.contains("duet: error:") && text.contains(&ids.cfp),
        "{text}"
    );
}

/// A model session long enough to interrupt: bert-tiny on many lines of text.
fn model_session(ids: &Ids, idle: &str) -> (Running, Running, tempfile::TempDir) {
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "a secure line of text\n".repeat(500)).unwrap();
    let mut server = serve(ids, &addr, "bert-tiny", &["--idle-timeout", idle]);
    server.wait_line("listening on", Duration::from_secs(60));
    let mut cmd = connect(
        &ids.client,
        &ids.sfp,
        &addr,
        "bert-tiny",
        &["--idle-timeout", idle],
    );
    cmd.arg("--text-file").arg(&texts);
    let client = Running::start(&mut cmd);
    // well into the session: keys and OT setup done, requests under way
    std::thread::sleep(Duration::from_secs(4));
    (server, client, dir)
}

fn assert_interrupted(text: &str, sig: &str, code: i32, status: std::process::ExitStatus) {
    assert_eq!(status.code(), Some(code), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("duet: error: interrupted by") && last.contains(sig),
        "{text}"
    );
}

fn assert_peer_named(text: &str, needles: &[&str]) {
    let line = text
        .lines()
        .find(|l| l.starts_with("duet: error:"))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(line.contains("127.0.0.1"), "{text}");
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line}");
    }
}

#[test]
fn sigterm_of_the_server_mid_session_ends_the_client_with_the_reason() {
    let ids = ids();
    let (mut server, mut client, _dir) = model_session(&ids, "60");
    server.signal("-TERM");
    let t = Instant::now();
    let (status, _, text) = server.wait_exit(Duration::from_secs(10));
    assert_interrupted(&text, "SIGTERM", 143, status);
    let (status, _, text) = client.wait_exit(Duration::from_secs(10));
    let waited = t.elapsed();
    assert!(!status.success(), "{text}");
    assert_peer_named(&text, &["interrupted (SIGTERM)"]);
    eprintln!("server SIGTERM: client ended {waited:?} later");
    assert!(
        waited < Duration::from_secs(5),
        "client ended after {waited:?}"
    );
}

#[test]
fn sigint_of_the_client_mid_session_ends_the_server_with_the_reason() {
    let ids = ids();
    let (mut server, mut client, _dir) = model_session(&ids, "60");
    client.signal("-INT");
    let t = Instant::now();
    let (status, _, text) = client.wait_exit(Duration::from_secs(10));
    assert_interrupted(&text, "SIGINT", 130, status);
    let (status, _, text) = server.wait_exit(Duration::from_secs(10));
    let waited = t.elapsed();
    assert!(!status.success(), "{text}");
    assert_peer_named(&text, &["interrupted (SIGINT)"]);
    eprintln!("client SIGINT: server ended {waited:?} later");
    assert!(
        waited < Duration::from_secs(5),
        "server ended after {waited:?}"
    );
}

#[test]
fn sigterm_of_a_waiting_server_exits_at_once() {
    let ids = ids();
    let addr = free_addr();
    let mut server = serve(&ids, &addr, "bert-tiny", &[]);
    server.wait_line("listening on", Duration::from_secs(60));
    server.signal("-TERM");
    let (status, waited, text) = server.wait_exit(Duration::from_secs(10));
    assert_interrupted(&text, "SIGTERM", 143, status);
    eprintln!("waiting server SIGTERM: exited after {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn a_killed_client_is_noticed_within_the_idle_timeout() {
    let ids = ids();
    let (mut server, mut client, _dir) = model_session(&ids, "3");
    client.signal("-KILL");
    let t = Instant::now();
    let _ = client.wait_exit(Duration::from_secs(10));
    let (status, _, text) = server.wait_exit(Duration::from_secs(30));
    let waited = t.elapsed();
    assert!(!status.success(), "{text}");
    assert_peer_named(&text, &[]);
    eprintln!("client kill -9 (idle timeout 3 s): server ended {waited:?} later");
    assert!(
        waited < Duration::from_secs(3 + 5),
        "server ended {waited:?} after the kill"
    );
}

#[test]
fn a_killed_server_is_noticed_within_the_idle_timeout() {
    let ids = ids();
    let (mut server, mut client, _dir) = model_session(&ids, "3");
    server.signal("-KILL");
    let t = Instant::now();
    let _ = server.wait_exit(Duration::from_secs(10));
    let (status, _, text) = client.wait_exit(Duration::from_secs(30));
    let waited = t.elapsed();
    assert!(!status.success(), "{text}");
    assert_peer_named(&text, &[]);
    eprintln!("server kill -9 (idle timeout 3 s): client ended {waited:?} later");
    assert!(
        waited < Duration::from_secs(3 + 5),
        "client ended {waited:?} after the kill"
    );
}

#[test]
fn input_errors_name_the_line_not_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("t.txt");
    let secret = "my private diagnosis is ".to_string() + &"x".repeat(600);
    std::fs::write(&texts, format!("fine\n\n{secret}\n")).unwrap();
    let out = duet()
        .args(["infer", "--builtin", "bert-tiny", "--text-file"])
        .arg(&texts)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert!(!err.contains("diagnosis"), "{err}");
}

/// The state letter and parent pid of process `pid` (`None` once it is gone).
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": the name may hold spaces and parentheses
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` still runs (a zombie has ended).
fn alive(pid: u32) -> bool {
    matches!(proc_state(pid), Some((s, _)) if s != 'Z')
}

/// The `duet bench-server` child of `parent`, waited for up to `within`.
fn bench_server_child(parent: &mut Running, within: Duration) -> u32 {
    let end = Instant::now() + within;
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| {
                matches!(proc_state(pid), Some((_, pp)) if pp == parent.child.id())
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"bench-server"))
            });
        if let Some(pid) = found {
            return pid;
        }
        if let Ok(Some(s)) = parent.child.try_wait() {
            panic!("duet bench ended ({s}) before its server child was seen");
        }
        assert!(
            Instant::now() < end,
            "no bench-server child within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `duet bench model` (its server a child process, loopback, no shaping; the harness that
/// `duet bench generate` shares) well into its session: bert-tiny on 128 tokens. Returns the
/// parent and the child's pid.
fn bench_session() -> (Running, u32) {
    let mut cmd = duet();
    cmd.args([
        "bench",
        "model",
        "--builtin",
        "bert-tiny",
        "--seq-len",
        "128",
    ])
    .args(["--net", "lan", "--shaping", "none", "--plan", "fixed"]);
    let mut parent = Running::start(&mut cmd);
    let child = bench_server_child(&mut parent, Duration::from_secs(60));
    // keys and OT setup done, the model's layers under way
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        parent.child.try_wait().unwrap().is_none() && alive(child),
        "the run ended before it could be interrupted: {:?}",
        parent.seen
    );
    (parent, child)
}

fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

#[test]
fn sigterm_of_the_bench_server_child_mid_session_ends_the_parent_naming_it() {
    let (mut parent, child) = bench_session();
    signal_pid(child, "-TERM");
    let t = Instant::now();
    let (status, waited, text) = parent.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{text}");
    assert_peer_named(&text, &["interrupted (SIGTERM)"]);
    eprintln!("bench-server child SIGTERM: duet bench model ended {waited:?} later");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "duet bench model ended {:?} after its server child was interrupted",
        t.elapsed()
    );
}

#[test]
fn a_killed_bench_parent_mid_session_ends_its_server_child() {
    let (mut parent, child) = bench_session();
    parent.signal("-KILL");
    let t = Instant::now();
    let _ = parent.wait_exit(Duration::from_secs(10));
    // the child watches the pipe of its stdin: the parent's end closed with it
    while alive(child) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let waited = t.elapsed();
    let still = alive(child);
    if still {
        signal_pid(child, "-KILL");
    }
    assert!(
        !still,
        "the server child still runs {waited:?} after its parent was killed"
    );
    eprintln!("duet bench model kill -9: its server child ended {waited:?} later");
    assert!(
        waited < Duration::from_secs(5),
        "the server child ended {waited:?} after its parent was killed"
    );
}
