//! Text: tokenizer training and loading (`tokenizers`), and captions of mirrored images.

pub mod mirror;
pub mod tokenizer;

pub use mirror::mirror_caption;
pub use tokenizer::{CaptionTokenizer, TokenizerConfig, BOS, EOS, PAD, SPECIAL_TOKENS, UNK};
