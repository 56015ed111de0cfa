//! `init_before_main!`: [`init`](crate::init) for programs whose `main` is
//! not the user's, such as the test binaries of the libtest harness.

/// Makes a program whose `main` you do not write (a test binary of the
/// libtest harness: `cargo test`, `cargo nextest`) its own worker program,
/// by running [`init`](crate::init) (or, given a registry,
/// [`serve_if_worker`](crate::serve_if_worker)) before `main`.
///
/// It places a constructor in the executable (the ELF `.init_array`, or
/// `__mod_init_func` on Apple platforms), which the loader runs before the
/// program's `main`. Started by an executor as a worker, the test binary
/// then serves there and the test harness never runs; run by `cargo test`,
/// it records that the binary is its own worker program, and every executor
/// that a test builds without an explicit worker program starts the test
/// binary itself as its workers.
///
/// Write it once per test binary: at the top of an integration test file
/// (`tests/*.rs`), or in the crate root under `#[cfg(test)]` for unit
/// tests.
///
/// ```no_run
/// // tests/pool.rs
/// loky::init_before_main!();
///
/// #[test]
/// fn squares_in_workers() {
///     # /*
///     let ex = loky::ProcessPoolExecutor::new(2).unwrap(); // workers: this test binary
///     let f = ex.submit_fn(|x: i64| x * x, 7).unwrap();
///     assert_eq!(f.result().unwrap(), 49);
///     # */
/// }
/// ```
///
/// With named tasks too, give an expression that makes the registry:
///
/// ```no_run
/// use loky::Task;
///
/// const SQUARE: Task<i64, i64> = Task::new("square");
///
/// loky::init_before_main!(loky::Registry::new().register(SQUARE, |x: i64| x * x));
/// ```
///
/// The constructor runs before the Rust runtime has set itself up for
/// `main`: a worker serves without it (the worker runtime sets what it
/// needs), and the registry expression should only build the registry.
#[macro_export]
macro_rules! init_before_main {
    () => {
        $crate::init_before_main!($crate::Registry::new());
    };
    ($registry:expr) => {
        const _: () = {
            #[used]
            #[cfg_attr(not(target_vendor = "apple"), unsafe(link_section = ".init_array"))]
            #[cfg_attr(
                target_vendor = "apple",
                unsafe(link_section = "__DATA,__mod_init_func")
            )]
            static LOKY_INIT_BEFORE_MAIN: extern "C" fn() = {
                extern "C" fn loky_init_before_main() {
                    $crate::serve_if_worker(&$registry);
                }
                loky_init_before_main
            };
        };
    };
}
