//! The Kubefile: sealer's build file, parsed into typed instructions.
//!
//! 1. [`parse`] splits the text into logical lines: `#` comments are dropped, a
//!    trailing `\` joins the next line (comment lines inside a continuation are
//!    skipped, as Docker does).
//! 2. Each logical line is `VERB ARGUMENTS`; the verb is matched case-insensitively
//!    and its arguments are parsed in JSON form (`["a", "b"]`) or shell form.
//! 3. The whole file is then checked: `FROM` first (only `ARG` may precede it),
//!    `LAUNCH`/`CMDS`/`CMD` once, last and exclusive, APP names unique,
//!    `KUBEVERSION` a valid range.
//! 4. `$VAR`/`${VAR}` are kept as written; the builder substitutes them with
//!    [`substitute`] once `ARG`/`ENV` values are known.
//!
//! Every error is a [`KubefileError`] printed `Kubefile:LINE:COL: what is wrong, and
//! what would be right`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// A position in the Kubefile, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Line of the instruction (its first physical line).
    pub line: usize,
    /// Column of the offending token.
    pub col: usize,
}

/// A Kubefile that does not parse or does not make sense.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct KubefileError {
    /// The Kubefile's path as the user gave it.
    pub file: String,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based.
    pub col: usize,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl KubefileError {
    /// An error at `span` of `file`.
    pub fn at(file: &str, span: Span, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line: span.line,
            col: span.col,
            message: message.into(),
        }
    }
}

/// Something legal but discouraged (deprecated `CMD`), to show the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubefileWarning {
    /// Where.
    pub span: Span,
    /// What to do instead.
    pub message: String,
}

/// A parsed Kubefile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubefile {
    /// The path as the user gave it, for messages.
    pub file: String,
    /// Instructions in order.
    pub instructions: Vec<Located>,
    /// Deprecations found while parsing.
    pub warnings: Vec<KubefileWarning>,
}

impl Kubefile {
    /// An error at `span` of this file.
    pub fn error(&self, span: Span, message: impl Into<String>) -> KubefileError {
        KubefileError::at(&self.file, span, message)
    }
}

/// An instruction, where it was written and its source text (for the build cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// Where the instruction starts; `col` is the verb's column.
    pub span: Span,
    /// The logical line as written (continuations joined), for cache keys and logs.
    pub text: String,
    /// The instruction.
    pub instruction: Instruction,
}

/// A word with the column it started at, `$VAR` not yet substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// Text as written (quotes removed).
    pub text: String,
    /// Column of its first character.
    pub col: usize,
}

/// How `RUN` was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunCommand {
    /// `RUN cmd args`: run through `sh -c`.
    Shell(String),
    /// `RUN ["prog", "arg"]`: run directly.
    Exec(Vec<String>),
}

/// Which kind of application an `APP`-like verb declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppRole {
    /// `APP`.
    App,
    /// `CNI`: the network plugin.
    Cni,
    /// `CSI`: the storage plugin.
    Csi,
}

/// Where an application's files come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppSource {
    /// `local://path`, relative to the build context.
    Local(Word),
    /// `http://` or `https://` URL.
    Remote(Word),
}

