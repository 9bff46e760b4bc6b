//! Text: tokenizer training and loading (`tokenizers`).
