//! What hyper's HTTP/1 parser does not tell: whether a request carried `Content-Length` next to
//! `Transfer-Encoding`. hyper frames such a request by `Transfer-Encoding` and drops
//! `Content-Length` from the headers it hands over (in either order), so the proxy cannot see
//! the conflict it must refuse (RFC 9112 §6.1; nginx answers 400 and closes). [`ScanReads`] wraps
//! a downstream connection's stream and counts the `Content-Length:` header lines in what is
//! read; the proxy looks at that count only for requests with `Transfer-Encoding` (rare).
//!
//! The cost is one SIMD `memchr` pass over the bytes read plus a comparison per line start: a
//! few hundred instructions for a typical request head, nothing allocated.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NEEDLE: &[u8; 15] = b"content-length:";

/// Counts `Content-Length:` lines read on one connection (shared with the proxy's handler).
#[derive(Debug, Default)]
pub struct LengthLines(AtomicU32);

impl LengthLines {
    /// The lines counted since the last call, and starts counting anew. A plain load (and a
    /// store only when something was counted): this runs on every request.
    pub fn take(&self) -> u32 {
        let seen = self.0.load(Ordering::Relaxed);
        if seen != 0 {
            self.0.store(0, Ordering::Relaxed);
        }
        seen
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream whose reads are scanned for `Content-Length:` header lines.
pub struct ScanReads<S> {
    inner: S,
    lines: Arc<LengthLines>,
    /// The start of a line read so far when a read ended within its first 15 bytes (a line can
    /// be split across reads): its bytes, and how many.
    carry: [u8; 15],
    carried: u8,
    /// Whether the last byte read was a line feed (the next read starts a line).
    at_line_start: bool,
}

impl<S> ScanReads<S> {
    pub fn new(inner: S, lines: Arc<LengthLines>) -> Self {
        // The first line is the request line, never a header.
        ScanReads { inner, lines, carry: [0; 15], carried: 0, at_line_start: false }
    }

    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // A line that started in an earlier read: complete its first 15 bytes first.
        if self.carried > 0 || self.at_line_start {
            let have = usize::from(self.carried);
            let take = (NEEDLE.len() - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            let have = have + take;
            self.carried = 0;
            self.at_line_start = false;
            if !self.carry[..have].eq_ignore_ascii_case(&NEEDLE[..have]) {
                // Not this header; fall through to the line feeds of this read.
            } else if have == NEEDLE.len() {
                self.lines.bump();
            } else {
                // Still a prefix of the needle, and this read is used up (it held no line feed).
                self.carried = have as u8;
                return;
            }
        }
        // Line feeds inside the bytes taken above start lines of their own, found here; the
        // needle holds none, so no line is counted twice.
        for newline in memchr::memchr_iter(b'\n', bytes) {
            let rest = &bytes[newline + 1..];
            if rest.len() >= NEEDLE.len() {
                // A cheap first-byte test before the comparison: most lines are not this one.
                if rest[0] | 0x20 == b'c' && rest[..NEEDLE.len()].eq_ignore_ascii_case(NEEDLE) {
                    self.lines.bump();
                }
            } else if rest.is_empty() {
                self.at_line_start = true;
            } else if rest.eq_ignore_ascii_case(&NEEDLE[..rest.len()]) {
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carried = rest.len() as u8;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ScanReads<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScanReads<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(reads: &[&[u8]]) -> u32 {
        let lines = Arc::new(LengthLines::default());
        let mut scan = ScanReads::new((), lines.clone());
        for read in reads {
            scan.scan(read);
        }
        lines.take()
    }

    #[test]
    fn content_length_lines_are_counted_in_any_case_and_split() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(count(&[head]), 1);
        assert_eq!(count(&[b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 4\r\n\r\n"]), 1);
        assert_eq!(count(&[b"GET / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\n\r\n"]), 0);
        assert_eq!(count(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]), 0);
        // Split at every position: counted once whatever the reads.
        for split in 1..head.len() {
            assert_eq!(count(&[&head[..split], &head[split..]]), 1, "split at {split}");
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(count(&bytes), 1);
        // Two of them, one split.
        assert_eq!(count(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\nConte", b"nt-Length: 4\r\n\r\n"]), 2);
    }
}
