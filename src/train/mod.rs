//! Training infrastructure shared by every `train` command: loop, optimizers with saveable state, schedules, checkpoints, run logs.
