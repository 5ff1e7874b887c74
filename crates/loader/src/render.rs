//! Renders pipeline-file problems for people:
//!
//! ```text
//! pipelines/x.yaml:12:5: unknown key `timout` in `functions[0].retry`
//!   hint: did you mean `timeout`?
//! ```
//!
//! One line per problem (plus a hint line when there is a hint), sorted by
//! line then column; problems at the same place keep the order they were
//! found in. Every line ends with a newline.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::Path;

use spate_connector::ConfigError;

use super::load::LoadError;

/// Renders `errors` found in the file at `path`.
pub fn render(path: &Path, errors: &[ConfigError]) -> String {
    let mut sorted: Vec<&ConfigError> = errors.iter().collect();
    sorted.sort_by_key(|e| e.span);
    let mut out = String::new();
    for error in sorted {
        let _ = writeln!(out, "{}:{}: {}", path.display(), error.span, error.message);
        if let Some(hint) = &error.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
    }
    out
}

/// Renders the warnings of a file that loaded: each as
/// `file:line:column: warning: message`, then its hint.
pub fn render_warnings(path: &Path, warnings: &[ConfigError]) -> String {
    let marked: Vec<ConfigError> = warnings
        .iter()
        .map(|w| ConfigError {
            message: format!("warning: {}", w.message),
            ..w.clone()
        })
        .collect();
    render(path, &marked)
}

/// Renders any [`LoadError`]: every problem of an invalid file, or why the
/// file could not be read.
pub fn render_load_error(error: &LoadError) -> String {
    match error {
        LoadError::Invalid { path, errors } => render(path, errors),
        LoadError::Read { path, source } => {
            let (what, hint) = match source.kind() {
                ErrorKind::NotFound => (
                    "no such file".to_owned(),
                    Some("check the path; a relative path starts from the current directory"),
                ),
                ErrorKind::PermissionDenied => (
                    "permission denied".to_owned(),
                    Some("make the file readable by the user running spate"),
                ),
                ErrorKind::InvalidData => (
                    "the file is not UTF-8 text".to_owned(),
                    Some("save it as UTF-8"),
                ),
                ErrorKind::IsADirectory => (
                    "this is a directory, not a file".to_owned(),
                    Some("name the YAML file itself"),
                ),
                _ => (format!("cannot read the file: {source}"), None),
            };
            let mut out = format!("{}: {what}\n", path.display());
            if let Some(hint) = hint {
                let _ = writeln!(out, "  hint: {hint}");
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_connector::Span;

    fn error(line: u32, column: u32, message: &str, hint: Option<&str>) -> ConfigError {
        ConfigError {
            span: Span { line, column },
            path: String::new(),
            message: message.to_owned(),
            hint: hint.map(str::to_owned),
        }
    }

    #[test]
    fn sorted_by_place_with_hint_lines_only_when_there_is_a_hint() {
        let errors = [
            error(
                12,
                5,
                "unknown key `timout` in `functions[0].retry`",
                Some("did you mean `timeout`?"),
            ),
            error(3, 9, "second at 3:9", None),
            error(3, 2, "first at 3:2", None),
            error(3, 9, "third at 3:9", Some("fix it")),
        ];
        assert_eq!(
            render(Path::new("pipelines/x.yaml"), &errors),
            "pipelines/x.yaml:3:2: first at 3:2\n\
             pipelines/x.yaml:3:9: second at 3:9\n\
             pipelines/x.yaml:3:9: third at 3:9\n  hint: fix it\n\
             pipelines/x.yaml:12:5: unknown key `timout` in `functions[0].retry`\n  hint: did you mean `timeout`?\n"
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let error = LoadError::Read {
            path: "pipelines/nope.yaml".into(),
            source: std::io::Error::from(ErrorKind::NotFound),
        };
        assert_eq!(
            render_load_error(&error),
            "pipelines/nope.yaml: no such file\n  hint: check the path; a relative path starts from the current directory\n"
        );
    }
}
