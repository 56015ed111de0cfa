//! Functions sent to a worker without registration.
//!
//! A function travels as a [`FnRef`]: two offsets from an anchor function
//! of this crate, one to the user's `fn(I) -> O` and one to a trampoline
//! monomorphized for `I` and `O` that decodes the argument, calls the
//! function and encodes its output. Offsets, not addresses: the worker runs
//! the same executable loaded elsewhere (ASLR), and offsets within one
//! loaded object do not change. Only `fn` pointers travel, never a closure
//! value made from nothing.
//!
//! Before calling anything, the worker checks that the reference was made
//! by a program whose identity equals its own, and that both addresses lie
//! in its own executable code. The parent checks the identity of each
//! worker before sending it a function; the worker's check is the second
//! line of defence.

use std::any::type_name;
use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frame::FrameSink;
use crate::invoke::{Runtime, invoke};
use crate::message::{CallError, CallKind, Outcome};
use crate::os;
use crate::program::{self, IdKind, ProgramId};
use crate::task::Payload;

/// A function of this program, as it travels to a worker: offsets from the
/// program's anchor to a trampoline and to the function, and the identity
/// of the program that made them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FnRef {
    /// Offset of the trampoline from the anchor.
    trampoline: i64,
    /// Offset of the function from the anchor.
    function: i64,
    /// The program whose code these offsets are into: this program's own
    /// identity, borrowed, when it is this program (as it is for every
    /// reference made here, and for those a worker receives from its
    /// executor), not a copy for each call.
    program: Cow<'static, ProgramId>,
}

/// Why a function cannot be sent, or cannot be run where it arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FnRefError {
    /// This program's identity could not be found, so no worker can be
    /// proven to run the same code.
    #[error(
        "the identity of this program could not be found (no build id in the object that \
         holds its code, and no executable file to identify), so its functions cannot be sent \
         to workers"
    )]
    UnknownProgram,
    /// An address lies outside this program's executable code (in a shared
    /// library, for instance, whose load address differs between
    /// processes).
    #[error(
        "the {what} at {address:#x} is not in the executable code of this program; only \
         functions of the program itself can be sent to its workers"
    )]
    OutsideProgram {
        /// `function` or `trampoline`.
        what: &'static str,
        /// The address.
        address: usize,
    },
    /// The reference was made by another program build.
    #[error("the function was sent by another program ({sender}); this worker is {this}")]
    OtherProgram {
        /// The identity in the reference.
        sender: ProgramId,
        /// This program's identity.
        this: ProgramId,
    },
}

impl FnRef {
    /// The reference to `f`, a function (or non-capturing closure) of this
    /// program.
    ///
    /// Fails if this program has no known identity, or if `f` is not in
    /// this program's executable code.
    pub fn new<I: Payload, O: Payload>(f: fn(I) -> O) -> Result<FnRef, FnRefError> {
        let this = ProgramId::current();
        if !this.is_known() {
            return Err(FnRefError::UnknownProgram);
        }
        let trampoline = os::trampoline_address(trampoline::<I, O>);
        let function = os::code_address(f);
        Ok(FnRef {
            trampoline: offset("trampoline", trampoline)?,
            function: offset("function", function)?,
            program: Cow::Borrowed(this),
        })
    }

    /// The identity of the program that made the reference.
    pub fn program(&self) -> &ProgramId {
        &self.program
    }

    /// The reference's offsets, trampoline then function, as they travel.
    pub(crate) fn offsets(&self) -> (i64, i64) {
        (self.trampoline, self.function)
    }

    /// A reference as it arrived, made by the program of identity `kind`
    /// and `bytes`: nothing is checked until [`run`](Self::run).
    pub(crate) fn from_wire(trampoline: i64, function: i64, kind: IdKind, bytes: &[u8]) -> FnRef {
        let this = ProgramId::current();
        let program = if this.kind == kind && this.bytes == bytes {
            Cow::Borrowed(this)
        } else {
            Cow::Owned(ProgramId {
                kind,
                bytes: bytes.to_vec(),
            })
        };
        FnRef {
            trampoline,
            function,
            program,
        }
    }

    /// What tells this function from the other functions of its program
    /// (its offset in the program's code).
    pub fn function_id(&self) -> i64 {
        self.function
    }

    /// Runs the function on a call's encoded argument(s), as
    /// [`invoke`](crate::invoke()) runs a registered one, after checking
    /// that the reference was made by this very program and points into its
    /// executable code. A reference that fails the checks is
    /// [`CallError::Function`], and nothing is called.
    pub fn run(
        &self,
        kind: CallKind,
        args: &[u8],
        out: &mut dyn FrameSink,
        unwind: &dyn Runtime,
    ) -> Result<(), Outcome<'static>> {
        let refused = |err: FnRefError| {
            Outcome::Failed(CallError::Function {
                message: err.to_string(),
            })
        };
        let this = ProgramId::current();
        if !self.program.same_program(this) {
            return Err(refused(FnRefError::OtherProgram {
                sender: self.program.clone().into_owned(),
                this: this.clone(),
            }));
        }
        let trampoline = address("trampoline", self.trampoline).map_err(refused)?;
        let function = address("function", self.function).map_err(refused)?;
        // SAFETY: this program made the reference (equal build identity),
        // so the offsets, taken from the anchor of this very code, are those
        // `FnRef::new` computed: `trampoline` is `trampoline::<I, O>` and
        // `function` a `fn(I) -> O` with the same `I` and `O`. Both were
        // checked to lie in this program's executable code.
        unsafe { os::call_trampoline(trampoline, function, kind, args, out, unwind) }
    }
}

