//! `loky-shapes-worker`: a worker program serving the tasks of a module it
//! shares by path with the `shared_module` test.

#[path = "../shapes/tasks.rs"]
mod tasks;

fn main() {
    loky::serve(tasks::registry())
}
