//! JSON parsing whose errors name the failing field (`label[0]: unknown label …`,
//! `missing field `caption``) and the line/column, for every file format of the suite.

use serde::de::DeserializeOwned;

/// Parses `bytes` as one JSON value of type `T` (trailing non-whitespace is an error).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        a: Vec<u8>,
        b: String,
    }

    #[test]
    fn errors_carry_the_field_path() {
        assert!(parse_json::<T>(br#"{"a": [1, 2], "b": "x"}"#).is_ok());
        let e = parse_json::<T>(br#"{"a": [1, 300], "b": "x"}"#).unwrap_err();
        assert!(e.starts_with("field `a[1]`"), "{e}");
        let e = parse_json::<T>(br#"{"a": []}"#).unwrap_err();
        assert!(e.starts_with("missing field `b`"), "{e}");
        assert!(parse_json::<T>(br#"{"a": [], "b": ""} x"#).is_err());
    }
}
