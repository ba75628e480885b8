//! Warden's gateway: the only process that faces the network.
//!
//! Start-up order (see [`run`]): read the configuration, certificate and keys, bind the
//! ports, drop privileges, and only then start threads and accept connections.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend_client;
pub mod error;
pub mod grpc;
pub mod json;
pub mod privilege;
pub mod rest;
pub mod server;
pub mod state;
pub mod tensor;
pub mod tls;

use anyhow::Context;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use warden_shared::config::Config;

/// ALPN protocols offered on the REST port.
const REST_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

fn bind(address: &str, port: u16) -> anyhow::Result<StdTcpListener> {
    let ip: std::net::IpAddr = address
        .parse()
        .with_context(|| format!("bind address {address:?} is not an IP address"))?;
    let addr = SocketAddr::new(ip, port);
    let l = StdTcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let (cert, key) = (
        config.tls.cert.clone().unwrap_or_default(),
        config.tls.key.clone().unwrap_or_default(),
    );
    let tls = tls::server_config(&cert, &key, REST_ALPN)?;
    let jwt = auth::jwt::JwtVerifier::from_config(&config.auth)?;
    let grpc_tls = {
        let mut c = (*tls).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    let rest = bind(&config.gateway.bind_address, config.gateway.rest_port)?;
    let rest_addr = rest.local_addr()?;
    let grpc = match config.gateway.grpc_port {
        0 => None,
        port => Some(bind(&config.gateway.bind_address, port)?),
    };

    // INVARIANT: no thread exists yet; capabilities are per thread, so they are cleared
    // here, once, for the whole process.
    let was_root = privilege::drop_privileges(config.gateway.uid, config.gateway.gid)
        .context("the gateway could not drop its privileges")?;
    tracing::info!(
        uid = nix::unistd::getuid().as_raw(),
        was_root,
        "gateway privileges dropped"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("warden-gateway")
        .build()?;
    rt.block_on(async move {
        let backend = backend_client::connect_lazy(config.socket_path());
        let state = Arc::new(state::State::new(config, jwt, backend));
        let rest = tokio::net::TcpListener::from_std(rest)?;
        tracing::info!(%rest_addr, "gateway listening (REST, TLS)");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let grpc_task = match grpc {
            Some(l) => {
                let l = tokio::net::TcpListener::from_std(l)?;
                tracing::info!(grpc_addr = %l.local_addr()?, "gateway listening (gRPC, TLS)");
                let acceptor = tokio_rustls::TlsAcceptor::from(grpc_tls);
                tokio::spawn(server::serve_grpc(l, acceptor, Arc::clone(&state)))
            }
            None => tokio::spawn(std::future::pending()),
        };
        tokio::select! {
            _ = server::serve_rest(rest, acceptor, state) => {}
            _ = grpc_task => {}
            _ = shutdown_signal() => tracing::info!("gateway stopping"),
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
