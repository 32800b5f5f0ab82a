//! Commands that need no shell.
//!
//! An app's command is a shell command line, run as `sh -c COMMAND`. Most are plain words
//! (`exec gunicorn app:app --workers 2`), for which the shell only splits on spaces and execs
//! the program: about 1 ms of CPU per start for nothing, and without `exec` a shell process
//! left waiting for the app all its life (dash does not exec the last command). Such commands
//! are exec'd directly instead: the same program, the same arguments, `PWD` set as the shell
//! would. Anything the shell would interpret keeps the shell.

/// Characters that mean nothing to `sh` inside a word.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./,:=@%+".contains(c)
}

/// Words that are the shell's own, or behave differently as a program of the same name.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "elif",
    "else", "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi", "for", "getopts", "hash",
    "if", "in", "jobs", "local", "read", "readonly", "return", "set", "shift", "then", "times",
    "trap", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// The words of `command` when `sh -c` would only split it on spaces and exec its first
/// word (after a leading `exec`); `None` when any shell syntax is present: quotes, `$`,
/// globs, redirections, operators, comments, `~`, a variable assignment, a builtin.
pub(crate) fn plain_words(command: &str) -> Option<Vec<&str>> {
    if !command.chars().all(|c| c == ' ' || plain(c)) {
        return None;
    }
    let mut words = command.split(' ').filter(|w| !w.is_empty()).peekable();
    words.next_if_eq(&"exec");
    let words: Vec<&str> = words.collect();
    let program = words.first()?;
    if program.contains('=') || SHELL_WORDS.contains(program) {
        return None;
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn plain_words_go_direct_and_shell_syntax_keeps_the_shell() {
        let direct: &[(&str, &[&str])] = &[
            (
                "exec gunicorn app:app -b 0.0.0.0:8000 --workers=2",
                &["gunicorn", "app:app", "-b", "0.0.0.0:8000", "--workers=2"],
            ),
            ("  node  server.js ", &["node", "server.js"]),
            ("./bin/web", &["./bin/web"]),
            (
                "/usr/bin/env python3 -m app",
                &["/usr/bin/env", "python3", "-m", "app"],
            ),
            (
                "uvicorn main:app --port 8000",
                &["uvicorn", "main:app", "--port", "8000"],
            ),
        ];
        for (command, words) in direct {
            assert_eq!(plain_words(command).as_deref(), Some(*words), "{command}");
        }
        for command in [
            "gunicorn app:app -b 127.0.0.1:$PORT",
            "python -c 'print(1)'",
            "app > out.log",
            "app 2>&1",
            "migrate && web",
            "web; true",
            "web &",
            "web | tee log",
            "python manage.py runserver # dev",
            "ls *.py",
            "cat ~/.profile",
            "DEBUG=1 web",
            "cd app",
            "exec",
            "exec exec web",
            "",
            "   ",
            "web\tx",
            "web\nx",
            "echo \"x\"",
            "run-\u{e9}t\u{e9}",
            "[ -f x ]",
            "web {a,b}",
            "web `id`",
            "web \\x",
        ] {
            assert_eq!(plain_words(command), None, "{command:?} needs the shell");
        }
    }
}
