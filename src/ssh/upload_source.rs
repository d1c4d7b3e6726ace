//! The local side of an upload: the reader a remote command's input is streamed from,
//! counted, with the first error reading it kept; an input that ends before its announced
//! length is such an error too. A failed local read (a bad disk, a file cut short under us)
//! is told apart from a failed channel this way: the session ends the command's input at
//! once, so the VPS sees a short upload and refuses it, instead of waiting for bytes that
//! will never come until the command's timeout.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Why the local input of an upload could not be read: after how many bytes, and the
/// operating system's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    /// Bytes read from the input before the error.
    pub read: u64,
    /// The error's text.
    pub reason: String,
}

/// `inner`, counting what it yields; its first error is kept in `failure`. The caller reads
/// at most `len` bytes (through `take`); an end before them is an error.
pub struct UploadSource<'a, R> {
    inner: R,
    len: u64,
    read: u64,
    failure: &'a OnceLock<ReadFailure>,
}

impl<'a, R> UploadSource<'a, R> {
    /// Reads the `len` bytes of `inner`; a read error, or an end before `len` bytes, is
    /// recorded in `failure` (the first one only).
    pub fn new(inner: R, len: u64, failure: &'a OnceLock<ReadFailure>) -> Self {
        Self {
            inner,
            len,
            read: 0,
            failure,
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        let _ = self.failure.set(ReadFailure {
            read: self.read,
            reason: e.to_string(),
        });
        e
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UploadSource<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len().saturating_sub(before);
                if got == 0 && room && this.read < this.len {
                    let short = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the input ended before its announced length",
                    );
                    return Poll::Ready(Err(this.fail(short)));
                }
                this.read = this.read.saturating_add(got as u64);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.fail(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A reader that yields `ok` bytes, then fails.
    struct FailsAfter(usize);

    impl AsyncRead for FailsAfter {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.0 == 0 {
                return Poll::Ready(Err(io::Error::other("disk on fire")));
            }
            let n = self.0.min(buf.remaining()).min(7);
            buf.put_slice(&vec![1; n]);
            self.0 -= n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_read_error_is_kept_with_the_bytes_read_before_it() {
        let failure = OnceLock::new();
        let mut source = UploadSource::new(FailsAfter(100), 1000, &failure);
        let mut sink = Vec::new();
        let err = source.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        assert_eq!(sink.len(), 100);
        assert_eq!(
            failure.get(),
            Some(&ReadFailure {
                read: 100,
                reason: "disk on fire".into()
            })
        );
    }

    #[tokio::test]
    async fn a_clean_read_records_nothing() {
        let failure = OnceLock::new();
        let mut source = UploadSource::new(&b"all of it, and more"[..], 9, &failure).take(9);
        let mut sink = Vec::new();
        source.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink, b"all of it");
        assert_eq!(failure.get(), None);
    }

    #[tokio::test]
    async fn an_input_shorter_than_announced_is_a_failure() {
        let failure = OnceLock::new();
        let mut source = UploadSource::new(&b"half"[..], 8, &failure).take(8);
        let mut sink = Vec::new();
        let err = source.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            failure.get(),
            Some(&ReadFailure {
                read: 4,
                reason: "the input ended before its announced length".into()
            })
        );
    }
}
