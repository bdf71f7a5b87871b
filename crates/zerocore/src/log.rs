//! Guest stdout and stderr as node log lines tagged with tenant, app and request id.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use zero_provider::Invocation;

/// Which guest stream a [`GuestLog`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl GuestStream {
    fn as_str(self) -> &'static str {
        match self {
            GuestStream::Stdout => "stdout",
            GuestStream::Stderr => "stderr",
        }
    }
}

/// Longest guest log line kept; longer lines are split.
pub(crate) const MAX_LOG_LINE: usize = 4096;

struct LogSink {
    invocation: Invocation,
    stream: GuestStream,
    buf: Vec<u8>,
    budget: usize,
    /// The budget this sink started with (`[limits] guest_log_bytes`).
    limit: usize,
    truncated: bool,
    panicked: Arc<AtomicBool>,
    /// The panic message being collected: the lines after `panicked at` up to a `note:` line.
    panic_message: Arc<Mutex<String>>,
    /// Whether the lines now arriving belong to a panic message.
    in_panic: bool,
    /// Where the panic happened (`src/lib.rs:3:5`).
    panic_at: String,
    /// The panic's message so far.
    panic_text: String,
}

/// Most bytes of a panic message kept for the request's fault log line.
pub(crate) const MAX_PANIC_MESSAGE: usize = 1024;

impl LogSink {
    fn emit(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if self.stream == GuestStream::Stderr {
            self.note_panic(line);
        }
        if self.truncated {
            return;
        }
        if self.budget < line.len() {
            // Once over, everything after is dropped (a shorter line later is not kept either:
            // the log shows a prefix of the output, then this line).
            self.truncated = true;
            self.budget = 0;
            tracing::warn!(
                target: "guest",
                tenant = %self.invocation.tenant,
                app = %self.invocation.app,
                request_id = %self.invocation.request_id,
                stream = self.stream.as_str(),
                limit = self.limit,
                "guest output exceeded its log budget of {} bytes per request and stream ([limits] guest_log_bytes); further output of this request is dropped, the request goes on",
                self.limit
            );
            return;
        }
        self.budget -= line.len();
        tracing::info!(
            target: "guest",
            tenant = %self.invocation.tenant,
            app = %self.invocation.app,
            request_id = %self.invocation.request_id,
            stream = self.stream.as_str(),
            "{line}"
        );
    }

    /// Collects a Rust panic's message for the fault log line. The standard panic hook prints
    /// `thread '…' panicked at FILE:LINE:COL:`, then the message (one or more lines), then
    /// usually a `note: run with RUST_BACKTRACE=1 …` line; the message becomes
    /// `MESSAGE (at FILE:LINE:COL)`.
    fn note_panic(&mut self, line: &str) {
        if let Some((_, at)) = line.split_once("panicked at ") {
            self.panicked.store(true, Ordering::Relaxed);
            self.in_panic = true;
            self.panic_at = at.trim_end_matches(':').trim().to_string();
            self.panic_text.clear();
        } else if !self.in_panic {
            return;
        } else if line.starts_with("note: ") || line.starts_with("stack backtrace:") {
            self.in_panic = false;
            return;
        } else if self.panic_text.len() < MAX_PANIC_MESSAGE {
            if !self.panic_text.is_empty() {
                self.panic_text.push(' ');
            }
            self.panic_text.push_str(line);
            if self.panic_text.len() > MAX_PANIC_MESSAGE {
                let mut end = MAX_PANIC_MESSAGE;
                while !self.panic_text.is_char_boundary(end) {
                    end -= 1;
                }
                self.panic_text.truncate(end);
                self.panic_text.push('…');
            }
        }
        let composed = match (self.panic_text.is_empty(), self.panic_at.is_empty()) {
            (_, true) => self.panic_text.clone(),
            (true, false) => format!("(at {})", self.panic_at),
            (false, false) => format!("{} (at {})", self.panic_text, self.panic_at),
        };
        *self.panic_message.lock().unwrap_or_else(|p| p.into_inner()) = composed;
    }

    fn push(&mut self, mut data: &[u8]) {
        if self.truncated && self.stream == GuestStream::Stdout {
            // Nothing more is kept; stdout carries no panic message to look for.
            return;
        }
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            let (head, tail) = data.split_at(pos);
            self.buf.extend_from_slice(head);
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
            data = &tail[1..];
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MAX_LOG_LINE {
            let rest = self.buf.split_off(MAX_LOG_LINE);
            let line = std::mem::replace(&mut self.buf, rest);
            self.emit(&line);
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line);
        }
    }
}

/// A guest's stdout or stderr that becomes node log lines tagged with tenant, app and request id.
///
/// Output is split into lines (at most [`MAX_LOG_LINE`] bytes each) and capped at a byte budget
/// per request so that a chatty guest cannot flood the node's log.
#[derive(Clone)]
pub(crate) struct GuestLog {
    sink: Arc<Mutex<LogSink>>,
}

impl GuestLog {
    /// A log sink for one stream of one invocation, keeping at most `budget` bytes.
    pub(crate) fn new(
        invocation: Invocation,
        stream: GuestStream,
        budget: usize,
        panicked: Arc<AtomicBool>,
        panic_message: Arc<Mutex<String>>,
    ) -> Self {
        GuestLog {
            sink: Arc::new(Mutex::new(LogSink {
                invocation,
                stream,
                buf: Vec::new(),
                budget,
                limit: budget,
                truncated: false,
                panicked,
                panic_message,
                in_panic: false,
                panic_at: String::new(),
                panic_text: String::new(),
            })),
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.sink.lock() {
            Ok(mut sink) => sink.push(buf),
            Err(poisoned) => poisoned.into_inner().push(buf),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sink_splits_lines_and_detects_panics() {
        let panicked = Arc::new(AtomicBool::new(false));
        let inv = Invocation {
            tenant: "t".into(),
            app: "a".into(),
            request_id: "r".into(),
            settings: Arc::default(),
            trace: None,
        };
        let message = Arc::new(Mutex::new(String::new()));
        let log = GuestLog::new(
            inv,
            GuestStream::Stderr,
            1 << 20,
            panicked.clone(),
            message.clone(),
        );
        let mut sink = log.sink.lock().unwrap();
        sink.push(b"one\ntwo");
        assert_eq!(sink.buf, b"two");
        sink.push(b"\nthread 'main' panicked at src/lib.rs:1:1:\n");
        assert!(panicked.load(Ordering::Relaxed));
        sink.push(b"no todo with id 3\nin two lines\nnote: run with `RUST_BACKTRACE=1`\nlater\n");
        assert_eq!(
            *message.lock().unwrap(),
            "no todo with id 3 in two lines (at src/lib.rs:1:1)"
        );
        sink.push(b"thread '<unnamed>' panicked at a.rs:2:3:\n");
        sink.push(&vec![b'y'; 3000]);
        sink.push(b"\n");
        let m = message.lock().unwrap().clone();
        assert!(m.ends_with("… (at a.rs:2:3)"), "{m}");
        assert!(m.len() < MAX_PANIC_MESSAGE + 32, "{}", m.len());
        sink.push(&vec![b'x'; MAX_LOG_LINE * 2 + 1]);
        assert_eq!(sink.buf.len(), 1);
    }
}
