//! The threads of a pool's own runtime: its supervisor, and each worker's
//! reader and writer. How they start, how they are told apart from the
//! application's threads, and how a panic in one (a bug of loky-rs) is
//! caught so that it becomes a broken pool instead of futures left pending.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

thread_local! {
    static ROLE: Cell<Option<Role>> = const { Cell::new(None) };
}

/// The kinds of runtime thread a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The pool's supervisor.
    Supervisor,
    /// A worker's reader: replies, death detection, reaping.
    Reader,
    /// A worker's writer: frames that did not fit the socket at once.
    Writer,
    /// Starts a pool's workers and frees what is left of dead ones.
    Spawner,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Supervisor => "supervisor",
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Spawner => "spawner",
        })
    }
}

/// Starts a runtime thread of `role` named `name`, marked as a pool
/// thread (see [`is_pool_thread`]).
pub(crate) fn spawn(
    role: Role,
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        ROLE.with(|r| r.set(Some(role)));
        body();
    })
}

/// Runs `body` as a runtime thread of `role` would: for a caller that
/// does, for a moment, a runtime thread's work (a panic there is that
/// thread's bug, the callbacks it runs go to the pool's runner threads).
pub(crate) fn acting_as<T>(role: Role, body: impl FnOnce() -> T) -> T {
    struct Restore(Option<Role>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ROLE.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(ROLE.with(|r| r.replace(Some(role))));
    body()
}

/// Whether the current thread is one of a pool's own: there, waiting for a
/// pool to finish could wait for this very thread.
pub(crate) fn is_pool_thread() -> bool {
    current_role().is_some()
}

/// The role of the current thread, if it is a pool's own.
pub(crate) fn current_role() -> Option<Role> {
    ROLE.with(Cell::get)
}

/// Runs `body`; a panic comes back as its message. The panic hook has
/// already printed it; the caller turns it into its documented outcome.
pub(crate) fn guarded<T>(body: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).map_err(|panic| panic_message(&*panic))
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Hidden, for the test suite: `ROLE:N` (`supervisor`, `reader` or
/// `writer`; `N` defaults to 1) makes the `N`th pass of this process's
/// threads of that role through their injection point panic, so that
/// tests can check what a bug there does. Read once per process.
pub(crate) const INJECT_PANIC_ENV: &str = "LOKY_INTERNAL_INJECT_PANIC";

/// Panics if the test suite asked a thread of this `role` to, here and now.
/// The points: the supervisor at each submission, a reader at each reply,
/// a writer at each batch of frames it writes.
pub(crate) fn injected_panic_point(role: Role) {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static PASSES: AtomicUsize = AtomicUsize::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(INJECT_PANIC_ENV).ok()?;
        let (name, nth) = value.split_once(':').unwrap_or((&value, "1"));
        Some((name.to_owned(), nth.parse().ok()?))
    });
    if let Some((name, nth)) = target
        && *name == role.to_string()
        && PASSES.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    {
        panic!("panic injected in the {role} thread for a test ({INJECT_PANIC_ENV})");
    }
}

/// The error of a pool whose runtime thread panicked.
pub(crate) fn internal_error(role: Option<Role>, worker_pid: Option<u32>, message: &str) -> String {
    let Some(role) = role else {
        return format!(
            "internal error in the pool (a bug of loky-rs, please report it): {message}"
        );
    };
    match worker_pid {
        Some(pid) => format!(
            "internal error in the {role} thread of worker {pid} (a bug of loky-rs, please \
             report it): {message}"
        ),
        None => {
            format!("internal error in the {role} (a bug of loky-rs, please report it): {message}")
        }
    }
}
