//! An error and its causes on one line (`what: why: deeper why`): how a VMM process or the jail's
//! helper reports a failure to its parent, which prints it as it came, and how `serve` tells a
//! client what failed.

use std::error::Error;

/// `e` and each of its sources, joined by `: `.
pub fn one_line(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_said() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(one_line(&e), "outer: inner");
    }
}
