//! The local side of an upload: the reader a remote command's input is streamed from,
//! counted, with the first error reading it kept. A failed local read (a bad disk, a file
//! cut short under us) is told apart from a failed channel this way: the session ends the
//! command's input at once, so the VPS sees a short upload and refuses it, instead of
//! waiting for bytes that will never come until the command's timeout.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Why the local input of an upload could not be read: after how many bytes, and the
/// operating system's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    /// Bytes read (and handed to the channel) before the error.
    pub read: u64,
    /// The error's text.
    pub reason: String,
}

/// `inner`, counting what it yields; its first error is kept in `failure`.
pub struct UploadSource<'a, R> {
    inner: R,
    read: u64,
    failure: &'a OnceLock<ReadFailure>,
}

impl<'a, R> UploadSource<'a, R> {
    /// Reads from `inner`; a read error is recorded in `failure` (the first one only).
    pub fn new(inner: R, failure: &'a OnceLock<ReadFailure>) -> Self {
        Self {
            inner,
            read: 0,
            failure,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UploadSource<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len().saturating_sub(before);
                this.read = this.read.saturating_add(got as u64);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                let _ = this.failure.set(ReadFailure {
                    read: this.read,
                    reason: e.to_string(),
                });
                Poll::Ready(Err(e))
            }
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
        let mut source = UploadSource::new(FailsAfter(100), &failure);
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
        let mut source = UploadSource::new(&b"all of it"[..], &failure);
        let mut sink = Vec::new();
        source.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink, b"all of it");
        assert_eq!(failure.get(), None);
    }
}
