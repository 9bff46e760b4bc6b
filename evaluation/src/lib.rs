//! insar-mm-eval: evaluation metrics identical to their reference implementations.
//! No Candle dependency: inputs are caption files and plain feature matrices.
