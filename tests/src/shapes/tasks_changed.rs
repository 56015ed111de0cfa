//! [`tasks.rs`](tasks.rs) as it might be after an edit that its worker
//! program was rebuilt with but its application was not: the field `x` of
//! `Point` changed type. Compiled as a module named `tasks`, so its type
//! names are those of the original.

use loky::{Registry, Task};
use serde::{Deserialize, Serialize};

/// A point in the plane, with a textual abscissa.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Point {
    /// Abscissa, now text.
    pub(crate) x: String,
    /// Ordinate.
    pub(crate) y: i64,
}

/// The point mirrored through the origin.
pub(crate) const MIRROR: Task<Point, Point> = Task::new("mirror");

/// The origin.
pub(crate) const ORIGIN: Task<(), Point> = Task::new("origin");

/// The tasks of this module.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .register(MIRROR, |p: Point| Point {
            x: format!("-{}", p.x),
            y: -p.y,
        })
        .register(ORIGIN, |()| Point {
            x: "zero".to_owned(),
            y: 0,
        })
}