/// One Kubefile instruction, with sealer's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=P] IMAGE` (`scratch` for none).
    From {
        /// The base image.
        image: Word,
        /// `--platform`, if given.
        platform: Option<Word>,
    },
    /// `COPY SRC... DEST` (`${ARCH}` allowed in sources).
    Copy {
        /// Sources relative to the context.
        sources: Vec<Word>,
        /// Destination in the rootfs.
        dest: Word,
    },
    /// `ADD [--checksum=sha256:HEX] SRC... DEST`: like COPY; sources may also be
    /// `http://` or `https://` URLs, fetched at build time.
    Add {
        /// Sources relative to the context, or URLs.
        sources: Vec<Word>,
        /// Destination in the rootfs.
        dest: Word,
        /// `--checksum=`: the digest every URL source must have.
        checksum: Option<Word>,
    },
    /// `RUN`: runs on the build host in the image's working rootfs.
    Run(RunCommand),
    /// `ARG NAME[=DEFAULT]`.
    Arg {
        /// Name.
        name: String,
        /// Default value.
        default: Option<Word>,
    },
    /// `ENV K=V ...` or `ENV K V`.
    Env(Vec<(String, Word)>),
    /// `LABEL K=V ...`.
    Label(Vec<(String, Word)>),
    /// `MAINTAINER NAME`.
    Maintainer(String),
    /// `APP NAME SOURCE...`, `CNI NAME SOURCE...`, `CSI NAME SOURCE...`.
    App {
        /// APP, CNI or CSI.
        role: AppRole,
        /// The application's name.
        name: Word,
        /// Its files.
        sources: Vec<AppSource>,
    },
    /// `APPCMDS NAME ["cmd", ...]`: how to launch the app instead of the default.
    AppCmds {
        /// The application.
        name: Word,
        /// Commands.
        cmds: Vec<String>,
    },
    /// `APPENV NAME K=V ...`.
    AppEnv {
        /// The application.
        name: Word,
        /// Variables.
        pairs: Vec<(String, Word)>,
    },
    /// `KUBEVERSION RANGE`: Kubernetes versions the image works with.
    KubeVersion(VersionRange),
    /// `LAUNCH ["app", ...]`: apps to launch after the cluster is up.
    Launch(Vec<Word>),
    /// `CMDS ["cmd", ...]`: commands to run after the cluster is up.
    Cmds(Vec<String>),
    /// Deprecated `CMD`: like `CMDS`.
    Cmd(Vec<String>),
}

impl Instruction {
    /// The verb, upper case.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::From { .. } => "FROM",
            Self::Copy { .. } => "COPY",
            Self::Add { .. } => "ADD",
            Self::Run(_) => "RUN",
            Self::Arg { .. } => "ARG",
            Self::Env(_) => "ENV",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::App { role, .. } => match role {
                AppRole::App => "APP",
                AppRole::Cni => "CNI",
                AppRole::Csi => "CSI",
            },
            Self::AppCmds { .. } => "APPCMDS",
            Self::AppEnv { .. } => "APPENV",
            Self::KubeVersion(_) => "KUBEVERSION",
            Self::Launch(_) => "LAUNCH",
            Self::Cmds(_) => "CMDS",
            Self::Cmd(_) => "CMD",
        }
    }
}

const VERBS: &[&str] = &[
    "FROM",
    "COPY",
    "ADD",
    "RUN",
    "ARG",
    "ENV",
    "LABEL",
    "MAINTAINER",
    "APP",
    "APPCMDS",
    "APPENV",
    "CNI",
    "CSI",
    "KUBEVERSION",
    "LAUNCH",
    "CMDS",
    "CMD",
];

/// Parse a Kubefile. `file` is its path as the user gave it, used in messages.
pub fn parse(file: &str, text: &str) -> Result<Kubefile, KubefileError> {
    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    for logical in logical_lines(text) {
        let err = |col: usize, m: String| {
            KubefileError::at(
                file,
                Span {
                    line: logical.line,
                    col,
                },
                m,
            )
        };
        let (verb, rest, rest_col) = split_verb(&logical.text, logical.col);
        let upper = verb.to_ascii_uppercase();
        let span = Span {
            line: logical.line,
            col: logical.col,
        };
        let args = Args {
            text: rest,
            col: rest_col,
            verb: &upper,
        };
        let instruction = parse_instruction(&args, verb, logical.col, span, &mut warnings)
            .map_err(|e| err(e.col, e.message))?;
        instructions.push(Located {
            span,
            text: logical.text.clone(),
            instruction,
        });
    }
    let kubefile = Kubefile {
        file: file.to_string(),
        instructions,
        warnings,
    };
    check_order(&kubefile)?;
    Ok(kubefile)
}

