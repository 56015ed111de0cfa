//! `loky-shapes-worker-changed`: the worker program of `loky-shapes-worker`
//! rebuilt after a field of its `Point` changed type (see
//! `shapes/tasks_changed.rs`), for the `shared_module` test.

#[path = "../shapes/tasks_changed.rs"]
mod tasks;

fn main() {
    loky::serve(tasks::registry())
}
