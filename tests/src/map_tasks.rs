//! Tasks for the tests of `map`, streams and the parent's serde: items
//! that behave as told (return, sleep, crash, hang), a gate that holds one
//! item, and types whose serde code panics on one side.

use std::time::Duration;

use loky::{Registry, Task};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::gate;

/// What one item of [`BEHAVE`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behave {
    /// Returns the value.
    Return(u64),
    /// Sleeps, then returns the value.
    SleepThen(Duration, u64),
    /// Calls `exit` with the code.
    Exit(i32),
    /// Sleeps for good.
    Hang,
    /// Panics with the message.
    Panic(String),
}

/// Does what its argument says.
pub const BEHAVE: Task<Behave, u64> = Task::new("behave");

/// `x * 2`, but `exit(1)` for 3: loky's `problematic_task`.
pub const PROBLEMATIC: Task<u64, u64> = Task::new("problematic");

/// Waits at the gate at the given path (see [`crate::Gate`]) if there is
/// one, then returns the value.
pub const HELD_OR_ECHO: Task<(Option<String>, u64), u64> = Task::new("held_or_echo");

/// Returns its argument's value; the argument cannot be encoded (its
/// `Serialize` panics) when odd.
pub const ENCODE_PANICS: Task<EncodePanics, u64> = Task::new("encode_panics");

/// Returns a [`DecodePanics`] of its argument: the parent cannot decode it
/// (its `Deserialize` panics) when odd.
pub const DECODE_PANICS: Task<u64, DecodePanics> = Task::new("decode_panics");

/// A `u64` whose `Serialize` panics when odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EncodePanics(pub u64);

impl Serialize for EncodePanics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(
            self.0.is_multiple_of(2),
            "EncodePanics refuses odd {}",
            self.0
        );
        self.0.serialize(s)
    }
}

/// A `u64` whose `Deserialize` panics when odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DecodePanics(pub u64);

impl<'de> Deserialize<'de> for DecodePanics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        assert!(n.is_multiple_of(2), "DecodePanics refuses odd {n}");
        Ok(DecodePanics(n))
    }
}

fn behave(what: Behave) -> u64 {
    match what {
        Behave::Return(value) => value,
        Behave::SleepThen(pause, value) => {
            std::thread::sleep(pause);
            value
        }
        Behave::Exit(code) => std::process::exit(code),
        Behave::Hang => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Behave::Panic(message) => panic!("{message}"),
    }
}

/// Registers the tasks above.
pub fn register(registry: Registry) -> Registry {
    registry
        .register(BEHAVE, behave)
        .register(PROBLEMATIC, |x: u64| {
            if x == 3 {
                std::process::exit(1);
            }
            x * 2
        })
        .register(HELD_OR_ECHO, |(held, value): (Option<String>, u64)| {
            if let Some(path) = held {
                gate(path);
            }
            value
        })
        .register(ENCODE_PANICS, |EncodePanics(n)| n)
        .register(DECODE_PANICS, DecodePanics)
}
