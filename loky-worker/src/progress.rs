//! Reports of a long chunk's items as they are done: should the worker die
//! (or be killed for an item's deadline) before the chunk's reply, the
//! executor keeps these results, and each report restarts the running
//! item's deadline.
//!
//! A chunk of fast items sends none: the clock is read after items 1, 2, 4,
//! 8... since the last report, and a report goes out only once [`PERIOD`]
//! has passed since the previous one (or since the chunk started). A chunk
//! of slow items reports each item as it is done.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loky_proto::{Outcome, Progress, Response, encode_frame};

use crate::outbox::Outbox;

/// At most one report per period.
const PERIOD: Duration = Duration::from_millis(1);

/// A report larger than this is not sent (its items are in the reply, and
/// would only be run again should the worker die before it): large outputs
/// are not written twice, and never inline past the shared-memory
/// threshold.
const MAX_REPORT: usize = 256 << 10;

struct Reporter {
    /// The channel to the executor (the replies' own).
    outbox: Arc<Outbox>,
    /// The running chunk call, if one runs.
    call: Option<u64>,
    /// When the chunk started or last reported.
    since: Instant,
    /// Items reported so far.
    reported: usize,
    /// Items done when the clock is next read.
    next_check: usize,
    /// Items between two reads of the clock: doubles while the period runs.
    gap: usize,
    buf: Vec<u8>,
}

thread_local! {
    static REPORTER: RefCell<Option<Reporter>> = const { RefCell::new(None) };
}

/// Reports go through `outbox` from now on.
pub(crate) fn set_channel(outbox: Arc<Outbox>) {
    REPORTER.with(|r| {
        *r.borrow_mut() = Some(Reporter {
            outbox,
            call: None,
            since: Instant::now(),
            reported: 0,
            next_check: 1,
            gap: 1,
            buf: Vec::new(),
        });
    });
}

/// Call `id` starts (whatever its kind), `now`.
pub(crate) fn begin(id: u64, now: Instant) {
    REPORTER.with(|r| {
        if let Some(reporter) = r.borrow_mut().as_mut() {
            reporter.call = Some(id);
            reporter.since = now;
            reporter.reported = 0;
            reporter.next_check = 1;
            reporter.gap = 1;
        }
    });
}

/// The running call ended (its reply is queued).
pub(crate) fn end() {
    REPORTER.with(|r| {
        if let Some(reporter) = r.borrow_mut().as_mut() {
            reporter.call = None;
        }
    });
}

/// How many items of the running chunk must be done before
/// [`after_item`] is called next: the chunk's loop compares its count with
/// it, and calls nothing for the items in between.
pub(crate) fn next_check() -> usize {
    REPORTER.with(|r| r.borrow().as_ref().map_or(usize::MAX, |r| r.next_check))
}

/// `done` items of the running chunk are done; `outcome(i)` is item `i`'s
/// outcome, asked for only when a report goes out. Returns when to call
/// again (see [`next_check`]).
pub(crate) fn after_item<'o>(done: usize, outcome: impl Fn(usize) -> Outcome<'o>) -> usize {
    REPORTER.with(|r| {
        let mut reporter = r.borrow_mut();
        let Some(reporter) = reporter.as_mut() else {
            return usize::MAX;
        };
        reporter.report(done, outcome);
        reporter.next_check
    })
}

impl Reporter {
    fn report<'o>(&mut self, done: usize, outcome: impl Fn(usize) -> Outcome<'o>) {
        if done < self.next_check {
            return;
        }
        let Some(id) = self.call else {
            self.next_check = usize::MAX;
            return;
        };
        let now = Instant::now();
        if now.duration_since(self.since) < PERIOD {
            self.gap = self.gap.saturating_mul(2);
            self.next_check = done.saturating_add(self.gap);
            return;
        }
        let items: Vec<Outcome<'_>> = (self.reported..done).map(&outcome).collect();
        self.buf.clear();
        let report = Response::Progress(Progress { id, items });
        let sent = encode_frame(&report, &mut self.buf, MAX_REPORT).is_ok()
            && self.outbox.send_bytes(&self.buf);
        if !sent {
            // Reports must follow each other without a gap: none more for
            // this chunk (a failed write is found again by the reply's).
            self.call = None;
            self.next_check = usize::MAX;
            return;
        }
        self.reported = done;
        self.since = now;
        self.gap = 1;
        self.next_check = done + 1;
    }
}