fn parse_instruction(
    args: &Args<'_>,
    verb: &str,
    verb_col: usize,
    span: Span,
    warnings: &mut Vec<KubefileWarning>,
) -> Result<Instruction, ArgError> {
    match args.verb {
        "FROM" => parse_from(args),
        "COPY" | "ADD" => parse_copy(args),
        "RUN" => parse_run(args),
        "ARG" => parse_arg(args),
        "ENV" => parse_pairs(args, true).map(Instruction::Env),
        "LABEL" => parse_pairs(args, false).map(Instruction::Label),
        "MAINTAINER" => args
            .non_empty("a name, e.g. `MAINTAINER Jane <jane@example.com>`")
            .map(|()| Instruction::Maintainer(args.text.trim().to_string())),
        "APP" | "CNI" | "CSI" => parse_app(args),
        "APPCMDS" => parse_appcmds(args),
        "APPENV" => parse_appenv(args),
        "KUBEVERSION" => {
            args.non_empty("a version range, e.g. `KUBEVERSION >=1.24.0 <1.30.0`")?;
            VersionRange::parse(args.text.trim())
                .map(Instruction::KubeVersion)
                .map_err(|m| args.error(args.col, m))
        }
        "LAUNCH" => {
            parse_list(args, "app names, e.g. `LAUNCH [\"app1\", \"app2\"]`").map(|words| {
                Instruction::Launch(words.into_iter().flat_map(|w| split_words_of(&w)).collect())
            })
        }
        "CMDS" => parse_commands(args).map(Instruction::Cmds),
        "CMD" => {
            warnings.push(KubefileWarning {
                span,
                message: "CMD is deprecated: write `CMDS [\"...\"]` (or APP + LAUNCH)".to_string(),
            });
            parse_commands(args).map(Instruction::Cmd)
        }
        _ => Err(args.error(verb_col, unknown_verb_message(verb))),
    }
}

fn unknown_verb_message(verb: &str) -> String {
    let upper = verb.to_ascii_uppercase();
    let nearest = VERBS
        .iter()
        .map(|v| (edit_distance(v, &upper), *v))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, v)| format!(" (did you mean {v}?)"))
        .unwrap_or_default();
    format!(
        "unknown instruction `{verb}`{nearest}; expected one of {}",
        VERBS.join(", ")
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The whole-file rules: FROM first, LAUNCH/CMDS/CMD last and exclusive, APP names unique.
fn check_order(k: &Kubefile) -> Result<(), KubefileError> {
    let Some(first) = k
        .instructions
        .iter()
        .find(|l| !matches!(l.instruction, Instruction::Arg { .. }))
    else {
        return Err(k.error(
            Span { line: 1, col: 1 },
            "the Kubefile has no instructions; start it with `FROM scratch` or `FROM IMAGE`",
        ));
    };
    if !matches!(first.instruction, Instruction::From { .. }) {
        return Err(k.error(
            first.span,
            format!(
                "{} before FROM; the first instruction (after ARGs) must be `FROM scratch` or `FROM IMAGE`",
                first.instruction.verb()
            ),
        ));
    }
    let mut froms = k
        .instructions
        .iter()
        .filter(|l| matches!(l.instruction, Instruction::From { .. }));
    froms.next();
    if let Some(second) = froms.next() {
        return Err(k.error(
            second.span,
            "a second FROM; a Kubefile builds one image from one base, remove this line",
        ));
    }
    let mut apps: HashSet<&str> = HashSet::new();
    let mut terminal: Option<&Located> = None;
    for l in &k.instructions {
        if let Some(t) = terminal {
            let what = if matches!(
                l.instruction,
                Instruction::Launch(_) | Instruction::Cmds(_) | Instruction::Cmd(_)
            ) {
                format!(
                    "{} after {} on line {}; use only one of LAUNCH, CMDS and CMD, once",
                    l.instruction.verb(),
                    t.instruction.verb(),
                    t.span.line
                )
            } else {
                format!(
                    "{} after {} on line {}; {} must be the last instruction, move it to the end",
                    l.instruction.verb(),
                    t.instruction.verb(),
                    t.span.line,
                    t.instruction.verb()
                )
            };
            // Several deprecated CMD lines are allowed, as sealer allowed them.
            if !(matches!(t.instruction, Instruction::Cmd(_))
                && matches!(l.instruction, Instruction::Cmd(_)))
            {
                return Err(k.error(l.span, what));
            }
        }
        match &l.instruction {
            Instruction::App { name, .. } if !apps.insert(name.text.as_str()) => {
                return Err(k.error(
                    Span {
                        line: l.span.line,
                        col: name.col,
                    },
                    format!(
                        "APP `{}` is declared twice; give each APP a unique name",
                        name.text
                    ),
                ));
            }
            Instruction::Launch(_) | Instruction::Cmds(_) | Instruction::Cmd(_) => {
                terminal = Some(l);
            }
            _ => {}
        }
    }
    Ok(())
}

struct Logical {
    line: usize,
    col: usize,
    text: String,
}

/// Join continuations and drop comments and blank lines.
fn logical_lines(text: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.trim_end().is_empty() && current.is_none() {
            continue;
        }
        let (content, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(c) => (c, true),
            None => (raw.trim_end(), false),
        };
        match current.as_mut() {
            Some(cur) => {
                cur.text.push(' ');
                cur.text.push_str(content.trim());
            }
            None => {
                let col = raw.len() - trimmed.len() + 1;
                current = Some(Logical {
                    line: line_no,
                    col,
                    text: content.trim().to_string(),
                });
            }
        }
        if !continues && let Some(done) = current.take() {
            out.push(done);
        }
    }
    if let Some(done) = current {
        out.push(done);
    }
    out
}