impl fmt::Display for FnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "function at anchor{:+#x} of {}",
            self.function, self.program
        )
    }
}

/// The offset of `address` from the anchor, once it is checked to lie in
/// this program's code.
fn offset(what: &'static str, address: usize) -> Result<i64, FnRefError> {
    if !program::is_program_code(address) {
        return Err(FnRefError::OutsideProgram { what, address });
    }
    Ok(address.wrapping_sub(program::anchor_address()) as isize as i64)
}

/// The address at `offset` from the anchor, if it lies in this program's
/// code.
fn address(what: &'static str, offset: i64) -> Result<usize, FnRefError> {
    let address = program::anchor_address().wrapping_add(offset as isize as usize);
    if !program::is_program_code(address) {
        return Err(FnRefError::OutsideProgram { what, address });
    }
    Ok(address)
}

/// Runs the `fn(I) -> O` at address `function`.
///
/// # Safety
///
/// `function` must be the address of a `fn(I) -> O` of this program.
unsafe fn trampoline<I: Payload, O: Payload>(
    function: usize,
    kind: CallKind,
    args: &[u8],
    out: &mut dyn FrameSink,
    unwind: &dyn Runtime,
) -> Result<(), Outcome<'static>> {
    // SAFETY: the caller guarantees that `function` is a `fn(I) -> O`.
    let f = unsafe { os::function_at::<I, O>(function) };
    invoke(&f, type_name::<fn(I) -> O>(), kind, args, out, unwind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::tests::CatchUnwind;
    use crate::{decode_payload, encode_payload};

    fn square(x: i64) -> i64 {
        x * x
    }

    #[test]
    fn a_function_and_a_closure_come_from_the_same_program() {
        let f = FnRef::new(square as fn(i64) -> i64).unwrap();
        assert_eq!(FnRef::new(|x: i64| x * x).unwrap().program(), f.program());
    }

    fn run(f: &FnRef, arg: &impl Serialize) -> Outcome<'static> {
        let mut out = Vec::new();
        match f.run(
            CallKind::Single,
            &encode_payload(arg).unwrap(),
            &mut out,
            &CatchUnwind,
        ) {
            Ok(()) => Outcome::Value(out.into()),
            Err(failure) => failure,
        }
    }

    fn value<T: Payload>(outcome: Outcome<'_>) -> T {
        match outcome {
            Outcome::Value(bytes) => decode_payload(&bytes).unwrap(),
            other => panic!("not a value: {other:?}"),
        }
    }

    fn concat((s, n): (String, u32)) -> String {
        s.repeat(n as usize)
    }

    #[test]
    fn functions_and_closures_run_through_their_reference() {
        let f = FnRef::new(concat).unwrap();
        assert_eq!(value::<String>(run(&f, &("ab", 3))), "ababab");
        let k = FnRef::new(|(k, x): (i64, i64)| k * x).unwrap();
        assert_eq!(value::<i64>(run(&k, &(3, 7))), 21);
        let p = FnRef::new(|x: u8| -> u8 { panic!("no {x}") }).unwrap();
        assert!(matches!(run(&p, &4u8), Outcome::Panic(p) if p.message == "no 4"));
    }

    #[test]
    fn a_reference_survives_the_wire() {
        let f = FnRef::new(concat).unwrap();
        let back: FnRef = decode_payload(&encode_payload(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert_eq!(value::<String>(run(&back, &("x", 2))), "xx");
    }

    #[test]
    fn a_reference_of_this_program_shares_its_identity_instead_of_copying_it() {
        let this = ProgramId::current();
        let made = FnRef::new(concat).unwrap();
        assert!(std::ptr::eq(made.program(), this));
        let (trampoline, function) = made.offsets();
        let arrived = FnRef::from_wire(trampoline, function, this.kind, &this.bytes);
        assert!(std::ptr::eq(arrived.program(), this));
        assert_eq!(arrived, made);
        let mut other = this.bytes.clone();
        other[0] ^= 1;
        let foreign = FnRef::from_wire(trampoline, function, this.kind, &other);
        assert_eq!(foreign.program().bytes, other);
        assert!(!foreign.program().same_program(this));
    }

    #[test]
    fn a_reference_from_another_program_is_refused() {
        let mut f = FnRef::new(concat).unwrap();
        f.program.to_mut().bytes[0] ^= 1;
        let outcome = run(&f, &("x", 2));
        assert!(
            matches!(&outcome, Outcome::Failed(CallError::Function { message })
                if message.contains("another program")),
            "{outcome:?}"
        );
    }

    #[test]
    fn offsets_outside_the_code_are_refused_before_any_call() {
        for bad in [i64::MAX / 2, -(1 << 40), 1 << 40] {
            let mut f = FnRef::new(concat).unwrap();
            f.function = bad;
            let outcome = run(&f, &("x", 2));
            assert!(
                matches!(&outcome, Outcome::Failed(CallError::Function { message })
                    if message.contains("not in the executable code")),
                "{outcome:?}"
            );
            let mut f = FnRef::new(concat).unwrap();
            f.trampoline = bad;
            assert!(matches!(
                run(&f, &("x", 2)),
                Outcome::Failed(CallError::Function { .. })
            ));
        }
    }

    #[test]
    fn data_is_not_code() {
        static DATA: u64 = 7;
        let err = offset("function", &raw const DATA as usize).unwrap_err();
        assert!(matches!(
            err,
            FnRefError::OutsideProgram {
                what: "function",
                ..
            }
        ));
    }
}
