//! Bounds on slow clients. poem 3.1 exposes only an idle timeout, which
//! every received byte resets, so a client sending one header byte a
//! second holds a connection forever (slowloris). [`SlowClientGuard`]
//! wraps the acceptor instead: once a connection is accepted, and again
//! from the first byte of each next request, the whole request (headers and
//! body) and the handler must get as far as the first byte of the answer
//! within [`REQUEST_DEADLINE`], or the connection is closed.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// From a request's first byte to its answer's first byte.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// An acceptor whose connections enforce [`REQUEST_DEADLINE`].
pub struct SlowClientGuard<A> {
    inner: A,
    deadline: Duration,
}

impl<A> SlowClientGuard<A> {
    /// Guards `inner`'s connections with [`REQUEST_DEADLINE`].
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            deadline: REQUEST_DEADLINE,
        }
    }
}

impl<A: Acceptor> Acceptor for SlowClientGuard<A> {
    type Io = GuardedIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        let guarded = GuardedIo {
            inner: io,
            limit: self.deadline,
            // A connection that never sends a whole request is a slow one.
            timer: Box::pin(tokio::time::sleep(self.deadline)),
            armed: true,
        };
        Ok((guarded, local, remote, scheme))
    }
}

/// A connection under [`SlowClientGuard`].
pub struct GuardedIo<T> {
    inner: T,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    /// A request is under way: bytes came in, no answer went out yet.
    armed: bool,
}

fn too_slow() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the request was not received in time",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.armed && this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(too_slow()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
            && !this.armed
        {
            this.armed = true;
            let deadline = Instant::now() + this.limit;
            this.timer.as_mut().reset(deadline);
            // Registers the waker for the new deadline.
            let _ = this.timer.as_mut().poll(cx);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            // The answer is going out: the request was received in time.
            self.armed = false;
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.armed = false;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