/// `VERB rest`: the verb, the rest, and the rest's column.
fn split_verb(text: &str, col: usize) -> (&str, &str, usize) {
    match text.find(char::is_whitespace) {
        Some(i) => {
            let rest = &text[i..];
            let skipped = rest.len() - rest.trim_start().len();
            (&text[..i], rest.trim_start(), col + i + skipped)
        }
        None => (text, "", col + text.len()),
    }
}

struct ArgError {
    col: usize,
    message: String,
}

struct Args<'a> {
    text: &'a str,
    col: usize,
    verb: &'a str,
}

impl Args<'_> {
    fn error(&self, col: usize, message: impl Into<String>) -> ArgError {
        ArgError {
            col,
            message: message.into(),
        }
    }

    fn non_empty(&self, expected: &str) -> Result<(), ArgError> {
        if self.text.trim().is_empty() {
            Err(self.error(self.col, format!("{} needs {expected}", self.verb)))
        } else {
            Ok(())
        }
    }

    /// The JSON array form, if the arguments are one.
    fn json(&self) -> Result<Option<Vec<String>>, ArgError> {
        let t = self.text.trim();
        if !t.starts_with('[') {
            return Ok(None);
        }
        serde_json::from_str::<Vec<String>>(t)
            .map(Some)
            .map_err(|e| {
                self.error(
                    self.col,
                    format!(
                        "{} arguments start with `[` but are not a JSON array of strings ({e}); write e.g. [\"a\", \"b\"]",
                        self.verb
                    ),
                )
            })
    }

    /// Shell-form words: split on whitespace, honouring quotes and `\` escapes.
    fn words(&self) -> Result<Vec<Word>, ArgError> {
        split_words(self.text, self.col).map_err(|(col, m)| self.error(col, m))
    }

    /// Words from either the JSON form or the shell form (JSON words get the column of the `[`).
    fn list(&self) -> Result<Vec<Word>, ArgError> {
        match self.json()? {
            Some(items) => Ok(items
                .into_iter()
                .map(|text| Word {
                    text,
                    col: self.col,
                })
                .collect()),
            None => self.words(),
        }
    }
}

fn split_words_of(w: &Word) -> Vec<Word> {
    split_words(&w.text, w.col).unwrap_or_else(|_| vec![w.clone()])
}

