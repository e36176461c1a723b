//! The parser: a script to lists of and-or lists of pipelines of simple commands.
//!
//! The whole script is parsed before anything runs, so a construct outside the subset
//! (compound commands, command substitution, background jobs, here-documents, ...) is refused
//! with [`Error::Unsupported`] and nothing half-runs.

use std::fmt;

/// A script: and-or lists run one after the other (`;` or newline between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script(pub Vec<AndOr>);

/// `pipeline [&& pipeline | || pipeline]...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AndOr {
    pub first: Pipeline,
    pub rest: Vec<(Connector, Pipeline)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    And,
    Or,
}

/// `[!] command [| command]...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub negated: bool,
    pub commands: Vec<Simple>,
}

/// `[NAME=value]... [word]... ` with redirections anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Simple {
    pub assigns: Vec<Assign>,
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    pub name: Vec<u8>,
    pub value: Word,
}

/// `[fd]op target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub fd: i32,
    pub op: RedirOp,
    pub target: Word,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `<`
    Read,
    /// `>` and `>|`
    Write,
    /// `>>`
    Append,
    /// `<&` and `>&`: the target is a descriptor number or `-`.
    Dup,
}

/// A word: the pieces it is made of, before expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word(pub Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text; quoted text is neither split into fields nor used as a glob pattern.
    Lit { text: Vec<u8>, quoted: bool },
    /// A leading `~` (alone or before `/`): $HOME.
    Home,
    /// `$NAME`, `${NAME}`, `$1`, `$@`, ... with an optional `${NAME:-word}`-style alternative.
    Param {
        param: Param,
        quoted: bool,
        alt: Option<Alt>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Name(Vec<u8>),
    /// `$0`, `$1`, ... (`${10}` too).
    Positional(usize),
    /// `$@`
    At,
    /// `$*`
    Star,
    /// `$#`
    Count,
    /// `$?`
    Status,
    /// `$$`
    Pid,
}

/// `${NAME-word}` (`Default`), `${NAME+word}` (`Replace`); with `:` a set but empty value
/// counts as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alt {
    pub op: AltOp,
    pub colon: bool,
    pub word: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AltOp {
    Default,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Syntax(String),
    Unsupported(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(what) => write!(f, "syntax error: {what}"),
            Error::Unsupported(what) => write!(f, "unsupported syntax: {what}"),
        }
    }
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error::Unsupported(what.to_string()))
}

/// Words that start compound commands; none is supported yet.
const RESERVED: &[&[u8]] = &[
    b"if", b"then", b"else", b"elif", b"fi", b"do", b"done", b"case", b"esac", b"while", b"until",
    b"for", b"in", b"{", b"}", b"!",
];

pub fn parse(script: &[u8]) -> Result<Script, Error> {
    if script.contains(&0) {
        return Err(Error::Syntax("the script contains a NUL byte".into()));
    }
    Parser { s: script, i: 0 }.script()
}

impl Word {
    /// The text of a word that is one unquoted literal (`export`, `if`).
    pub fn plain(&self) -> Option<&[u8]> {
        match self.0.as_slice() {
            [Part::Lit {
                text,
                quoted: false,
            }] => Some(text),
            _ => None,
        }
    }

    /// `NAME=value` as (NAME, value), for a word whose `NAME=` is unquoted.
    pub fn assignment(&self) -> Option<(Vec<u8>, Word)> {
        let Some(Part::Lit {
            text,
            quoted: false,
        }) = self.0.first()
        else {
            return None;
        };
        let eq = text.iter().position(|&b| b == b'=')?;
        if !is_name(&text[..eq]) {
            return None;
        }
        let mut value = Vec::new();
        if eq + 1 < text.len() {
            value.push(Part::Lit {
                text: text[eq + 1..].to_vec(),
                quoted: false,
            });
        }
        value.extend(self.0[1..].iter().cloned());
        Some((text[..eq].to_vec(), with_tilde(Word(value))))
    }
}

/// A valid variable name.
pub fn is_name(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Turns a leading unquoted `~` or `~/` into [`Part::Home`]. (`~user` stays as it is.)
fn with_tilde(mut word: Word) -> Word {
    let alone = word.0.len() == 1;
    if let Some(Part::Lit {
        text,
        quoted: false,
    }) = word.0.first_mut()
    {
        if (text == b"~" && alone) || text.starts_with(b"~/") {
            text.remove(0);
            if text.is_empty() {
                word.0[0] = Part::Home;
            } else {
                word.0.insert(0, Part::Home);
            }
        }
    }
    word
}

/// Characters that end an unquoted word.
fn is_meta(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')'
    )
}

