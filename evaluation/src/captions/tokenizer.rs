//! The caption tokenization of pycocoevalcap 1.2, re-implemented.
//!
//! pycocoevalcap pipes every caption through Stanford CoreNLP 3.4.1's `PTBTokenizer
//! -preserveLines -lowerCase`, splits the output on single spaces and drops the tokens in
//! [`PUNCTUATIONS`]. This module reproduces that behaviour without Java for the
//! constructs that occur in captions (checked token for token against the real jar in
//! `evaluation/reference/`): lower-casing; brackets as `-lrb-`/`-rrb-`/`-lsb-`/… (kept,
//! as in the original, because its filter list is upper case); clitics (`can't` →
//! `ca n't`, `it's` → `it 's`, `cannot` → `can not`); numbers (`1,000`, `3.5`, `.5`,
//! `10:30`, `5 1/2` joined by a no-break space); abbreviations that keep their period
//! (`e.g.`, `u.s.`, `etc.`, `mr.`, single letters); hyphenated and slashed words kept
//! whole; `%`, `$`, `=`, `+`, `*` and similar split off; runs of `!`/`?` kept as one token.
//! Known differences from the jar are rare constructs (e.g. `rock'n'roll`, `a..b`,
//! mixed-case acronyms with `&`).

/// Tokens that pycocoevalcap removes after tokenization (its list, verbatim).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Abbreviations that keep their final period (besides single letters and `a.b.` forms).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "jr", "sr", "vs", "etc", "al", "cf", "inc",
    "co", "corp", "ltd", "bros", "cos", "ave", "blvd", "rd", "gen", "gov", "sen", "rep", "adm",
    "capt", "col", "lt", "maj", "sgt", "rev", "hon", "jan", "feb", "mar", "apr", "jun", "jul",
    "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Tokenizes one caption exactly as pycocoevalcap's `PTBTokenizer.tokenize` does and
/// returns the space-joined, punctuation-filtered, lower-cased text.
pub fn tokenize(caption: &str) -> String {
    let tokens = ptb_tokens(caption);
    let kept: Vec<String> = tokens
        .into_iter()
        .filter(|t| !PUNCTUATIONS.contains(&t.as_str()))
        .collect();
    kept.join(" ")
}

/// The tokens PTBTokenizer prints (lower-cased), before the punctuation filter.
pub fn ptb_tokens(caption: &str) -> Vec<String> {
    let normalized = normalize(caption);
    let chunks: Vec<&str> = normalized.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chunks.len() {
        // `5 1/2`: a number followed by a fraction is one token with a no-break space.
        if i + 1 < chunks.len() && is_integer(chunks[i]) && is_fraction(chunks[i + 1]) {
            out.push(format!("{}\u{a0}{}", chunks[i], chunks[i + 1]));
            i += 2;
            continue;
        }
        tokenize_chunk(chunks[i], &mut out);
        i += 1;
    }
    out.into_iter().map(|t| t.to_lowercase()).collect()
}

/// Unicode punctuation as the PTB lexer normalises it.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2019}' | '\u{2018}' | '\u{201a}' | '\u{201b}' => out.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' => out.push('"'),
            '\u{2014}' | '\u{2013}' => out.push_str(" -- "),
            '\u{2026}' => out.push_str(" ... "),
            '\u{20ac}' => out.push('$'),
            '\u{a3}' => out.push('#'),
            '\u{a0}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