fn split_words(text: &str, col: usize) -> Result<Vec<Word>, (usize, String)> {
    let mut words = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        let mut quote: Option<(char, usize)> = None;
        while let Some(&(i, c)) = chars.peek() {
            match quote {
                Some((q, _)) if c == q => {
                    quote = None;
                    chars.next();
                }
                Some(('"', _)) if c == '\\' => {
                    chars.next();
                    if let Some((_, n)) = chars.next() {
                        word.push(n);
                    }
                }
                Some(_) => {
                    word.push(c);
                    chars.next();
                }
                None if c.is_whitespace() => break,
                None if c == '"' || c == '\'' => {
                    quote = Some((c, i));
                    chars.next();
                }
                None if c == '\\' => {
                    chars.next();
                    if let Some((_, n)) = chars.next() {
                        word.push(n);
                    }
                }
                None => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        if let Some((q, at)) = quote {
            return Err((
                col + text[..at].chars().count(),
                format!("unterminated {q}-quoted string; close it with {q}"),
            ));
        }
        words.push(Word {
            text: word,
            col: col + text[..start].chars().count(),
        });
    }
    Ok(words)
}

fn parse_from(args: &Args<'_>) -> Result<Instruction, ArgError> {
    args.non_empty("an image, e.g. `FROM scratch` or `FROM my-cluster:v1`")?;
    let mut platform = None;
    let mut image = None;
    for w in args.words()? {
        if let Some(p) = w.text.strip_prefix("--platform=") {
            platform = Some(Word {
                text: p.to_string(),
                col: w.col + "--platform=".len(),
            });
        } else if w.text.starts_with("--") {
            return Err(args.error(
                w.col,
                format!("FROM does not take `{}`; only --platform=OS/ARCH", w.text),
            ));
        } else if image.is_some() {
            return Err(args.error(
                w.col,
                format!(
                    "FROM takes one image, but `{}` follows it; write `FROM [--platform=OS/ARCH] IMAGE`",
                    w.text
                ),
            ));
        } else {
            image = Some(w);
        }
    }
    let image = image.ok_or_else(|| {
        args.error(
            args.col,
            "FROM needs an image after --platform, e.g. `FROM --platform=linux/amd64 scratch`",
        )
    })?;
    Ok(Instruction::From { image, platform })
}

fn parse_copy(args: &Args<'_>) -> Result<Instruction, ArgError> {
    let mut words = args.list()?;
    let mut checksum = None;
    if args.verb == "ADD"
        && let Some(i) = words.iter().position(|w| w.text.starts_with("--checksum="))
    {
        let w = words.remove(i);
        let text = &w.text["--checksum=".len()..];
        if text.parse::<crate::digest::Digest>().is_err() {
            return Err(args.error(
                w.col,
                format!(
                    "--checksum={text} is not a digest; write --checksum=sha256:<64 hex digits>"
                ),
            ));
        }
        checksum = Some(Word {
            text: text.to_string(),
            col: w.col + "--checksum=".len(),
        });
    }
    if words.iter().any(|w| w.text.starts_with("--")) {
        let w = words
            .iter()
            .find(|w| w.text.starts_with("--"))
            .map_or(args.col, |w| w.col);
        return Err(args.error(
            w,
            format!(
                "{} takes no flags here; write `{} SRC... DEST`",
                args.verb, args.verb
            ),
        ));
    }
    if words.len() < 2 {
        return Err(args.error(
            args.col,
            format!(
                "{} needs a source and a destination, e.g. `{} bin/kubelet bin/`",
                args.verb, args.verb
            ),
        ));
    }
    let dest = words.pop().unwrap_or_else(|| Word {
        text: String::new(),
        col: args.col,
    });
    Ok(if args.verb == "ADD" {
        Instruction::Add {
            sources: words,
            dest,
            checksum,
        }
    } else {
        Instruction::Copy {
            sources: words,
            dest,
        }
    })
}

fn parse_run(args: &Args<'_>) -> Result<Instruction, ArgError> {
    args.non_empty("a command, e.g. `RUN ./scripts/fetch.sh`")?;
    Ok(match args.json()? {
        Some(argv) if argv.is_empty() => {
            return Err(args.error(
                args.col,
                "RUN [] has no program; write RUN [\"prog\", \"arg\"]",
            ));
        }
        Some(argv) => Instruction::Run(RunCommand::Exec(argv)),
        None => Instruction::Run(RunCommand::Shell(args.text.trim().to_string())),
    })
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_arg(args: &Args<'_>) -> Result<Instruction, ArgError> {
    args.non_empty("a name, e.g. `ARG VERSION=1.28.0`")?;
    let words = args.words()?;
    if words.len() != 1 {
        return Err(args.error(
            words.get(1).map_or(args.col, |w| w.col),
            "ARG declares one variable; write one `ARG NAME[=DEFAULT]` per line",
        ));
    }
    let w = &words[0];
    let (name, default) = match w.text.split_once('=') {
        Some((n, d)) => (
            n,
            Some(Word {
                text: d.to_string(),
                col: w.col + n.len() + 1,
            }),
        ),
        None => (w.text.as_str(), None),
    };
    if !is_name(name) {
        return Err(args.error(
            w.col,
            format!(
                "`{name}` is not a variable name; use letters, digits and _ (not first a digit)"
            ),
        ));
    }
    Ok(Instruction::Arg {
        name: name.to_string(),
        default,
    })
}

/// `K=V K2="v 2"`, or (for ENV only) the legacy `K V...`.
fn parse_pairs(args: &Args<'_>, legacy: bool) -> Result<Vec<(String, Word)>, ArgError> {
    args.non_empty("KEY=VALUE pairs, e.g. `KEY=value`")?;
    pairs_from_words(args, args.words()?, legacy)
}

fn pairs_from_words(
    args: &Args<'_>,
    words: Vec<Word>,
    legacy: bool,
) -> Result<Vec<(String, Word)>, ArgError> {
    if legacy && words.first().is_some_and(|w| !w.text.contains('=')) {
        let key = &words[0];
        if words.len() < 2 {
            return Err(args.error(
                key.col,
                format!(
                    "{} `{}` has no value; write `{}={{value}}`",
                    args.verb, key.text, key.text
                ),
            ));
        }
        let value = words[1..]
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        return Ok(vec![(
            key.text.clone(),
            Word {
                text: value,
                col: words[1].col,
            },
        )]);
    }
    let mut pairs = Vec::new();
    for w in words {
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(args.error(
                w.col,
                format!("`{}` is not KEY=VALUE; write `{}=value`", w.text, w.text),
            ));
        };
        if k.is_empty() {
            return Err(args.error(w.col, "empty key before `=`; write KEY=VALUE"));
        }
        pairs.push((
            k.to_string(),
            Word {
                text: v.to_string(),
                col: w.col + k.len() + 1,
            },
        ));
    }
    Ok(pairs)
}

fn check_app_name(args: &Args<'_>, name: &Word) -> Result<(), ArgError> {
    let ok = !name.text.is_empty()
        && name
            .text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.text.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(args.error(
            name.col,
            format!(
                "`{}` is not an app name; use letters, digits, `-`, `_` and `.` (e.g. `nginx`)",
                name.text
            ),
        ))
    }
}

