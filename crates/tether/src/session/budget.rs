//! One bound on what browsers can make the gateway hold: the bytes of messages they have
//! started and not finished, over all connections together.
//!
//! Each browser socket is read through a [`Counted`] reader, which charges what it reads to
//! the connection's [`Held`] and to the shared [`Budget`]. The relay releases the charge when
//! the browser has finished a Bokeh message (nothing of it is held any more). A read that
//! would take the total past the budget fails instead, and that connection alone is closed
//! with 1009; the gateway stays under the budget.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared bound.
#[derive(Debug)]
pub struct Budget {
    /// Bytes charged now, over all connections.
    used: AtomicUsize,
    /// Most bytes that may be charged at once.
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` bytes if they fit.
    fn charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    fn refund(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one connection has charged, shared by its reader and its relay.
#[derive(Debug)]
pub struct Held {
    /// The shared bound.
    budget: Arc<Budget>,
    /// Bytes this connection has charged and not released.
    bytes: AtomicUsize,
    /// A read was refused for the budget: the relay closes with 1009.
    over: AtomicBool,
}

impl Held {
    pub fn new(budget: Arc<Budget>) -> Arc<Held> {
        Arc::new(Held {
            budget,
            bytes: AtomicUsize::new(0),
            over: AtomicBool::new(false),
        })
    }

    /// The browser holds no unfinished message: what it charged is given back.
    pub fn release(&self) {
        let n = self.bytes.swap(0, Ordering::AcqRel);
        self.budget.refund(n);
    }

    /// Whether a read was refused because the budget was spent.
    pub fn over_budget(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

/// A browser socket whose reads are charged to a [`Held`].
pub struct Counted<S> {
    /// The socket.
    inner: S,
    /// Where reads are charged.
    held: Arc<Held>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, held: Arc<Held>) -> Counted<S> {
        Counted { inner, held }
    }

    /// The socket itself.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            if !this.held.budget.charge(n) {
                this.held.over.store(true, Ordering::Release);
                return Poll::Ready(Err(io::Error::other(
                    "the gateway's budget for unfinished messages is spent",
                )));
            }
            this.held.bytes.fetch_add(n, Ordering::AcqRel);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_past_the_budget_fail_and_releases_give_it_back() {
        let budget = Budget::new(10);
        let (mut a_tx, a_rx) = tokio::io::duplex(64);
        let (mut b_tx, b_rx) = tokio::io::duplex(64);
        let (ha, hb) = (Held::new(budget.clone()), Held::new(budget.clone()));
        let (mut a, mut b) = (
            Counted::new(a_rx, ha.clone()),
            Counted::new(b_rx, hb.clone()),
        );
        let mut buf = [0u8; 16];
        a_tx.write_all(b"123456").await.unwrap();
        assert_eq!(a.read(&mut buf).await.unwrap(), 6);
        b_tx.write_all(b"123456").await.unwrap();
        assert!(b.read(&mut buf).await.is_err(), "6 + 6 is over 10");
        assert!(hb.over_budget() && !ha.over_budget());
        assert_eq!(budget.used(), 6);
        ha.release();
        assert_eq!(budget.used(), 0);
        a_tx.write_all(b"1234").await.unwrap();
        assert_eq!(a.read(&mut buf).await.unwrap(), 4);
        drop(a);
        drop(ha);
        assert_eq!(
            budget.used(),
            0,
            "a connection that ends gives back what it held"
        );
    }
}