/// Builds a word's parts, merging neighbouring literals of the same kind.
#[derive(Default)]
struct Parts(Vec<Part>);

impl Parts {
    fn lit(&mut self, bytes: &[u8], quoted: bool) {
        if let Some(Part::Lit { text, quoted: q }) = self.0.last_mut() {
            if *q == quoted {
                text.extend_from_slice(bytes);
                return;
            }
        }
        self.0.push(Part::Lit {
            text: bytes.to_vec(),
            quoted,
        });
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<u8> {
        self.s.get(self.i + k).copied()
    }

    fn rest(&self) -> &[u8] {
        &self.s[self.i..]
    }

    /// Skips blanks, line continuations and a comment (up to, not over, its newline).
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.i += 1,
                Some(b'\\') if self.peek_at(1) == Some(b'\n') => self.i += 2,
                Some(b'#') => {
                    while !matches!(self.peek(), None | Some(b'\n')) {
                        self.i += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn skip_newlines(&mut self) {
        loop {
            self.skip_blanks();
            if self.peek() != Some(b'\n') {
                return;
            }
            self.i += 1;
        }
    }

    fn script(&mut self) -> Result<Script, Error> {
        let mut items = Vec::new();
        loop {
            self.skip_newlines();
            if self.peek().is_none() {
                return Ok(Script(items));
            }
            items.push(self.and_or()?);
            self.skip_blanks();
            match self.peek() {
                None => return Ok(Script(items)),
                Some(b'\n') => self.i += 1,
                Some(b';') if self.peek_at(1) == Some(b';') => return unsupported("`;;` (case)"),
                Some(b';') => self.i += 1,
                Some(b'&') => return unsupported("`&` (background jobs, `&>`)"),
                Some(c) => return Err(Error::Syntax(format!("unexpected `{}`", c as char))),
            }
        }
    }

    fn and_or(&mut self) -> Result<AndOr, Error> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            self.skip_blanks();
            let connector = if self.rest().starts_with(b"&&") {
                Connector::And
            } else if self.rest().starts_with(b"||") {
                Connector::Or
            } else {
                return Ok(AndOr { first, rest });
            };
            self.i += 2;
            self.skip_newlines();
            rest.push((connector, self.pipeline()?));
        }
    }

    fn pipeline(&mut self) -> Result<Pipeline, Error> {
        self.skip_blanks();
        let negated = self.peek() == Some(b'!') && matches!(self.peek_at(1), Some(b' ' | b'\t'));
        if negated {
            self.i += 1;
        }
        let mut commands = vec![self.simple()?];
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'|') && self.peek_at(1) != Some(b'|') {
                self.i += 1;
                self.skip_newlines();
                commands.push(self.simple()?);
            } else {
                return Ok(Pipeline { negated, commands });
            }
        }
    }

    fn simple(&mut self) -> Result<Simple, Error> {
        let mut cmd = Simple::default();
        loop {
            self.skip_blanks();
            let Some(c) = self.peek() else { break };
            match c {
                b'\n' | b';' | b'&' | b'|' | b')' => break,
                b'(' => return unsupported("`(` (subshells and functions)"),
                b'<' | b'>' => {
                    let redirect = self.redirect(None)?;
                    cmd.redirects.push(redirect);
                }
                b'0'..=b'9' if matches!(self.peek_at(1), Some(b'<' | b'>')) => {
                    self.i += 1;
                    let redirect = self.redirect(Some(i32::from(c - b'0')))?;
                    cmd.redirects.push(redirect);
                }
                _ => {
                    let word = self.word(false)?;
                    if cmd.words.is_empty() {
                        if let Some((name, value)) = word.assignment() {
                            cmd.assigns.push(Assign { name, value });
                            continue;
                        }
                        if let Some(w) = word.plain().filter(|w| RESERVED.contains(w)) {
                            if cmd.assigns.is_empty() {
                                return unsupported(&format!(
                                    "`{}` (compound commands)",
                                    String::from_utf8_lossy(w)
                                ));
                            }
                        }
                    }
                    cmd.words.push(with_tilde(word));
                }
            }
        }
        if cmd == Simple::default() {
            return Err(Error::Syntax(match self.peek() {
                None => "a command is missing at the end".into(),
                Some(b'\n') => "a command is missing before a newline".into(),
                Some(c) => format!("a command is missing before `{}`", c as char),
            }));
        }
        Ok(cmd)
    }

    fn redirect(&mut self, fd: Option<i32>) -> Result<Redirect, Error> {
        let rest = self.rest();
        let (op, len, default_fd) = if rest.starts_with(b"<<") {
            return unsupported("`<<` (here-documents)");
        } else if rest.starts_with(b"<>") {
            return unsupported("`<>`");
        } else if rest.starts_with(b"<&") {
            (RedirOp::Dup, 2, 0)
        } else if rest.starts_with(b"<") {
            (RedirOp::Read, 1, 0)
        } else if rest.starts_with(b">>") {
            (RedirOp::Append, 2, 1)
        } else if rest.starts_with(b">&") {
            (RedirOp::Dup, 2, 1)
        } else if rest.starts_with(b">|") {
            (RedirOp::Write, 2, 1)
        } else {
            (RedirOp::Write, 1, 1)
        };
        let op_text = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.i += len;
        self.skip_blanks();
        if self.peek().is_none_or(is_meta) {
            return Err(Error::Syntax(format!("`{op_text}` needs a file")));
        }
        let target = with_tilde(self.word(false)?);
        Ok(Redirect {
            fd: fd.unwrap_or(default_fd),
            op,
            target,
        })
    }

    /// Reads a word up to an unquoted metacharacter, or (`in_brace`, the word of
    /// `${NAME:-word}`) up to the closing `}`.
    fn word(&mut self, in_brace: bool) -> Result<Word, Error> {
        let mut parts = Parts::default();
        loop {
            let Some(c) = self.peek() else {
                if in_brace {
                    return Err(Error::Syntax("missing `}`".into()));
                }
                break;
            };
            if (in_brace && c == b'}') || (!in_brace && is_meta(c)) {
                break;
            }
            match c {
                b'\'' => {
                    let start = self.i + 1;
                    let Some(len) = self.s[start..].iter().position(|&b| b == b'\'') else {
                        return Err(Error::Syntax("unterminated '".into()));
                    };
                    parts.lit(&self.s[start..start + len], true);
                    self.i = start + len + 1;
                }
                b'"' => {
                    self.i += 1;
                    self.double_quoted(&mut parts)?;
                }
                b'\\' => match self.peek_at(1) {
                    Some(b'\n') => self.i += 2,
                    Some(next) => {
                        parts.lit(&[next], true);
                        self.i += 2;
                    }
                    None => {
                        parts.lit(b"\\", false);
                        self.i += 1;
                    }
                },
                b'$' => self.dollar(&mut parts, false)?,
                b'`' => return unsupported("backquotes (command substitution)"),
                _ => {
                    parts.lit(&[c], false);
                    self.i += 1;
                }
            }
        }
        Ok(Word(parts.0))
    }

    /// The inside of "...", after the opening quote.
    fn double_quoted(&mut self, parts: &mut Parts) -> Result<(), Error> {
        let before = parts.0.len();
        let mut added = false;
        loop {
            let Some(c) = self.peek() else {
                return Err(Error::Syntax("unterminated \"".into()));
            };
            match c {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => match self.peek_at(1) {
                    Some(b'\n') => self.i += 2,
                    Some(next @ (b'$' | b'`' | b'"' | b'\\')) => {
                        parts.lit(&[next], true);
                        added = true;
                        self.i += 2;
                    }
                    _ => {
                        parts.lit(b"\\", true);
                        added = true;
                        self.i += 1;
                    }
                },
                b'$' => {
                    self.dollar(parts, true)?;
                    added = true;
                }
                b'`' => return unsupported("backquotes (command substitution)"),
                _ => {
                    parts.lit(&[c], true);
                    added = true;
                    self.i += 1;
                }
            }
        }
        // `""` is an (empty) word of its own; `"$@"` with no parameters is no word at all.
        if !added && parts.0.len() == before {
            parts.lit(b"", true);
        }
        Ok(())
    }

    /// `$...`, at the `$`.
    fn dollar(&mut self, parts: &mut Parts, quoted: bool) -> Result<(), Error> {
        let param = match self.peek_at(1) {
            Some(b'(') if self.peek_at(2) == Some(b'(') => {
                return unsupported("`$((...))` (arithmetic)")
            }
            Some(b'(') => return unsupported("`$(...)` (command substitution)"),
            Some(b'{') => {
                self.i += 2;
                return self.braced(parts, quoted);
            }
            Some(c) if c == b'_' || c.is_ascii_alphabetic() => {
                self.i += 1;
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|b| b == b'_' || b.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                parts.0.push(Part::Param {
                    param: Param::Name(self.s[start..self.i].to_vec()),
                    quoted,
                    alt: None,
                });
                return Ok(());
            }
            Some(c @ b'0'..=b'9') => Param::Positional(usize::from(c - b'0')),
            Some(b'@') => Param::At,
            Some(b'*') => Param::Star,
            Some(b'#') => Param::Count,
            Some(b'?') => Param::Status,
            Some(b'$') => Param::Pid,
            Some(c @ (b'!' | b'-')) => return unsupported(&format!("`${}`", c as char)),
            _ => {
                // A `$` that starts no expansion is itself.
                parts.lit(b"$", quoted);
                self.i += 1;
                return Ok(());
            }
        };
        self.i += 2;
        parts.0.push(Part::Param {
            param,
            quoted,
            alt: None,
        });
        Ok(())
    }

    /// `${...}`, after the `${`.
    fn braced(&mut self, parts: &mut Parts, quoted: bool) -> Result<(), Error> {
        if self.peek() == Some(b'#') && self.peek_at(1) != Some(b'}') {
            return unsupported("`${#...}` (length)");
        }
        let start = self.i;
        let param = match self.peek() {
            Some(c) if c == b'_' || c.is_ascii_alphabetic() => {
                while self
                    .peek()
                    .is_some_and(|b| b == b'_' || b.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                Param::Name(self.s[start..self.i].to_vec())
            }
            Some(b'0'..=b'9') => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.i += 1;
                }
                let digits = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                Param::Positional(
                    digits
                        .parse()
                        .map_err(|_| Error::Syntax(format!("bad parameter ${{{digits}}}")))?,
                )
            }
            Some(c @ (b'@' | b'*' | b'#' | b'?' | b'$')) => {
                self.i += 1;
                match c {
                    b'@' => Param::At,
                    b'*' => Param::Star,
                    b'#' => Param::Count,
                    b'?' => Param::Status,
                    _ => Param::Pid,
                }
            }
            _ => return Err(Error::Syntax("bad substitution `${`".into())),
        };
        let colon = self.peek() == Some(b':');
        let op_at = if colon { 1 } else { 0 };
        let op = match self.peek_at(op_at) {
            Some(b'}') if !colon => {
                self.i += 1;
                parts.0.push(Part::Param {
                    param,
                    quoted,
                    alt: None,
                });
                return Ok(());
            }
            Some(b'-') => AltOp::Default,
            Some(b'+') => AltOp::Replace,
            None => return Err(Error::Syntax("missing `}`".into())),
            Some(_) => {
                let end = self.s[self.i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map_or(self.s.len(), |p| self.i + p + 1);
                return unsupported(&format!(
                    "`${{{}` (only ${{NAME}}, ${{NAME-word}}, ${{NAME:-word}}, ${{NAME+word}} and ${{NAME:+word}})",
                    String::from_utf8_lossy(&self.s[start..end])
                ));
            }
        };
        self.i += op_at + 1;
        let word = self.word(true)?;
        self.i += 1; // the `}`
        parts.0.push(Part::Param {
            param,
            quoted,
            alt: Some(Alt {
                op,
                colon,
                word: word.0,
            }),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit {
            text: s.as_bytes().to_vec(),
            quoted: false,
        }
    }

    fn quoted(s: &str) -> Part {
        Part::Lit {
            text: s.as_bytes().to_vec(),
            quoted: true,
        }
    }

    fn var(name: &str, quoted: bool) -> Part {
        Part::Param {
            param: Param::Name(name.as_bytes().to_vec()),
            quoted,
            alt: None,
        }
    }

    fn one(script: &str) -> Simple {
        let Script(items) = parse(script.as_bytes()).unwrap();
        assert_eq!(items.len(), 1, "{script}");
        assert!(items[0].rest.is_empty());
        assert_eq!(items[0].first.commands.len(), 1);
        items[0].first.commands[0].clone()
    }

    #[test]
    fn sh_words_quotes_and_escapes() {
        let cmd = one(r#"echo 'a b'"c $X d"\ e\$ "" '' x"y"z"#);
        assert_eq!(
            cmd.words,
            vec![
                Word(vec![lit("echo")]),
                Word(vec![
                    quoted("a bc "),
                    var("X", true),
                    quoted(" d "),
                    lit("e"),
                    quoted("$")
                ]),
                Word(vec![quoted("")]),
                Word(vec![quoted("")]),
                Word(vec![lit("x"), quoted("y"), lit("z")]),
            ]
        );
    }

    #[test]
    fn sh_parameters() {
        let cmd = one(r#"x $1$# "$@" ${HOME}/a ${10} $ "$" $?$$"#);
        let p = |param, quoted| Part::Param {
            param,
            quoted,
            alt: None,
        };
        assert_eq!(
            cmd.words[1..],
            [
                Word(vec![p(Param::Positional(1), false), p(Param::Count, false)]),
                Word(vec![p(Param::At, true)]),
                Word(vec![var("HOME", false), lit("/a")]),
                Word(vec![p(Param::Positional(10), false)]),
                Word(vec![lit("$")]),
                Word(vec![quoted("$")]),
                Word(vec![p(Param::Status, false), p(Param::Pid, false)]),
            ]
        );
        let cmd = one("x ${A:-a b} ${B+$C}");
        assert_eq!(
            cmd.words[1],
            Word(vec![Part::Param {
                param: Param::Name(b"A".to_vec()),
                quoted: false,
                alt: Some(Alt {
                    op: AltOp::Default,
                    colon: true,
                    word: vec![lit("a b")]
                }),
            }])
        );
        assert_eq!(
            cmd.words[2],
            Word(vec![Part::Param {
                param: Param::Name(b"B".to_vec()),
                quoted: false,
                alt: Some(Alt {
                    op: AltOp::Replace,
                    colon: false,
                    word: vec![var("C", false)]
                }),
            }])
        );
    }

    #[test]
    fn sh_assignments_redirects_and_tilde() {
        let cmd = one("A=1 B=~/x 2>&1 node ~ C=2 >>log <in 1>&2 >|f");
        assert_eq!(
            cmd.assigns,
            vec![
                Assign {
                    name: b"A".to_vec(),
                    value: Word(vec![lit("1")])
                },
                Assign {
                    name: b"B".to_vec(),
                    value: Word(vec![Part::Home, lit("/x")])
                },
            ]
        );
        assert_eq!(
            cmd.words,
            vec![
                Word(vec![lit("node")]),
                Word(vec![Part::Home]),
                Word(vec![lit("C=2")])
            ]
        );
        let r = |fd, op, t: &str| Redirect {
            fd,
            op,
            target: Word(vec![lit(t)]),
        };
        assert_eq!(
            cmd.redirects,
            vec![
                r(2, RedirOp::Dup, "1"),
                r(1, RedirOp::Append, "log"),
                r(0, RedirOp::Read, "in"),
                r(1, RedirOp::Dup, "2"),
                r(1, RedirOp::Write, "f"),
            ]
        );
        // Quoted `=` or `~` are plain text.
        let cmd = one("'A'=1 \\~ x");
        assert!(cmd.assigns.is_empty());
        assert_eq!(cmd.words[1], Word(vec![quoted("~")]));
    }

    #[test]
    fn sh_lists_and_pipelines() {
        let Script(items) =
            parse(b"a && b || c; d | e |\n f\n\n# comment\n! g # trailing\n").unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].rest.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![Connector::And, Connector::Or]
        );
        assert_eq!(items[1].first.commands.len(), 3);
        assert!(items[2].first.negated);
        assert_eq!(items[2].first.commands[0].words, vec![Word(vec![lit("g")])]);
        assert_eq!(parse(b"").unwrap(), Script(vec![]));
        assert_eq!(parse(b" # only a comment").unwrap(), Script(vec![]));
    }

    #[test]
    fn sh_unsupported_constructs_are_refused() {
        for script in [
            "if true; then x; fi",
            "for a in b; do x; done",
            "echo $(pwd)",
            "echo `pwd`",
            "echo \"`pwd`\"",
            "echo $((1 + 2))",
            "sleep 1 &",
            "cat <<EOF",
            "(cd x)",
            "f() { x; }",
            "echo ${#X}",
            "echo ${X:=y}",
            "echo ${X%.js}",
            "x &> log",
            "echo $!",
            "x;; y",
        ] {
            match parse(script.as_bytes()) {
                Err(Error::Unsupported(_)) => {}
                other => panic!("{script}: {other:?}"),
            }
        }
    }

    #[test]
    fn sh_syntax_errors() {
        for script in [
            "echo 'open",
            "echo \"open",
            "&& x",
            "x &&",
            "x | | y",
            "; x",
            "x >",
            "echo ${X:-open",
            "echo ${}",
            "a ) b",
            "a\0b",
        ] {
            match parse(script.as_bytes()) {
                Err(Error::Syntax(_)) => {}
                other => panic!("{script}: {other:?}"),
            }
        }
        assert_eq!(
            parse(b"x &&").unwrap_err().to_string(),
            "syntax error: a command is missing at the end"
        );
    }

    #[test]
    fn sh_reserved_words_only_count_as_the_first_word() {
        let cmd = one("echo if then fi");
        assert_eq!(cmd.words.len(), 4);
        let cmd = one("A=1 if");
        assert_eq!(cmd.words, vec![Word(vec![lit("if")])]);
        let cmd = one("'if'");
        assert_eq!(cmd.words, vec![Word(vec![quoted("if")])]);
    }
}