fn parse_app(args: &Args<'_>) -> Result<Instruction, ArgError> {
    let role = match args.verb {
        "CNI" => AppRole::Cni,
        "CSI" => AppRole::Csi,
        _ => AppRole::App,
    };
    let words = args.words()?;
    let example = format!("`{} NAME local://path/in/context`", args.verb);
    let Some((name, rest)) = words.split_first() else {
        return Err(args.error(
            args.col,
            format!("{} needs a name and sources, e.g. {example}", args.verb),
        ));
    };
    check_app_name(args, name)?;
    if rest.is_empty() {
        return Err(args.error(
            name.col + name.text.len(),
            format!(
                "{} `{}` has no sources; write {example}",
                args.verb, name.text
            ),
        ));
    }
    let mut sources = Vec::new();
    for w in rest {
        if let Some(path) = w.text.strip_prefix("local://") {
            if path.is_empty() {
                return Err(args.error(w.col, format!("empty local:// path; write {example}")));
            }
            sources.push(AppSource::Local(Word {
                text: path.to_string(),
                col: w.col + "local://".len(),
            }));
        } else if w.text.starts_with("http://") || w.text.starts_with("https://") {
            sources.push(AppSource::Remote(w.clone()));
        } else {
            return Err(args.error(
                w.col,
                format!(
                    "`{}` is not an app source; write local://PATH (in the context) or an https:// URL",
                    w.text
                ),
            ));
        }
    }
    Ok(Instruction::App {
        role,
        name: name.clone(),
        sources,
    })
}

fn parse_commands(args: &Args<'_>) -> Result<Vec<String>, ArgError> {
    args.non_empty("commands, e.g. `[\"kubectl apply -f manifests/app.yaml\"]`")?;
    Ok(match args.json()? {
        Some(cmds) => cmds,
        None => vec![args.text.trim().to_string()],
    })
}

