//! placeholder
mod cpu;
