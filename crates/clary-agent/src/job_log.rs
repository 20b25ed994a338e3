//! The job log as the agent writes it: its own lines, in the toolkit's format, into the stream
//! the reporter ships. Every stage takes a [`JobLog`]; only `host.rs` opens one.

use clary_exec::protocol::LogLine;
use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};

/// Writes the agent's own lines into the job log in the toolkit's format.
#[derive(Clone)]
pub struct JobLog {
    tx: UnboundedSender<LogLine>,
}

impl JobLog {
    /// A log that writes into `tx` (the reporter's log shipper); it ends when the last clone
    /// is dropped.
    pub fn new(tx: UnboundedSender<LogLine>) -> Self {
        JobLog { tx }
    }

    pub fn line(&self, message: &str) {
        let _ = self.tx.send(LogLine {
            timestamp: chrono::Utc::now().timestamp_millis(),
            message: message.to_string(),
        });
    }

    pub fn info(&self, message: &str) {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S,%3f");
        for l in message.lines() {
            self.line(&format!("{now} clary-agent  INFO     {l}"));
        }
    }

    pub fn sender(&self) -> UnboundedSender<LogLine> {
        self.tx.clone()
    }

    /// A handle that does not keep the log open: for threads that may outlive the job (a
    /// Pipe-mode feeder blocked on a FIFO nobody opens), so the log still ends with the job.
    pub fn downgrade(&self) -> WeakJobLog {
        WeakJobLog {
            tx: self.tx.downgrade(),
        }
    }
}

#[derive(Clone)]
pub struct WeakJobLog {
    tx: WeakUnboundedSender<LogLine>,
}

impl WeakJobLog {
    /// Logs like [`JobLog::line`] while the job's log is still open.
    pub fn line(&self, message: &str) {
        if let Some(tx) = self.tx.upgrade() {
            JobLog { tx }.line(message);
        }
    }

    /// Logs like [`JobLog::info`] while the job's log is still open.
    pub fn info(&self, message: &str) {
        if let Some(tx) = self.tx.upgrade() {
            JobLog { tx }.info(message);
        }
    }
}
