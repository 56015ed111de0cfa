//! `submit_fn`, `submit_fn_with`, `map_fn` and `map_unordered_fn`: any
//! `fn` item or non-capturing closure of this program, run in workers of
//! this very program build, with nothing to register.
//!
//! A function travels as a [`FnRef`] (offsets into this program's code).
//! The supervisor sends it only to workers whose hello carries this
//! program's identity; to any other worker the call fails with
//! [`Error::ProgramMismatch`] and the pool goes on. Nothing depends on this
//! module: it only adds methods to [`ProcessPoolExecutor`].

use std::any::{TypeId, type_name};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use loky_proto::{FnRef, Payload, Signature};

use crate::call::Target;
use crate::error::{Error, Result};
use crate::executor::ProcessPoolExecutor;
use crate::future::Future;
use crate::map::{Map, MapUnordered};
use crate::options::CallOptions;

/// The target of `f`, or why `f` cannot be sent. The last one a thread
/// made is kept: a loop of `submit_fn` calls of one function makes its
/// target once, not a reference and a name lookup per call.
fn target<I: Payload, O: Payload>(f: fn(I) -> O) -> Result<Target> {
    thread_local! {
        /// The last target made here, with its function's address and type.
        static LAST: RefCell<Option<(usize, TypeId, Target)>> = const { RefCell::new(None) };
    }
    // Functions of different types may share their code, so their address.
    let key = (f as usize, TypeId::of::<fn(I) -> O>());
    let cached = LAST.with_borrow(|last| match last {
        Some((address, id, target)) if (*address, *id) == key => Some(target.clone()),
        _ => None,
    });
    if let Some(target) = cached {
        return Ok(target);
    }
    let function = FnRef::new(f).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let target = Target::Function {
        sig: fn_signature::<I, O>(),
        function: Arc::new(function),
    };
    LAST.set(Some((key.0, key.1, target.clone())));
    Ok(target)
}

/// The signature of a function: named by its type, `fn(I) -> O`.
fn fn_signature<I: 'static, O: 'static>() -> Signature {
    Signature {
        name: function_name::<I, O>(),
        input: type_name::<I>(),
        output: type_name::<O>(),
    }
}

/// The name of functions of type `fn(I) -> O` in messages: the type, each
/// path cut to its last segment (`fn(Duration)`, not
/// `fn(core::time::Duration)`). Made once per type.
fn function_name<I: 'static, O: 'static>() -> &'static str {
    static NAMES: RwLock<BTreeMap<TypeId, &'static str>> = RwLock::new(BTreeMap::new());
    let id = TypeId::of::<fn(I) -> O>();
    if let Some(name) = NAMES.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return name;
    }
    let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
    names.entry(id).or_insert_with(|| {
        // Leaked once per function type of the program: a bounded amount.
        let short = loky_proto::short_type_name(type_name::<fn(I) -> O>());
        Box::leak(short.into_owned().into_boxed_str())
    })
}

impl ProcessPoolExecutor {
    /// Schedules `f(args)` in a worker and returns its future at once: any
    /// `fn` item or non-capturing closure of this program, with nothing to
    /// register. What a closure would capture travels in `args`.
    ///
    /// The workers must run this very program build: call
    /// [`loky::init()`](https://docs.rs/loky/latest/loky/fn.init.html) first
    /// in `main`, and executors built afterwards run this program by
    /// default. A worker of another program (a separate worker binary, or a
    /// stale build) is never sent the function: the call fails with
    /// [`Error::ProgramMismatch`] naming both programs, and the pool goes
    /// on. Otherwise everything is as with [`submit`](Self::submit): the
    /// same futures, errors, crash policies, deadlines and `kill`.
    ///
    /// ```standalone_crate
    /// # use loky::ProcessPoolExecutor;
    /// # fn main() -> loky::Result<()> {
    /// # loky::init(); // started as a worker, this program serves here
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let f = ex.submit_fn(|x: i64| x * x, 7)?;
    /// assert_eq!(f.result()?, 49);
    /// let k = 3;
    /// let g = ex.submit_fn(|(k, x): (i64, i64)| k * x, (k, 7))?; // captures as arguments
    /// assert_eq!(g.result()?, 21);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Fails at once as `submit` does, and with
    /// [`Error::InvalidArgument`] if `f` is not in this program's own code
    /// (a function of a shared library) or this program has no identity to
    /// check workers against.
    pub fn submit_fn<I, O>(&self, f: fn(I) -> O, args: I) -> Result<Future<O>>
    where
        I: Payload,
        O: Payload,
    {
        self.submit_fn_with(f, args, CallOptions::new())
    }

