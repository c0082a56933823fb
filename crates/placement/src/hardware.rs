//! Accelerator specifications for the sizing report.
//!
//! Figures are the vendors' published dense (no sparsity) peaks for the SXM parts. "NVLink" is
//! one direction per GPU; "network" is the scale-out NIC bandwidth per GPU (one 400 Gb/s NIC
//! per GPU, as in the reference H100/H800/H200/B200 systems).

use crate::error::PlanError;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub name: String,
    /// Memory usable by one device, GiB.
    pub hbm_gib: f64,
    /// Memory bandwidth, TB/s (10^12 bytes per second).
    pub hbm_tbps: f64,
    /// Dense BF16 and FP8 throughput, TFLOP/s.
    pub bf16_tflops: f64,
    pub fp8_tflops: f64,
    /// Device-to-device bandwidth inside a node, GB/s per direction.
    pub nvlink_gbps: f64,
    /// Scale-out bandwidth per device, GB/s per direction.
    pub network_gbps: f64,
}

impl Hardware {
    /// `h100-80g`, `h800`, `h200`, `b200`, or `cpu:<GiB>` (a two-socket server node, one
    /// "device" per node: 8-channel DDR5 x2, AMX BF16, 100 GbE).
    pub fn parse(name: &str) -> Result<Hardware, PlanError> {
        let hw = |hbm_gib, hbm_tbps, bf16_tflops, fp8_tflops, nvlink_gbps, network_gbps| Hardware {
            name: name.to_string(),
            hbm_gib,
            hbm_tbps,
            bf16_tflops,
            fp8_tflops,
            nvlink_gbps,
            network_gbps,
        };
        match name {
            "h100-80g" | "h100" => Ok(hw(80.0, 3.35, 989.0, 1979.0, 450.0, 50.0)),
            "h800" => Ok(hw(80.0, 3.35, 989.0, 1979.0, 200.0, 50.0)),
            "h200" => Ok(hw(141.0, 4.8, 989.0, 1979.0, 450.0, 50.0)),
            "b200" => Ok(hw(180.0, 8.0, 2250.0, 4500.0, 900.0, 50.0)),
            _ => {
                let gib = name
                    .strip_prefix("cpu:")
                    .and_then(|g| g.parse::<f64>().ok())
                    .filter(|g| g.is_finite() && *g > 0.0 && *g <= 1e6)
                    .ok_or_else(|| PlanError::UnknownHardware(name.to_string()))?;
                // No FP8 units: FP8 weights are widened to BF16 inside the kernels.
                Ok(hw(gib, 0.6, 8.0, 8.0, 0.6, 12.5))
            }
        }
    }

    pub fn hbm_bytes(&self) -> u64 {
        (self.hbm_gib * crate::units::GIB) as u64
    }
}

impl fmt::Display for Hardware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:.0} GiB @ {:.2} TB/s, {:.0}/{:.0} TFLOP/s bf16/fp8, NVLink {:.0} GB/s, network {:.1} GB/s",
            self.name,
            self.hbm_gib,
            self.hbm_tbps,
            self.bf16_tflops,
            self.fp8_tflops,
            self.nvlink_gbps,
            self.network_gbps
        )
    }
}