fn parse_list(args: &Args<'_>, expected: &str) -> Result<Vec<Word>, ArgError> {
    args.non_empty(expected)?;
    let words = args.list()?;
    if words.is_empty() {
        return Err(args.error(args.col, format!("{} needs {expected}", args.verb)));
    }
    Ok(words)
}

fn parse_appcmds(args: &Args<'_>) -> Result<Instruction, ArgError> {
    let (name, rest) = app_and_rest(args, "`APPCMDS NAME [\"cmd\", ...]`")?;
    let rest_args = Args {
        text: rest.0,
        col: rest.1,
        verb: args.verb,
    };
    let cmds = parse_commands(&rest_args)?;
    Ok(Instruction::AppCmds { name, cmds })
}

fn parse_appenv(args: &Args<'_>) -> Result<Instruction, ArgError> {
    let (name, rest) = app_and_rest(args, "`APPENV NAME KEY=VALUE ...`")?;
    let rest_args = Args {
        text: rest.0,
        col: rest.1,
        verb: args.verb,
    };
    let pairs = parse_pairs(&rest_args, false)?;
    Ok(Instruction::AppEnv { name, pairs })
}

fn app_and_rest<'a>(args: &Args<'a>, example: &str) -> Result<(Word, (&'a str, usize)), ArgError> {
    args.non_empty(&format!("an app name, e.g. {example}"))?;
    let (name, rest, rest_col) = split_verb(args.text, args.col);
    let name = Word {
        text: name.to_string(),
        col: args.col,
    };
    check_app_name(args, &name)?;
    if rest.trim().is_empty() {
        return Err(args.error(
            rest_col,
            format!("{} `{}` needs more; write {example}", args.verb, name.text),
        ));
    }
    Ok((name, (rest, rest_col)))
}

/// Substitute `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` from `vars`;
/// `\$` is a literal `$`. Unset variables become empty, as in Docker.
/// Returns the error message when a `${` is not closed.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(format!("`${{{inner}` is not closed; write `${{{inner}}}`"));
                }
                let value = if let Some((name, default)) = inner.split_once(":-") {
                    vars.get(name)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .unwrap_or_else(|| default.to_string())
                } else if let Some((name, alt)) = inner.split_once(":+") {
                    if vars.get(name).is_some_and(|v| !v.is_empty()) {
                        alt.to_string()
                    } else {
                        String::new()
                    }
                } else {
                    vars.get(&inner).cloned().unwrap_or_default()
                };
                out.push_str(&value);
            }
            '$' if chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') =>
            {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(vars.get(&name).map_or("", String::as_str));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A semver-style version range: alternatives joined by `||`, each a set of
/// comparators (`>=1.24.0 <1.30`, `~1.28`, `^1.2`, `1.28.x`, `1.24 - 1.28`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct VersionRange {
    text: String,
    alternatives: Vec<Vec<Comparator>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: [u64; 3],
}

impl From<VersionRange> for String {
    fn from(r: VersionRange) -> Self {
        r.text
    }
}

impl TryFrom<String> for VersionRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A partial version: `1`, `1.28`, `v1.28.3`, `1.28.x`; `None` parts are wildcards.
fn parse_partial(s: &str) -> Option<[Option<u64>; 3]> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let s = s.split(['-', '+']).next().unwrap_or(s);
    let mut parts = [None; 3];
    let mut n = 0;
    for (i, p) in s.split('.').enumerate() {
        if i >= 3 {
            return None;
        }
        n = i + 1;
        parts[i] = match p {
            "x" | "X" | "*" => None,
            _ => Some(p.parse().ok()?),
        };
        if parts[i].is_none() && i == 0 {
            return None;
        }
        if i > 0 && parts[i - 1].is_none() && parts[i].is_some() {
            return None;
        }
    }
    (n > 0 && !s.is_empty()).then_some(parts)
}

fn lower(p: [Option<u64>; 3]) -> [u64; 3] {
    [p[0].unwrap_or(0), p[1].unwrap_or(0), p[2].unwrap_or(0)]
}

