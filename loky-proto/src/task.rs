//! The typed task handle shared by an application and its worker program.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A typed name for a function that a worker program runs.
///
/// The application and its worker program share the constant: the worker
/// registers a function under it, the application submits calls through it,
/// and the types `I` (argument) and `O` (output) keep both sides honest.
/// Several arguments travel as a tuple; a task that can fail returns a
/// `Result` as its output.
///
/// ```
/// use loky::Task;
///
/// pub const SQUARE: Task<i64, i64> = Task::new("square");
/// pub const CONCAT: Task<(String, u32), String> = Task::new("concat");
/// pub const PARSE: Task<String, Result<u64, String>> = Task::new("parse");
///
/// assert_eq!(SQUARE.name(), "square");
/// assert_eq!(CONCAT.signature().input, "(alloc::string::String, u32)");
/// ```
pub struct Task<I, O> {
    name: &'static str,
    // `fn(I) -> O` keeps the handle `Send + Sync + Copy` whatever I and O are.
    marker: PhantomData<fn(I) -> O>,
}

impl<I, O> Task<I, O> {
    /// A handle for the task registered under `name`.
    pub const fn new(name: &'static str) -> Self {
        Task {
            name,
            marker: PhantomData,
        }
    }

    /// The name the task is registered under.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The name and the argument and output type names of this handle.
    pub fn signature(&self) -> Signature {
        Signature {
            name: self.name,
            input: std::any::type_name::<I>(),
            output: std::any::type_name::<O>(),
        }
    }
}

impl<I, O> Clone for Task<I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for Task<I, O> {}

impl<I, O> fmt::Debug for Task<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Task({})", self.signature())
    }
}

/// The name and the type names of a task, as both sides see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The registered name.
    pub name: &'static str,
    /// `std::any::type_name` of the argument type.
    pub input: &'static str,
    /// `std::any::type_name` of the output type.
    pub output: &'static str,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.name, self.input, self.output)
    }
}

/// The bound every task argument and output satisfies: any serde type that
/// can cross a thread.
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {}
