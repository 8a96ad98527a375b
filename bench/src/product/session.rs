//! The glue between the CLI and a secure session: both parties in one process over loopback
//! QUIC ([`loopback`]), the payload agreement of `serve` / `connect` ([`check_payload`]), and
//! the model session of both sides ([`serve_model_session`], [`client_model_session`]) over the
//! library's front door, [`duet_models::session`].

use crate::product::inputs::Input;
use crate::DuetError;
use duet_models::open::{AdapterSpec, ModelSpec, ServerModel};
use duet_models::secure::{Progress, SecureOutput, SecureReport};
use duet_models::session::{Client, RunConfig, Server};
use duet_models::{Graph, WeightSource};
use duet_transport::quic::{connect, Identity, QuicConfig, QuicListener, QuicRuntime, QuicSession};
use duet_transport::{Channel, Session};
use std::net::SocketAddr;

/// Sub-channel on which the two sides compare their payload names (its bytes are counted in
/// the session totals but not in any operator row).
pub const PAYLOAD_CHANNEL: u32 = 1000;
/// Sub-channel of a model session.
pub const MODEL_CHANNEL: u32 = 1001;
/// Payload name both sides agree on before a model session.
pub const MODEL_PAYLOAD: &str = "secure-model";

/// Opens the server's model (with its PEFT adapter, if any) and checks every tensor against
/// the ranges `config` declares (streamed, before any session: a model that does not fit is
/// refused at start). In LoRA mode `config` is given the adapters' public layout.
pub fn open_server_model(
    spec: &ModelSpec,
    adapter: Option<&AdapterSpec>,
    config: &mut RunConfig,
) -> Result<ServerModel, DuetError> {
    let m = ServerModel::open_with(spec, adapter)?;
    config.adapter = m.adapter_layout();
    m.check_ranges(&config.base_options(&m.graph)?)?;
    Ok(m)
}

/// The server side of a model session on `session`: agrees on the payload, accepts the
/// client's handshake for `config`, serves its requests. Returns one report per request.
pub fn serve_model_session<S: Session>(
    session: &S,
    model: &ServerModel,
    config: &RunConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<SecureReport>, DuetError> {
    {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, MODEL_PAYLOAD)?;
    }
    let ch = session.channel(MODEL_CHANNEL)?;
    let weights = model.session_weights();
    let mut server = Server::accept(ch, &model.graph, &weights, config)?;
    server.use_prefix_cache(&model.prefix_cache);
    Ok(server.serve_with(progress)?)
}

/// The client side of a model session on `session`: one request per input, the options
/// planned (when `config` plans) for the longest input. With `base` (LoRA mode) the client
/// holds the public base model ([`Client::connect_with_base`]). Returns each input's output
/// and report.
pub fn client_model_session<S: Session>(
    session: &S,
    graph: &Graph,
    inputs: &[Input],
    config: &RunConfig,
    base: Option<&(dyn WeightSource + Sync)>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<(SecureOutput, SecureReport)>, DuetError> {
    {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, MODEL_PAYLOAD)?;
    }
    let ch = session.channel(MODEL_CHANNEL)?;
    let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(1);
    let mut client = match base {
        Some(b) => Client::connect_with_base(ch, graph, config, longest, b)?,
        None => Client::connect(ch, graph, config, longest)?,
    };
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        out.push(client.infer_with(&input.ids, progress)?);
    }
    client.close()?;
    Ok(out)
}

/// Both sides say which payload they run (`linear-demo`, `share-demo`, `secure-model`); a
/// mismatch is an error on both sides.
pub fn check_payload<C: Channel>(ch: &mut C, name: &str) -> Result<(), DuetError> {
    let theirs: String = ch.exchange_msg(&name.to_string())?;
    if theirs != name {
        // Closing a QUIC connection discards unacknowledged data, so before this side
        // closes it waits for the peer's acknowledgement, sent once the peer has read our
        // name; then both sides report the mismatch. A failure here changes nothing: the
        // mismatch is already known.
        let _: Result<u8, _> = ch.exchange_msg(&0u8);
        return Err(DuetError::Usage(format!(
            "the peer runs the payload \"{}\", this side {name:?}; pass the same --builtin (or --model folders with the same config) to both",
            duet_transport::peer_text(theirs.as_bytes())
        )));
    }
    Ok(())
}

/// Runs `server` and `client` on the two ends of one loopback QUIC connection in this
/// process (fresh certificates, each pinned by the other). When both sides fail, the error
/// names both reasons.
pub fn loopback<RS: Send, RC>(
    server: impl FnOnce(&QuicSession) -> Result<RS, DuetError> + Send,
    client: impl FnOnce(&QuicSession) -> Result<RC, DuetError>,
) -> Result<(RS, RC), DuetError> {
    loopback_with(QuicConfig::default(), server, client)
}

/// The transport settings of [`loopback_with`] with a receive timeout.
pub fn loopback_config(recv_timeout: std::time::Duration) -> QuicConfig {
    QuicConfig {
        recv_timeout,
        ..QuicConfig::default()
    }
}

/// [`loopback`] with given transport settings.
pub fn loopback_with<RS: Send, RC>(
    cfg: QuicConfig,
    server: impl FnOnce(&QuicSession) -> Result<RS, DuetError> + Send,
    client: impl FnOnce(&QuicSession) -> Result<RC, DuetError>,
) -> Result<(RS, RC), DuetError> {
    let rt = QuicRuntime::recommended()?;
    let server_id = Identity::generate()?;
    let client_id = Identity::generate()?;
    let listener = QuicListener::bind(
        &rt,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &server_id,
        client_id.fingerprint(),
        cfg.clone(),
    )?;
    let addr = listener.local_addr()?;
    let (server_res, client_res) = std::thread::scope(|s| {
        let listener = &listener;
        let handle = s.spawn(move || -> Result<RS, DuetError> {
            let session = listener.accept()?;
            let out = server(&session)?;
            session.close()?;
            Ok(out)
        });
        let client = (|| -> Result<RC, DuetError> {
            let session = connect(&rt, addr, &client_id, server_id.fingerprint(), cfg)?;
            let out = client(&session)?;
            session.close()?;
            Ok(out)
        })();
        let server = handle
            .join()
            .map_err(|_| DuetError::ThreadPanicked("server"));
        (server, client)
    });
    match (server_res.and_then(|r| r), client_res) {
        (Ok(s), Ok(c)) => Ok((s, c)),
        (Ok(_), Err(c)) => Err(c),
        (Err(s), Ok(_)) => Err(s),
        (Err(s), Err(c)) => Err(DuetError::Usage(format!(
            "server side: {s}; client side: {c}"
        ))),
    }
}
