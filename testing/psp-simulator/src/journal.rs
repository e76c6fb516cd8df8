//! The ledger's journal (`PSP_JOURNAL_PATH`): one JSON line per new
//! decision, written before the decision is kept or answered and read back on
//! start, so that a restarted simulator, even one killed with SIGKILL, still
//! replays every answer it gave and lists every charge it made.
//!
//! Each line is written whole, by one `write_all` to a file opened for
//! appending, and not fsynced: what a process wrote survives its crash in the
//! page cache, and the simulator need not outlive the machine. A process
//! killed mid-write leaves at most a partial last line, for a decision that
//! was never answered; start-up drops it with a warning.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::ledger::{CaptureRecord, Ledger, RefundRecord};

/// One line: `{"capture": {...}}` or `{"refund": {...}}`, with the record
/// as `/admin/ledger` lists it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Capture(CaptureRecord),
    Refund(RefundRecord),
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Set by a failed append, which may have left part of a line behind.
    /// The next line would be joined to it and corrupt the journal, so none
    /// is written until a restart, which drops the partial line.
    broken: AtomicBool,
}

impl Journal {
    /// Opens the journal at `path`, creating it if it is missing, and
    /// rebuilds the ledger it records. A partial last line is cut off, so
    /// that the next line starts on a line of its own; any other line that
    /// cannot be restored is an error naming the file and the line.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Ledger)> {
        // Owner only: the journal records every charge of every customer.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening the ledger journal {}", path.display()))?;

        let mut ledger = Ledger::default();
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        // The length of the whole lines read so far.
        let mut whole_len = 0_u64;
        for number in 1_u64.. {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading the ledger journal {}", path.display()))?;
            if read == 0 {
                break;
            }
            if !line.ends_with(b"\n") {
                tracing::warn!(
                    path = %path.display(),
                    line = number,
                    bytes = read,
                    "ignoring the ledger journal's incomplete last line: \
                     the simulator stopped while writing it, before answering"
                );
                file.set_len(whole_len).with_context(|| {
                    format!(
                        "cutting the incomplete last line off the ledger journal {}",
                        path.display()
                    )
                })?;
                break;
            }
            restore(&mut ledger, &line).with_context(|| {
                format!(
                    "line {number} of the ledger journal {} cannot be restored",
                    path.display()
                )
            })?;
            whole_len += read as u64;
        }

        let view = ledger.view();
        tracing::info!(
            path = %path.display(),
            captures = view.captures.len(),
            refunds = view.refunds.len(),
            "ledger restored from its journal"
        );
        let journal = Self {
            path: path.to_owned(),
            file,
            broken: AtomicBool::new(false),
        };
        Ok((journal, ledger))
    }

    /// Appends `entry` as one line. Called under the ledger's lock, so that
    /// lines follow the order of the decisions (a refund after its capture).
    pub fn append(&self, entry: &Entry) -> Result<(), Error> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Journal(
                "an earlier write failed; new decisions wait for a restart".to_owned(),
            ));
        }
        let mut line =
            serde_json::to_vec(entry).map_err(|error| Error::Journal(error.to_string()))?;
        line.push(b'\n');
        (&self.file).write_all(&line).map_err(|error| {
            self.broken.store(true, Ordering::Relaxed);
            tracing::error!(
                path = %self.path.display(),
                %error,
                "writing the ledger journal failed; refusing new decisions until restart"
            );
            Error::Journal(error.to_string())
        })
    }
}

fn restore(ledger: &mut Ledger, line: &[u8]) -> anyhow::Result<()> {
    match serde_json::from_slice(line)? {
        Entry::Capture(record) => ledger.restore_capture(record)?,
        Entry::Refund(record) => ledger.restore_refund(record)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Decision, DeclineReason};

    fn declined() -> Entry {
        Entry::Capture(CaptureRecord {
            idempotency_key: "order-1".to_owned(),
            amount_minor: 1999,
            currency: "EUR".to_owned(),
            card_token: "tok_decline".to_owned(),
            decision: Decision::Declined {
                reason: DeclineReason::CardDeclined,
            },
            at_micros: 1,
        })
    }

    #[test]
    fn an_entry_is_one_line_named_by_its_kind() {
        let line = serde_json::to_string(&declined()).expect("serialized");
        assert_eq!(
            line,
            r#"{"capture":{"idempotency_key":"order-1","amount_minor":1999,"currency":"EUR","card_token":"tok_decline","status":"declined","reason":"card_declined","at_micros":1}}"#
        );
    }

    /// `/dev/full` fails every write, as a full disk does.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_append_refuses_every_later_one() {
        let path = PathBuf::from("/dev/full");
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("/dev/full");
        let journal = Journal {
            path,
            file,
            broken: AtomicBool::new(false),
        };
        for _attempt in 0..2 {
            let error = journal.append(&declined()).expect_err("not written");
            assert!(matches!(error, Error::Journal(_)), "{error:?}");
        }
        assert!(journal.broken.load(Ordering::Relaxed));
    }
}
