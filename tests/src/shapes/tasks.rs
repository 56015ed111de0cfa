//! Tasks on points: one module compiled into two binaries by path (the
//! `loky-shapes-worker` program and the `shared_module` test), whose type
//! names therefore start with two different crate names.

use loky::{Registry, Task};
use serde::{Deserialize, Serialize};

/// A point in the plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Point {
    /// Abscissa.
    pub(crate) x: i64,
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
        .register(MIRROR, |p: Point| Point { x: -p.x, y: -p.y })
        .register(ORIGIN, |()| Point { x: 0, y: 0 })
}
