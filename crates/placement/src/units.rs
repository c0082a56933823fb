//! Byte and rate formatting shared by the reports.

pub const GIB: f64 = (1u64 << 30) as f64;

pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}