    /// As [`submit_fn`](Self::submit_fn), with per-call options.
    ///
    /// ```standalone_crate
    /// # use std::time::Duration;
    /// # use loky::{CallOptions, Error, ProcessPoolExecutor};
    /// # fn main() -> loky::Result<()> {
    /// # loky::init(); // started as a worker, this program serves here
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let options = CallOptions::new().timeout(Duration::from_millis(300));
    /// let f = ex.submit_fn_with(|()| std::thread::sleep(Duration::from_secs(60)), (), options)?;
    /// assert!(matches!(f.result(), Err(Error::DeadlineExceeded(_))));
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit_fn_with<I, O>(
        &self,
        f: fn(I) -> O,
        args: I,
        options: CallOptions,
    ) -> Result<Future<O>>
    where
        I: Payload,
        O: Payload,
    {
        let future = self
            .pool()
            .submit_call(&target(f)?, options.timeout, |frame| {
                crate::codec::encode_into(&args, frame)
            })?;
        Ok(Future::from_state(future))
    }

    /// Runs `f` on every item of `inputs` in workers, yielding results in
    /// input order: [`map`](Self::map) for a function of this program, with
    /// the same options (`chunksize`, `timeout`, `buffersize`, ...) and the
    /// same conditions as [`submit_fn`](Self::submit_fn).
    ///
    /// ```standalone_crate
    /// # use loky::ProcessPoolExecutor;
    /// # fn main() -> loky::Result<()> {
    /// # loky::init(); // started as a worker, this program serves here
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let v: Vec<i64> = ex.map_fn(|x: i64| x + 1, 0..1000).chunksize(100).collect::<Result<_, _>>()?;
    /// assert_eq!(v[999], 1000);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// If `f` cannot be sent, every item yields that error.
    pub fn map_fn<'a, I, O, It>(&self, f: fn(I) -> O, inputs: It) -> Map<'a, O>
    where
        I: Payload,
        O: Payload,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        match target(f) {
            Ok(target) => Map::new(self.pool_handle(), target, inputs),
            Err(err) => Map::new(self.pool_handle(), unsent::<I, O>(), inputs).refused(err),
        }
    }

    /// Runs `f` on every item of `inputs` in workers, yielding each input's
    /// index with its result as results arrive:
    /// [`map_unordered`](Self::map_unordered) for a function of this
    /// program, with the same conditions as [`submit_fn`](Self::submit_fn).
    ///
    /// ```standalone_crate
    /// # use loky::ProcessPoolExecutor;
    /// # fn main() -> loky::Result<()> {
    /// # loky::init(); // started as a worker, this program serves here
    /// let ex = ProcessPoolExecutor::new(2)?;
    /// let mut squares = vec![0; 100];
    /// for (i, square) in ex.map_unordered_fn(|x: i64| x * x, 0..100).chunksize(10) {
    ///     squares[i] = square?;
    /// }
    /// assert_eq!(squares[9], 81);
    /// # Ok(())
    /// # }
    /// ```
    pub fn map_unordered_fn<'a, I, O, It>(&self, f: fn(I) -> O, inputs: It) -> MapUnordered<'a, O>
    where
        I: Payload,
        O: Payload,
        It: IntoIterator<Item = I>,
        It::IntoIter: Send + 'a,
    {
        match target(f) {
            Ok(target) => MapUnordered::new(self.pool_handle(), target, inputs),
            Err(err) => {
                MapUnordered::new(self.pool_handle(), unsent::<I, O>(), inputs).refused(err)
            }
        }
    }
}

/// What names a map of a function that cannot be sent (nothing is sent).
fn unsent<I: 'static, O: 'static>() -> Target {
    Target::Task(fn_signature::<I, O>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function_of(target: &Target) -> &Arc<FnRef> {
        match target {
            Target::Function { function, .. } => function,
            Target::Task(_) => panic!("a function's target names a task"),
        }
    }

    fn double(x: i64) -> i64 {
        2 * x
    }

    fn name(x: u8) -> String {
        x.to_string()
    }

    #[test]
    fn a_thread_makes_the_target_of_the_function_it_sends_again_once() {
        let first = target(double).unwrap();
        let again = target(double).unwrap();
        assert!(Arc::ptr_eq(function_of(&first), function_of(&again)));
        assert_eq!(again.signature().name, "fn(i64) -> i64");

        let other = target(name).unwrap();
        assert_eq!(other.signature().name, "fn(u8) -> String");
        assert_ne!(function_of(&other), function_of(&first));

        // Made anew once another function came between, and the same.
        let back = target(double).unwrap();
        assert!(!Arc::ptr_eq(function_of(&first), function_of(&back)));
        assert_eq!(function_of(&first), function_of(&back));
        assert_eq!(back.signature(), first.signature());
    }
}
