//! Variables and word expansion: parameters, field splitting of unquoted expansions, globbing.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};

use super::parse::{AltOp, Param, Part, Word};

/// Bytes that separate fields in unquoted expansions (IFS is always its default).
fn is_ifs(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// `None`: exported (`export NAME`) but not set yet.
    pub value: Option<Vec<u8>>,
    pub exported: bool,
}

/// The shell's parameters: variables, `$0`, the positional parameters, `$?`.
#[derive(Debug, Clone)]
pub struct Vars {
    pub map: BTreeMap<Vec<u8>, Var>,
    pub arg0: Vec<u8>,
    pub params: Vec<Vec<u8>>,
    pub status: i32,
}

impl Vars {
    /// Starts from an environment of `NAME=value` entries, all exported.
    pub fn new(arg0: Vec<u8>, params: Vec<Vec<u8>>, env: Vec<Vec<u8>>) -> Self {
        let map = env
            .into_iter()
            .filter_map(|entry| {
                let eq = entry.iter().position(|&b| b == b'=')?;
                Some((
                    entry[..eq].to_vec(),
                    Var {
                        value: Some(entry[eq + 1..].to_vec()),
                        exported: true,
                    },
                ))
            })
            .collect();
        Vars {
            map,
            arg0,
            params,
            status: 0,
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.map.get(name).and_then(|v| v.value.as_deref())
    }

    /// Sets a variable, keeping whether it is exported.
    pub fn set(&mut self, name: &[u8], value: Vec<u8>) {
        self.map
            .entry(name.to_vec())
            .or_insert(Var {
                value: None,
                exported: false,
            })
            .value = Some(value);
    }

    pub fn export(&mut self, name: &[u8]) {
        self.map
            .entry(name.to_vec())
            .or_insert(Var {
                value: None,
                exported: true,
            })
            .exported = true;
    }

    pub fn unset(&mut self, name: &[u8]) {
        self.map.remove(name);
    }

    /// The environment of a command: exported variables, then `assigns` over them.
    pub fn env(&self, assigns: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut env: BTreeMap<&[u8], &[u8]> = self
            .map
            .iter()
            .filter(|(_, v)| v.exported)
            .filter_map(|(k, v)| Some((k.as_slice(), v.value.as_deref()?)))
            .collect();
        for (name, value) in assigns {
            env.insert(name, value);
        }
        env.into_iter()
            .map(|(k, v)| [k, b"=", v].concat())
            .collect()
    }

    /// A parameter's value; `None` when unset. `$@` and `$*` are joined with spaces.
    fn param(&self, param: &Param) -> Option<Vec<u8>> {
        match param {
            Param::Name(name) => self.get(name).map(<[u8]>::to_vec),
            Param::Positional(0) => Some(self.arg0.clone()),
            Param::Positional(n) => self.params.get(n - 1).cloned(),
            Param::At | Param::Star => Some(self.params.join(&b' ')),
            Param::Count => Some(self.params.len().to_string().into_bytes()),
            Param::Status => Some(self.status.to_string().into_bytes()),
            Param::Pid => Some(crate::sys::getpid().to_string().into_bytes()),
        }
    }

    /// Whether `${param-...}` (`colon`: `${param:-...}`) takes the parameter's value.
    fn is_set(&self, param: &Param, colon: bool) -> bool {
        if matches!(param, Param::At | Param::Star) {
            return !self.params.is_empty();
        }
        self.param(param).is_some_and(|v| !(colon && v.is_empty()))
    }

    fn home(&self) -> Vec<u8> {
        self.get(b"HOME").unwrap_or(b"~").to_vec()
    }

    /// A word as one string: no field splitting, no globbing (assignments, redirections).
    pub fn string(&self, word: &Word) -> Vec<u8> {
        let mut out = Vec::new();
        self.string_parts(&word.0, &mut out);
        out
    }

    fn string_parts(&self, parts: &[Part], out: &mut Vec<u8>) {
        for part in parts {
            match part {
                Part::Lit { text, .. } => out.extend_from_slice(text),
                Part::Home => out.extend(self.home()),
                Part::Param { param, alt, .. } => match alt {
                    None => out.extend(self.param(param).unwrap_or_default()),
                    Some(alt) => match (alt.op, self.is_set(param, alt.colon)) {
                        (AltOp::Default, true) => out.extend(self.param(param).unwrap_or_default()),
                        (AltOp::Default, false) | (AltOp::Replace, true) => {
                            self.string_parts(&alt.word, out)
                        }
                        (AltOp::Replace, false) => {}
                    },
                },
            }
        }
    }

    /// A command's words as argv: expanded, split, globbed. After a literal `export`,
    /// `NAME=value` words are not split (as for an assignment).
    pub fn argv(&self, words: &[Word]) -> Vec<Vec<u8>> {
        let declaration = words.first().and_then(Word::plain) == Some(b"export");
        let mut argv = Vec::new();
        for (i, word) in words.iter().enumerate() {
            match word.assignment().filter(|_| declaration && i > 0) {
                Some((name, value)) => argv.push([&name[..], b"=", &self.string(&value)].concat()),
                None => argv.extend(self.fields(word)),
            }
        }
        argv
    }

    /// One word's fields.
    pub fn fields(&self, word: &Word) -> Vec<Vec<u8>> {
        let mut fields = Fields::default();
        self.field_parts(&word.0, false, &mut fields);
        fields.end();
        fields.done.iter().flat_map(|f| glob(f)).collect()
    }

    fn field_parts(&self, parts: &[Part], in_quotes: bool, fields: &mut Fields) {
        for part in parts {
            match part {
                Part::Lit { text, quoted } if *quoted || in_quotes => fields.quoted(text),
                // Unquoted text has no blanks at the top level; in `${X:-a b}` it splits.
                Part::Lit { text, .. } => fields.split(text),
                Part::Home => fields.quoted(&self.home()),
                Part::Param { param, quoted, alt } => {
                    let quoted = *quoted || in_quotes;
                    match alt {
                        None => self.field_param(param, quoted, fields),
                        Some(alt) => match (alt.op, self.is_set(param, alt.colon)) {
                            (AltOp::Default, true) => self.field_param(param, quoted, fields),
                            (AltOp::Default, false) | (AltOp::Replace, true) => {
                                self.field_parts(&alt.word, quoted, fields)
                            }
                            (AltOp::Replace, false) => {}
                        },
                    }
                }
            }
        }
    }

    fn field_param(&self, param: &Param, quoted: bool, fields: &mut Fields) {
        match param {
            // "$@": one field per parameter, the first and last joined to the text around.
            Param::At if quoted => {
                for (i, p) in self.params.iter().enumerate() {
                    if i > 0 {
                        fields.end();
                    }
                    fields.quoted(p);
                }
            }
            Param::At | Param::Star if !quoted => {
                for (i, p) in self.params.iter().enumerate() {
                    if i > 0 {
                        fields.end();
                    }
                    fields.split(p);
                }
            }
            _ => {
                let value = self.param(param).unwrap_or_default();
                if quoted {
                    fields.quoted(&value);
                } else {
                    fields.split(&value);
                }
            }
        }
    }
}

/// Fields being built: bytes with whether each was quoted (quoted bytes never glob).
#[derive(Default)]
struct Fields {
    done: Vec<Vec<(u8, bool)>>,
    current: Vec<(u8, bool)>,
    /// Whether `current` is a field even if empty (something quoted was in it).
    started: bool,
}

impl Fields {
    fn quoted(&mut self, bytes: &[u8]) {
        self.current.extend(bytes.iter().map(|&b| (b, true)));
        self.started = true;
    }

