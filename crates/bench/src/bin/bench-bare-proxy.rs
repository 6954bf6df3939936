//! `bench-bare-proxy`: the floor the edge is measured against, the design `../shared/EDGE-PERF.md`
//! measured at 1.04–1.10× nginx and nothing else: a hyper HTTP/1 server on a current-thread
//! runtime, each downstream connection with its own upstream `hyper::client::conn::http1`
//! connection, opened lazily on its first request and reused for the connection's life. No
//! routing, no header rewriting, no metrics, no timeouts.
//!
//!     PORT=8080 UPSTREAM=127.0.0.1:9000 bench-bare-proxy

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    let upstream: SocketAddr = match std::env::var("UPSTREAM").ok().and_then(|u| u.parse().ok()) {
        Some(address) => address,
        None => return Err(std::io::Error::other("set UPSTREAM to the upstream's address (host:port)")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("bench-bare-proxy listening on {}", listener.local_addr()?);
        // SIGINT ends it cleanly (a background job of a script ignores SIGINT's default action).
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = interrupt.recv() => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                // This connection's own upstream connection, opened on its first request.
                let sender: Rc<RefCell<Option<SendRequest<Incoming>>>> = Rc::default();
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = sender.clone();
                    async move { Ok::<_, std::convert::Infallible>(forward(upstream, &sender, request).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn forward(
    upstream: SocketAddr,
    cached: &RefCell<Option<SendRequest<Incoming>>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let taken = cached.borrow_mut().take();
    let mut sender = match taken {
        Some(sender) if !sender.is_closed() => sender,
        _ => match open(upstream).await {
            Ok(sender) => sender,
            Err(err) => return bad_gateway(err),
        },
    };
    if let Err(err) = sender.ready().await {
        return bad_gateway(err.into());
    }
    match sender.send_request(request).await {
        Ok(response) => {
            *cached.borrow_mut() = Some(sender);
            response.map(BodyExt::boxed_unsync)
        }
        Err(err) => bad_gateway(err.into()),
    }
}

async fn open(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn bad_gateway(err: Box<dyn std::error::Error>) -> Response<Body> {
    let mut response =
        Response::new(Full::new(Bytes::from(format!("{err}\n"))).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
