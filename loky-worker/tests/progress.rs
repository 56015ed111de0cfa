//! A chunk that runs long reports its items as they are done, before its
//! reply; a chunk of fast items reports nothing.

mod common;

use std::time::Duration;

use common::{Worker, value};
use loky_proto::{Outcome, Progress, Response, decode_payload};
use loky_worker::diagnostics::{SLEEP, SQUARE};

#[test]
fn a_chunk_of_slow_items_reports_each_item_before_its_reply() {
    let mut worker = Worker::ready();
    let pause = Duration::from_millis(5);
    worker.send_chunk(1, SLEEP, &[pause; 4]);
    let mut reported = 0;
    loop {
        match worker.recv() {
            Response::Progress(Progress { id, items }) => {
                assert_eq!(id, 1);
                for item in items {
                    assert!(matches!(&item, Outcome::Value(v) if decode_payload::<()>(v).is_ok()));
                    reported += 1;
                }
            }
            Response::Reply(reply) => {
                assert_eq!(reply.id, 1);
                assert_eq!(value::<Vec<()>>(reply.outcome).len(), 4);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Each item takes longer than the reporting period; the last one is in
    // the reply only if it finished within a period of the previous report.
    assert!(reported >= 3, "{reported} items reported");
}

/// Fast items are not reported one by one: at most one report per
/// period, and none at all when the chunk takes less than a period (here
/// it may not, on a loaded machine).
#[test]
fn a_chunk_of_fast_items_sends_few_reports() {
    let mut worker = Worker::ready();
    let inputs: Vec<i64> = (0..1000).collect();
    worker.send_chunk(1, SQUARE, &inputs);
    let mut reports = 0;
    loop {
        match worker.recv() {
            Response::Progress(_) => reports += 1,
            Response::Reply(reply) => {
                assert_eq!(value::<Vec<i64>>(reply.outcome).len(), 1000);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(reports <= 20, "{reports} reports for 1000 fast items");
}
