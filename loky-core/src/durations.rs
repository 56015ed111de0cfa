//! How long each task's calls take, as recently measured on a pool's
//! workers: what decides how many calls a worker is sent ahead (the rule
//! is in `supervisor/dispatch.rs`, explained in `supervisor.md`).
//!
//! A duration is measured by the parent, from when the call could start
//! (sent, or the previous reply of that worker, whichever is later) to its
//! reply: the task's own time plus, when nothing was sent ahead, one round
//! trip.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use loky_proto::CallKind;

use crate::call::WorkItem;

/// What durations are kept by: a task (for a function, which one: functions
/// of one type share a name), and whether the call is a `map` chunk (a
/// chunk of many items takes longer than one item).
#[derive(Debug, Clone, Copy, Eq)]
pub(crate) struct TaskKey {
    task: &'static str,
    function: Option<i64>,
    chunk: bool,
}

/// Equal names are usually the same constant: compared by address first.
impl PartialEq for TaskKey {
    fn eq(&self, other: &TaskKey) -> bool {
        self.chunk == other.chunk
            && self.function == other.function
            && (std::ptr::eq(self.task, other.task) || self.task == other.task)
    }
}

impl TaskKey {
    pub(crate) fn of(item: &WorkItem) -> TaskKey {
        TaskKey {
            task: item.sig.name,
            function: item.function.as_ref().map(|f| f.function_id()),
            chunk: item.kind == CallKind::Chunk,
        }
    }
}

/// The recent durations of a pool's tasks.
#[derive(Debug, Default)]
pub(crate) struct Durations {
    /// A moving average per task, in ns, weighing the last call by 1/8: a
    /// task that turns long is seen as long after one call (a 1.5 s call
    /// after fast ones averages to about 190 ms). A pool runs a handful of
    /// tasks: a list is searched faster than a map hashes.
    typical_ns: Mutex<Vec<(TaskKey, u64)>>,
}

impl Durations {
    fn lock(&self) -> MutexGuard<'_, Vec<(TaskKey, u64)>> {
        self.typical_ns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a call of `key` took `took`.
    pub(crate) fn record(&self, key: TaskKey, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut tasks = self.lock();
        match tasks.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = *old - *old / 8 + took / 8,
            None => tasks.push((key, took)),
        }
    }

    /// Makes `typical` the typical duration of `key`, whatever was
    /// measured: tests of the dispatch rule, whose measured calls take as
    /// long as the test machine's load makes them.
    #[cfg(test)]
    pub(crate) fn set(&self, key: TaskKey, typical: Duration) {
        let mut tasks = self.lock();
        tasks.retain(|(k, _)| *k != key);
        tasks.push((key, u64::try_from(typical.as_nanos()).unwrap_or(u64::MAX)));
    }

    /// The typical duration of a call of `key`; `None` before one finished.
    pub(crate) fn typical(&self, key: TaskKey) -> Option<Duration> {
        let tasks = self.lock();
        let (_, ns) = tasks.iter().find(|(k, _)| *k == key)?;
        Some(Duration::from_nanos(*ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(task: &'static str) -> TaskKey {
        TaskKey {
            task,
            function: None,
            chunk: false,
        }
    }

    #[test]
    fn a_task_is_unknown_until_a_call_finished_and_keyed_by_name_and_kind() {
        let durations = Durations::default();
        assert_eq!(durations.typical(key("a")), None);
        durations.record(key("a"), Duration::from_micros(50));
        assert_eq!(durations.typical(key("a")), Some(Duration::from_micros(50)));
        let chunk = TaskKey {
            task: "a",
            function: None,
            chunk: true,
        };
        assert_eq!(durations.typical(chunk), None);
    }

    #[test]
    fn functions_of_one_type_are_measured_apart() {
        let durations = Durations::default();
        let function = |id| TaskKey {
            task: "fn(i64) -> i64",
            function: Some(id),
            chunk: false,
        };
        durations.record(function(1), Duration::from_micros(50));
        assert_eq!(durations.typical(function(2)), None);
        assert_eq!(durations.typical(key("fn(i64) -> i64")), None);
        assert_eq!(
            durations.typical(function(1)),
            Some(Duration::from_micros(50))
        );
    }

    #[test]
    fn one_long_call_makes_a_fast_task_long() {
        let durations = Durations::default();
        for _ in 0..100 {
            durations.record(key("a"), Duration::from_micros(50));
        }
        durations.record(key("a"), Duration::from_millis(1500));
        assert!(durations.typical(key("a")).unwrap() > Duration::from_millis(100));
    }
}
