//! Learning-rate schedules: linear warmup followed by cosine decay, step decay or a constant.
//!
//! `lr(step)` is the learning rate of the update made at 0-based optimizer step `step` of a
//! run of `total` steps. Warmup rises linearly, `base · (step + 1) / warmup_steps`, so the
//! first update is small but not zero and step `warmup_steps − 1` reaches `base`.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::config::only_own_keys;

/// `[schedule]` in a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "ScheduleTable")]
pub enum ScheduleConfig {
    /// Warmup, then the base rate.
    Constant { warmup_steps: u64 },
    /// Warmup, then half a cosine from `base` down to `base · min_lr_ratio` at the last step
    /// (SGDR without restarts, as in SimCLR).
    Cosine {
        warmup_steps: u64,
        min_lr_ratio: f64,
    },
    /// Warmup, then `base · gamma^⌊step / step_size⌋` (PyTorch `StepLR`, counted from step 0).
    Step {
        warmup_steps: u64,
        step_size: u64,
        gamma: f64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

/// `[schedule]` as written, every kind's keys side by side, so that a bad value is reported
/// at its own key (`schedule.warmup_steps`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleTable {
    kind: ScheduleKind,
    warmup_steps: Option<u64>,
    min_lr_ratio: Option<f64>,
    step_size: Option<u64>,
    gamma: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ScheduleKind {
    Constant,
    Cosine,
    Step,
}

impl TryFrom<ScheduleTable> for ScheduleConfig {
    type Error = String;

    fn try_from(t: ScheduleTable) -> Result<Self, String> {
        let (kind, own): (&str, &[&str]) = match t.kind {
            ScheduleKind::Constant => ("constant", &["warmup_steps"]),
            ScheduleKind::Cosine => ("cosine", &["warmup_steps", "min_lr_ratio"]),
            ScheduleKind::Step => ("step", &["warmup_steps", "step_size", "gamma"]),
        };
        only_own_keys(
            kind,
            own,
            &[
                ("min_lr_ratio", t.min_lr_ratio.is_some()),
                ("step_size", t.step_size.is_some()),
                ("gamma", t.gamma.is_some()),
            ],
        )?;
        let warmup_steps = t.warmup_steps.unwrap_or_default();
        Ok(match t.kind {
            ScheduleKind::Constant => ScheduleConfig::Constant { warmup_steps },
            ScheduleKind::Cosine => ScheduleConfig::Cosine {
                warmup_steps,
                min_lr_ratio: t.min_lr_ratio.unwrap_or_default(),
            },
            ScheduleKind::Step => ScheduleConfig::Step {
                warmup_steps,
                step_size: t
                    .step_size
                    .ok_or("kind = \"step\" needs `step_size` (steps between decays)")?,
                gamma: t.gamma.unwrap_or_else(default_gamma),
            },
        })
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Cosine {
            warmup_steps: 0,
            min_lr_ratio: 0.0,
        }
    }
}

impl ScheduleConfig {
    pub fn warmup_steps(&self) -> u64 {
        match *self {
            ScheduleConfig::Constant { warmup_steps }
            | ScheduleConfig::Cosine { warmup_steps, .. }
            | ScheduleConfig::Step { warmup_steps, .. } => warmup_steps,
        }
    }

    /// Checks the ranges; errors name the field (`schedule.gamma`, ...).
    pub fn validate(&self) -> Result<()> {
        match *self {
            ScheduleConfig::Constant { .. } => {}
            ScheduleConfig::Cosine { min_lr_ratio, .. } => ensure!(
                (0.0..=1.0).contains(&min_lr_ratio),
                "schedule.min_lr_ratio = {min_lr_ratio:?} must be in [0, 1]"
            ),
            ScheduleConfig::Step {
                step_size, gamma, ..
            } => {
                ensure!(step_size > 0, "schedule.step_size must be positive");
                ensure!(
                    gamma > 0.0 && gamma <= 1.0,
                    "schedule.gamma = {gamma:?} must be in (0, 1]"
                );
            }
        }
        Ok(())
    }

    /// The learning rate of optimizer step `step` (0-based) of `total`, for base rate `base`.
    pub fn lr(&self, base: f64, step: u64, total: u64) -> f64 {
        let warmup = self.warmup_steps();
        if step < warmup {
            return base * (step + 1) as f64 / warmup as f64;
        }
        match *self {
            ScheduleConfig::Constant { .. } => base,
            ScheduleConfig::Cosine { min_lr_ratio, .. } => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                let min = base * min_lr_ratio;
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleConfig::Step {
                step_size, gamma, ..
            } => base * gamma.powi((step / step_size) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_cosine() {
        let s = ScheduleConfig::Cosine {
            warmup_steps: 4,
            min_lr_ratio: 0.1,
        };
        let lrs: Vec<f64> = (0..14).map(|t| s.lr(1.0, t, 14)).collect();
        // Warmup 0.25, 0.5, 0.75, 1.0; then cosine over 10 steps from 1 down toward 0.1.
        for (t, want) in [0.25, 0.5, 0.75, 1.0].iter().enumerate() {
            assert!(close(lrs[t], *want), "{lrs:?}");
        }
        // Step 4 is the cosine's start (progress 0): the base rate again.
        assert!(close(lrs[4], 1.0));
        // Halfway (progress 0.5): the mean of base and minimum.
        assert!(close(lrs[9], 0.55), "{}", lrs[9]);
        // Progress 0.9 at the last step: 0.1 + 0.9·0.5·(1 + cos 0.9π).
        let last = 0.1 + 0.9 * 0.5 * (1.0 + (0.9 * std::f64::consts::PI).cos());
        assert!(close(lrs[13], last));
        assert!(lrs[4..].windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
        // Past the end the rate stays at the minimum.
        assert!(close(s.lr(1.0, 100, 14), 0.1));
    }

    #[test]
    fn step_and_constant() {
        let s = ScheduleConfig::Step {
            warmup_steps: 2,
            step_size: 3,
            gamma: 0.5,
        };
        let lrs: Vec<f64> = (0..8).map(|t| s.lr(0.2, t, 8)).collect();
        let want = [0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05];
        for (a, b) in lrs.iter().zip(want) {
            assert!(close(*a, b), "{lrs:?}");
        }
        let c = ScheduleConfig::Constant { warmup_steps: 0 };
        assert!(close(c.lr(0.3, 0, 10), 0.3) && close(c.lr(0.3, 9, 10), 0.3));
    }

    #[test]
    fn parsing_and_validation() {
        let s: ScheduleConfig =
            toml::from_str("kind = \"step\"\nstep_size = 10\nwarmup_steps = 5").unwrap();
        assert_eq!(
            s,
            ScheduleConfig::Step {
                warmup_steps: 5,
                step_size: 10,
                gamma: 0.1
            }
        );
        let bad = ScheduleConfig::Step {
            warmup_steps: 0,
            step_size: 0,
            gamma: 0.1,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("step_size"));
        let bad = ScheduleConfig::Cosine {
            warmup_steps: 0,
            min_lr_ratio: 2.0,
        };
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<ScheduleConfig>("kind = \"linear\"").is_err());
    }
}
