//! Training infrastructure shared by every `train` command: the step loop ([`driver`]),
//! optimizers with saveable state ([`optim`]), learning-rate schedules ([`schedule`]),
//! checkpoints and run directories ([`checkpoint`]), run logs and plots ([`log`]), the
//! training config files ([`config`]) and contrastive pretraining ([`pretrain`]).
//!
//! A new `train` command implements [`driver::TrainTask`] for its model and hands it to a
//! [`driver::Trainer`] together with an [`optim::Optimizer`] over the model's trainable
//! variables; see [`pretrain::PretrainTask`] for a complete example.

pub mod caption;
pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod driver;
pub mod encoder_init;
#[cfg(test)]
mod fringes;
pub mod generator;
pub mod heads;
pub mod hub;
pub mod log;
pub mod optim;
pub mod pretrain;
pub mod retrieval;
pub mod schedule;
pub mod segment;

pub use checkpoint::{Checkpoint, RunDir, TrainState};
pub use driver::{
    Batch, BestMetric, LoopConfig, MetricMode, Outcome, StepOutput, TrainTask, Trainer,
};
pub use optim::{trainable_params, Grads, OptimConfig, Optimizer, Param};
pub use schedule::ScheduleConfig;

#[cfg(test)]
mod tests;
