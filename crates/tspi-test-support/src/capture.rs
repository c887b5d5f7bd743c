//! An output sink a test can read while the program writing it still runs (or after its
//! task was aborted): for library `run`s that take a writer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Bytes written so far, shared between the writer handed to the program and the test.
#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        // A test that panicked while holding the lock still wants to read what was written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Complete lines written so far.
    pub fn line_count(&self) -> usize {
        self.bytes().iter().filter(|b| **b == b'\n').count()
    }

    /// The complete lines written so far, as text.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.bytes();
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        String::from_utf8_lossy(&bytes[..complete])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.bytes().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_complete_lines_are_counted_and_read() {
        let c = Captured::default();
        let mut w = c.clone();
        w.write_all(b"one\ntwo\nthr").unwrap_or_default();
        assert_eq!(c.line_count(), 2);
        assert_eq!(c.lines(), ["one", "two"]);
    }
}
