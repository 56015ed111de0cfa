//! Usable CPUs (placeholder, being written).