/// The first version above everything `p` matches (`1.28` → `1.29.0`).
fn upper_exclusive(p: [Option<u64>; 3]) -> [u64; 3] {
    match p {
        [Some(a), Some(b), Some(c)] => [a, b, c + 1],
        [Some(a), Some(b), None] => [a, b + 1, 0],
        [Some(a), None, _] => [a + 1, 0, 0],
        [None, _, _] => [u64::MAX, 0, 0],
    }
}

impl VersionRange {
    /// Parse a range; the error says what is wrong and shows a valid range.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |what: &str| {
            format!(
                "`{what}` is not a version range term; write e.g. `>=1.24.0 <1.30.0`, `~1.28`, `1.28.x` or `1.24 - 1.28`"
            )
        };
        let mut alternatives = Vec::new();
        for alt in text.split("||") {
            let tokens: Vec<&str> = alt
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .collect();
            if tokens.is_empty() {
                return Err(bad(alt.trim()));
            }
            let mut set = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                let t = tokens[i];
                if tokens.get(i + 1) == Some(&"-") {
                    let from = parse_partial(t).ok_or_else(|| bad(t))?;
                    let to_s = tokens.get(i + 2).ok_or_else(|| bad(t))?;
                    let to = parse_partial(to_s).ok_or_else(|| bad(to_s))?;
                    set.push(Comparator {
                        op: Op::Ge,
                        version: lower(from),
                    });
                    set.push(Comparator {
                        op: Op::Lt,
                        version: upper_exclusive(to),
                    });
                    i += 3;
                    continue;
                }
                let (op, rest) = [
                    (">=", "ge"),
                    ("<=", "le"),
                    ("!=", "ne"),
                    (">", "gt"),
                    ("<", "lt"),
                    ("=", "eq"),
                    ("~", "tilde"),
                    ("^", "caret"),
                ]
                .iter()
                .find_map(|(p, name)| t.strip_prefix(p).map(|r| (*name, r)))
                .unwrap_or(("", t));
                let v = parse_partial(rest).ok_or_else(|| bad(t))?;
                let exact = v.iter().all(Option::is_some);
                let (lo, up) = (lower(v), upper_exclusive(v));
                // `~1.2` and `^1.2`, and partial versions (`1.2` = `>=1.2.0 <1.3.0`), are ranges.
                let range = |upper| vec![(Op::Ge, lo), (Op::Lt, upper)];
                let comparators = match op {
                    "ge" => vec![(Op::Ge, lo)],
                    "gt" if exact => vec![(Op::Gt, lo)],
                    "gt" => vec![(Op::Ge, up)],
                    "lt" => vec![(Op::Lt, lo)],
                    "le" if exact => vec![(Op::Le, lo)],
                    "le" => vec![(Op::Lt, up)],
                    "ne" if exact => vec![(Op::Ne, lo)],
                    "ne" => return Err(bad(t)),
                    "tilde" => range(match v {
                        [Some(a), Some(b), _] => [a, b + 1, 0],
                        _ => up,
                    }),
                    "caret" => range(match v {
                        [Some(0), Some(b), _] => [0, b + 1, 0],
                        [Some(a), _, _] => [a + 1, 0, 0],
                        _ => up,
                    }),
                    _ if exact => vec![(Op::Eq, lo)],
                    _ => range(up),
                };
                set.extend(
                    comparators
                        .into_iter()
                        .map(|(op, version)| Comparator { op, version }),
                );
                i += 1;
            }
            alternatives.push(set);
        }
        Ok(Self {
            text: text.trim().to_string(),
            alternatives,
        })
    }

    /// Whether `version` (`v1.28.3`, `1.28.3`) is in the range; `None` if it is not a version.
    pub fn matches(&self, version: &str) -> Option<bool> {
        let p = parse_partial(version)?;
        let v = lower(p);
        Some(self.alternatives.iter().any(|set| {
            set.iter().all(|c| match c.op {
                Op::Eq => v == c.version,
                Op::Ne => v != c.version,
                Op::Gt => v > c.version,
                Op::Ge => v >= c.version,
                Op::Lt => v < c.version,
                Op::Le => v <= c.version,
            })
        }))
    }
}

#[cfg(test)]
mod tests;