    fn split(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if is_ifs(b) {
                self.end();
            } else {
                self.current.push((b, false));
                self.started = true;
            }
        }
    }

    fn end(&mut self) {
        if self.started {
            self.done.push(std::mem::take(&mut self.current));
            self.started = false;
        }
    }
}

/// Pathname expansion of one field: the sorted matches, or the field itself when it has no
/// unquoted `*`, `?`, `[` or nothing matches.
fn glob(field: &[(u8, bool)]) -> Vec<Vec<u8>> {
    let text: Vec<u8> = field.iter().map(|&(b, _)| b).collect();
    if !field
        .iter()
        .any(|&(b, quoted)| !quoted && matches!(b, b'*' | b'?' | b'['))
    {
        return vec![text];
    }
    let mut pattern = Vec::with_capacity(field.len() * 2);
    for &(b, quoted) in field {
        if b == b'\\' || (quoted && matches!(b, b'*' | b'?' | b'[')) {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    let matches = glob_paths(&pattern);
    if matches.is_empty() {
        vec![text]
    } else {
        matches
    }
}

/// glob(3): the paths matching `pattern`, sorted; none on no match or error.
fn glob_paths(pattern: &[u8]) -> Vec<Vec<u8>> {
    let Ok(pattern) = CString::new(pattern) else {
        return Vec::new();
    };
    // SAFETY: glob_t is plain old data; all-zero (null gl_pathv) is its empty state.
    let mut found: libc::glob_t = unsafe { std::mem::zeroed() };
    // SAFETY: pattern is NUL-terminated and outlives the call; found is a valid glob_t; no
    // error callback.
    let ret = unsafe { libc::glob(pattern.as_ptr(), 0, None, &mut found) };
    let mut paths = Vec::new();
    if ret == 0 {
        for i in 0..found.gl_pathc {
            // SAFETY: after a successful glob, gl_pathv holds gl_pathc valid NUL-terminated
            // strings, alive until globfree.
            let path = unsafe { CStr::from_ptr(*found.gl_pathv.add(i)) };
            paths.push(path.to_bytes().to_vec());
        }
    }
    // SAFETY: found was zeroed and then filled by glob; globfree accepts both states.
    unsafe { libc::globfree(&mut found) };
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sh::parse::{parse, Simple};

    fn vars() -> Vars {
        let mut vars = Vars::new(
            b"sh".to_vec(),
            vec![b"a b".to_vec(), b"".to_vec(), b"c".to_vec()],
            vec![
                b"HOME=/home/node".to_vec(),
                b"X=x  y".to_vec(),
                b"E=".to_vec(),
            ],
        );
        vars.status = 3;
        vars
    }

    fn command(script: &str) -> Simple {
        parse(script.as_bytes()).unwrap().0[0].first.commands[0].clone()
    }

    fn argv(vars: &Vars, script: &str) -> Vec<String> {
        vars.argv(&command(script).words)
            .into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn sh_unquoted_expansions_split_and_quoted_ones_do_not() {
        let v = vars();
        assert_eq!(
            argv(&v, "e $X \"$X\" p$X'q'"),
            ["e", "x", "y", "x  y", "px", "yq"]
        );
        assert_eq!(argv(&v, "e $E \"$E\" $UNSET ''"), ["e", "", ""]);
        assert_eq!(
            argv(&v, "e $? $# $0 $1 ${3}"),
            ["e", "3", "3", "sh", "a", "b", "c"]
        );
    }

    #[test]
    fn sh_at_and_star() {
        let v = vars();
        assert_eq!(argv(&v, "e \"$@\""), ["e", "a b", "", "c"]);
        assert_eq!(argv(&v, "e \"<$@>\""), ["e", "<a b", "", "c>"]);
        assert_eq!(argv(&v, "e $@"), ["e", "a", "b", "c"]);
        assert_eq!(argv(&v, "e \"$*\""), ["e", "a b  c"]);
        let none = Vars::new(b"sh".to_vec(), vec![], vec![]);
        assert_eq!(argv(&none, "e \"$@\" x"), ["e", "x"]);
        assert_eq!(argv(&none, "e \"$@\"''"), ["e", ""]);
    }

    #[test]
    fn sh_alternatives() {
        let v = vars();
        assert_eq!(
            argv(
                &v,
                "e ${E:-d} ${E-d} ${U:-a b} \"${U:-a b}\" ${X:+set} ${U+set} ${E+set}"
            ),
            ["e", "d", "a", "b", "a b", "set", "set"]
        );
        assert_eq!(argv(&v, "e ${U:-$X}"), ["e", "x", "y"]);
    }

    #[test]
    fn sh_tilde_assignments_and_export_words() {
        let v = vars();
        assert_eq!(
            argv(&v, "e ~ ~/a '~' ~x"),
            ["e", "/home/node", "/home/node/a", "~", "~x"]
        );
        let cmd = command("A=$X:~/b e");
        assert_eq!(v.string(&cmd.assigns[0].value), b"x  y:~/b");
        let cmd = command("A=~/b e");
        assert_eq!(v.string(&cmd.assigns[0].value), b"/home/node/b");
        assert_eq!(argv(&v, "export A=$X B"), ["export", "A=x  y", "B"]);
        assert_eq!(argv(&v, "echo A=$X"), ["echo", "A=x", "y"]);
    }

    #[test]
    fn sh_globbing() {
        let dir = std::env::temp_dir().join(format!("nodeos-sh-glob-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["b.js", "a.js", "c.txt", ".h.js"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let d = dir.display();
        let v = vars();
        assert_eq!(
            argv(&v, &format!("e {d}/*.js {d}/?.txt")),
            [
                "e".to_string(),
                format!("{d}/a.js"),
                format!("{d}/b.js"),
                format!("{d}/c.txt")
            ]
        );
        assert_eq!(
            argv(&v, &format!("e '{d}'/*.js \"{d}/*.js\" {d}/*.none")),
            [
                "e".to_string(),
                format!("{d}/a.js"),
                format!("{d}/b.js"),
                format!("{d}/*.js"),
                format!("{d}/*.none")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sh_environment_of_a_command() {
        let mut v = Vars::new(
            b"sh".to_vec(),
            vec![],
            vec![b"A=1".to_vec(), b"B=2".to_vec()],
        );
        v.set(b"LOCAL", b"l".to_vec());
        v.set(b"A", b"10".to_vec());
        v.export(b"LATER");
        assert_eq!(v.env(&[]), vec![b"A=10".to_vec(), b"B=2".to_vec()]);
        v.set(b"LATER", b"now".to_vec());
        v.unset(b"B");
        assert_eq!(
            v.env(&[
                (b"C".to_vec(), b"3".to_vec()),
                (b"A".to_vec(), b"x".to_vec())
            ]),
            vec![b"A=x".to_vec(), b"C=3".to_vec(), b"LATER=now".to_vec()]
        );
    }
}
