//! Text: tokenizer training and loading (`tokenizers`).

pub mod tokenizer;

pub use tokenizer::{CaptionTokenizer, TokenizerConfig, BOS, EOS, PAD, SPECIAL_TOKENS, UNK};