fn is_integer(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

fn is_fraction(s: &str) -> bool {
    match s.split_once('/') {
        Some((a, b)) => is_integer(a) && is_integer(b),
        None => false,
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits one whitespace-free chunk into PTB tokens.
fn tokenize_chunk(chunk: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = chunk.chars().collect();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        let c = chars[i];
        // A word: letters/digits joined by single internal `-`, `.`, `/`, `'`, `@`, and by
        // `,` or `:` between digits.
        let starts_number = (c == '.' || c == '-')
            && i + 1 < n
            && chars[i + 1].is_ascii_digit()
            && (i == 0 || !is_word_char(chars[i - 1]));
        let starts_tagged = (c == '#' || c == '@') && i + 1 < n && is_word_char(chars[i + 1]);
        let starts_quote_number = c == '\'' && i + 1 < n && chars[i + 1].is_ascii_digit();
        if is_word_char(c) || starts_number || starts_tagged || starts_quote_number {
            let start = i;
            i += 1;
            while i < n {
                let d = chars[i];
                if is_word_char(d) {
                    i += 1;
                    continue;
                }
                let next_word = i + 1 < n && is_word_char(chars[i + 1]);
                let prev = chars[i - 1];
                let joins = match d {
                    '-' | '/' | '.' | '@' => next_word && is_word_char(prev),
                    ',' | ':' => {
                        prev.is_ascii_digit() && i + 1 < n && chars[i + 1].is_ascii_digit()
                    }
                    '\'' => next_word && prev.is_alphabetic(),
                    _ => false,
                };
                if joins {
                    i += 1;
                } else {
                    break;
                }
            }
            let mut word: String = chars[start..i].iter().collect();
            // A final period: abbreviations keep it.
            if i < n
                && chars[i] == '.'
                && !(i + 1 < n && chars[i + 1] == '.')
                && is_abbreviation(&word)
            {
                word.push('.');
                i += 1;
            }
            push_word(&word, out);
            continue;
        }
        // Symbols.
        match c {
            '(' => out.push("-LRB-".into()),
            ')' => out.push("-RRB-".into()),
            '[' => out.push("-LSB-".into()),
            ']' => out.push("-RSB-".into()),
            '{' => out.push("-LCB-".into()),
            '}' => out.push("-RCB-".into()),
            '"' => out.push("''".into()),
            '`' => out.push("`".into()),
            '\'' => {
                // A standalone clitic such as `'s`.
                let rest: String = chars[i + 1..].iter().collect();
                let lower = rest.to_lowercase();
                if ["s", "re", "ve", "ll", "d", "m"].contains(&lower.as_str()) {
                    out.push(format!("'{rest}"));
                    return;
                }
                out.push("'".into());
            }
            '!' | '?' => {
                let start = i;
                while i + 1 < n && (chars[i + 1] == '!' || chars[i + 1] == '?') {
                    i += 1;
                }
                out.push(chars[start..=i].iter().collect());
            }
            '.' => {
                let start = i;
                while i + 1 < n && chars[i + 1] == '.' {
                    i += 1;
                }
                out.push(if i > start { "...".into() } else { ".".into() });
            }
            '-' => {
                let start = i;
                while i + 1 < n && chars[i + 1] == '-' {
                    i += 1;
                }
                out.push(if i > start { "--".into() } else { "-".into() });
            }
            '<' => {
                // `<tag>` stays whole.
                let mut j = i + 1;
                while j < n && chars[j].is_alphanumeric() {
                    j += 1;
                }
                if j > i + 1 && j < n && chars[j] == '>' {
                    out.push(chars[i..=j].iter().collect());
                    i = j;
                } else {
                    out.push("<".into());
                }
            }
            _ => out.push(c.to_string()),
        }
        i += 1;
    }
}

/// Whether `word` (without its final period) keeps a following period.
fn is_abbreviation(word: &str) -> bool {
    let lower = word.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    if chars.len() == 1 && chars[0].is_alphabetic() {
        return true;
    }
    // `e.g`, `u.s`, `i.e`, `u.s.a`: single letters separated by periods.
    if chars.len() >= 3
        && chars.iter().enumerate().all(|(k, &c)| {
            if k % 2 == 0 {
                c.is_alphabetic()
            } else {
                c == '.'
            }
        })
        && chars.len() % 2 == 1
    {
        return true;
    }
    ABBREVIATIONS.contains(&lower.as_str())
}

/// Splits clitics and special words off one word token.
fn push_word(word: &str, out: &mut Vec<String>) {
    let lower = word.to_lowercase();
    // Multi-word forms the PTB lexer splits.
    for (whole, cut) in [
        ("cannot", 3),
        ("gonna", 3),
        ("gotta", 3),
        ("wanna", 3),
        ("lemme", 3),
        ("gimme", 3),
    ] {
        if lower == whole {
            let (a, b) = split_chars(word, cut);
            out.push(a);
            out.push(b);
            return;
        }
    }
    // A decimal number glued to a unit: `3.5km` → `3.5 km`.
    if let Some(split) = decimal_prefix(word) {
        let (a, b) = split_chars(word, split);
        out.push(a);
        push_word(&b, out);
        return;
    }
    let nchars = lower.chars().count();
    if nchars > 3 && lower.ends_with("n't") {
        let (a, b) = split_chars(word, nchars - 3);
        if a.chars().all(char::is_alphabetic) {
            out.push(a);
            out.push(b);
            return;
        }
    }
    if let Some(pos) = lower.rfind('\'') {
        let suffix = &lower[pos + 1..];
        if pos > 0 && ["s", "re", "ve", "ll", "d", "m"].contains(&suffix) {
            out.push(word[..pos].to_string());
            out.push(word[pos..].to_string());
            return;
        }
    }
    out.push(word.to_string());
}

/// Splits a string after `k` characters.
fn split_chars(s: &str, k: usize) -> (String, String) {
    let idx = s.char_indices().nth(k).map(|(i, _)| i).unwrap_or(s.len());
    (s[..idx].to_string(), s[idx..].to_string())
}

/// For `digits.digits` followed by a letter, the character count of the number.
fn decimal_prefix(word: &str) -> Option<usize> {
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
    }
    if i == 0 || i >= chars.len() || chars[i] != '.' {
        return None;
    }
    i += 1;
    let frac_start = i;
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
    }
    if i > frac_start && i < chars.len() && chars[i].is_alphabetic() {
        Some(i)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_observed_with_the_real_jar() {
        let cases = [
            (
                "Can't stop, won't stop; don't.",
                "ca n't stop wo n't stop do n't",
            ),
            (
                "It's the volcano's flank (east) [a] {b}.",
                "it 's the volcano 's flank -lrb- east -rrb- -lsb- a -rsb- -lcb- b -rcb-",
            ),
            ("\"quoted\" 'single' `tick`", "quoted single tick"),
            (
                "wave-like low-coherence 2019-2020 5-10 1,000 3.5 .5 mm/yr",
                "wave-like low-coherence 2019-2020 5-10 1,000 3.5 .5 mm/yr",
            ),
            (
                "e.g. u.s. etc. mr. approx. Mr. Dr. St. vs. i.e.",
                "e.g. u.s. etc. mr. approx mr. dr. st. vs. i.e.",
            ),
            ("ends with etc.", "ends with etc."),
            (
                "12% $5 x=y a+b >gt @home #tag & <tag> a<b",
                "12 % $ 5 x = y a + b > gt @home #tag & <tag> a < b",
            ),
            ("wow!!! what?? hmm?! ok...", "wow !!! what ?? hmm ?! ok"),
            (
                "it\u{2019}s \u{201c}quoted\u{201d} a\u{2014}b a\u{2013}b",
                "it 's quoted a b a b",
            ),
            ("5 1/2 inches", "5\u{a0}1/2 inches"),
            (
                "colour cannot gonna gotta wanna",
                "colour can not gon na got ta wan na",
            ),
            ("volcanoes' flank", "volcanoes flank"),
            (
                "a,b a;b a:b 10:30 a/b a-b a--b -5 -word word- a.b ab.cd",
                "a b a b a b 10:30 a/b a-b a b -5 word word a.b ab.cd",
            ),
            ("...", ""),
            ("", ""),
            ("  tab\there  ", "tab here"),
            (
                "The InSAR shows 2 fringes.Next sentence",
                "the insar shows 2 fringes.next sentence",
            ),
            ("It is 3.5km wide...and more", "it is 3.5 km wide and more"),
            (
                "C'mon I'd we'll they're I'm you've",
                "c'mon i 'd we 'll they 're i 'm you 've",
            ),
            ("a*b a_b a~b a^b a|b", "a * b a_b a ~ b a ^ b a | b"),
            ("a's b'S CAN'T", "a 's b 's ca n't"),
            (
                "3km 2nd 10th s1 abc123 1e5 3.5.6 3x 5cm/yr 10-km",
                "3km 2nd 10th s1 abc123 1e5 3.5.6 3x 5cm/yr 10-km",
            ),
            ("'s 're 'hi", "'s 're hi"),
            ("?!? !? .?", "?!? !?"),
            ("1. 2) a) (i)", "1 2 -rrb- a -rrb- -lrb- i -rrb-"),
            ("I.e. E.g. e.g., Etc.,", "i.e. e.g. e.g. etc."),
            ("10:30:20 1:a", "10:30:20 1 a"),
            ("A. B. Sill. N.", "a. b. sill n."),
        ];
        for (input, expected) in cases {
            assert_eq!(tokenize(input), expected, "input {input:?}");
        }
    }
}
