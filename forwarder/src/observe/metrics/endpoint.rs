//! The HTTP side of the metrics endpoint: one listener, at most
//! `MAX_CONNECTIONS` connections served at once, each with a header and a
//! connection deadline, and a backoff when accepting fails. A scrape's body
//! comes from [`render`](super::render), off the event loop.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{info, warn};

use super::{render, FlowCache};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// A client must send its request headers within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this time, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Waits after a failed accept: the first, and the most.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct Server {
    pub addr: SocketAddr,
}

/// Binds `addr` and serves `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, pin_dir: PathBuf, run_dir: PathBuf) -> Result<Server> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, "metrics endpoint: http://{addr}/metrics");
    let ctx = Arc::new(Scrape {
        pin_dir,
        run_dir,
        flows: FlowCache::default(),
    });
    tokio::spawn(accept_loop(listener, ctx));
    Ok(Server { addr })
}

/// What a scrape reads.
struct Scrape {
    pin_dir: PathBuf,
    run_dir: PathBuf,
    flows: FlowCache,
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    loop {
        // A slot first: while all are busy, new connections wait in the
        // kernel's backlog instead of costing a task and a descriptor each.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_FIRST;
                stream
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: retrying at once would spin.
                warn!("metrics endpoint: accept failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(req, ctx).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

async fn respond(req: Request<hyper::body::Incoming>, ctx: Arc<Scrape>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    match req.uri().path() {
        "/metrics" => {
            // Map syscalls block: keep them off the event loop.
            let work = move || {
                let flows = ctx.flows.get(&ctx.pin_dir)?;
                render(&ctx.pin_dir, &ctx.run_dir, &flows)
            };
            match tokio::task::spawn_blocking(work).await {
                Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
                Ok(Err(e)) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e:#}\n"),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "forwarder: metrics at /metrics\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
