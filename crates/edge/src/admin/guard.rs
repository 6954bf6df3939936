//! Limits on the admin listener, which may face a network once the control plane runs on another
//! host (`[edge] admin_tls`): at most [`crate::limits::AdminLimits::max_connections`] connections
//! at once (further ones wait in the kernel's backlog, and TLS handshakes start only within the
//! cap), each closed after `idle_timeout` without a byte read or written (a silent connection, a
//! half-sent request, an idle keep-alive) and after `max_lifetime` whatever it does (a client
//! trickling a byte now and then). The admin API's calls are short; its clients reconnect.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::limits::AdminLimits;

/// The admin API's TCP listener, within its limits.
pub struct GuardedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limits: AdminLimits,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: AdminLimits) -> Self {
        GuardedListener { inner, permits: Arc::new(Semaphore::new(limits.max_connections.max(1))), limits }
    }

    /// The next connection, once one of the cap's places is free.
    pub async fn accept_guarded(&self) -> (GuardedIo<TcpStream>, SocketAddr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; should it be, accept nothing more.
                return std::future::pending().await;
            };
            match self.inner.accept().await {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    return (GuardedIo::new(stream, permit, &self.limits), client);
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.accept_guarded().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds its place under the cap and fails with `TimedOut` once idle or old.
pub struct GuardedIo<S> {
    inner: S,
    _place: OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// When the connection is closed whatever it does.
    ends: Instant,
    /// Fires at the idle deadline or at `ends`, whichever is first; moved on each progress.
    deadline: Pin<Box<Sleep>>,
}

impl<S> GuardedIo<S> {
    fn new(inner: S, place: OwnedSemaphorePermit, limits: &AdminLimits) -> Self {
        let now = Instant::now();
        let ends = now + limits.max_lifetime;
        let deadline = Box::pin(tokio::time::sleep_until((now + limits.idle_timeout).min(ends)));
        GuardedIo { inner, _place: place, idle_timeout: limits.idle_timeout, ends, deadline }
    }

    fn progressed(&mut self) {
        let next = (Instant::now() + self.idle_timeout).min(self.ends);
        self.deadline.as_mut().reset(next);
    }

    /// `Pending` unless the deadline has passed, which is an error that closes the connection.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .map(|()| io::Error::new(io::ErrorKind::TimedOut, "admin connection idle or open too long"))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, bytes) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.progressed();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
