//! `tether.toml`: every flag of `tether serve` as a key (`port = 5006`, `live_ttl = "2h"`,
//! `allow_host = ["dash.example.org"]`), plus `apps` and `panel_args`. It is read from
//! `--config PATH`, else from `tether.toml` in the working directory when there is one.
//!
//! The command line wins over the environment (`TETHER_PYTHON`), which wins over the file:
//! a key is used only for a flag that neither gave. The file's values become arguments and
//! are parsed by the same rules as the command line, so a bad value reads as a bad flag.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The file read when `--config` is not given.
pub const DEFAULT_FILE: &str = "tether.toml";

/// The command line with the config file's keys added where the command line and the
/// environment are silent, or `None` when there is no file to read.
pub fn merge(
    argv: &[String],
    serve: &Command,
    matches: &ArgMatches,
) -> Result<Option<(PathBuf, Vec<String>)>, String> {
    let explicit = matches.get_one::<PathBuf>("config").cloned();
    let path = match explicit {
        Some(path) => path,
        None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the config file {}: {e}; check the path given to --config",
            path.display()
        )
    })?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let (options, panel) =
        file_args(&text, serve, &given).map_err(|e| format!("{}: {e}", path.display()))?;
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let mut merged: Vec<String> = argv[..split].to_vec();
    merged.extend(options);
    merged.extend(argv[split..].iter().cloned());
    if split == argv.len() && !panel.is_empty() {
        merged.push("--".into());
        merged.extend(panel);
    }
    Ok(Some((path, merged)))
}

/// The arguments the file's keys stand for, as (options and apps, `panel serve` arguments);
/// keys for which `given` is true are left out.
fn file_args(
    text: &str,
    serve: &Command,
    given: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<String>), String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let what = e.message().trim_end_matches('.').to_owned();
        format!("{what}; write one `key = value` per line, such as port = 5006")
    })?;
    let mut options = Vec::new();
    let mut panel = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(name.as_str())
                    || (a.get_long().is_none() && a.get_id().as_str() == key)
            })
            .filter(|a| a.get_id() != "config" && a.get_id() != "help")
            .ok_or_else(|| {
                format!("unknown key `{key}`; the keys are the flags of `tether serve` (see --help), such as port = 5006")
            })?;
        let id = arg.get_id().as_str();
        if given(id) {
            continue;
        }
        let many = matches!(arg.get_action(), clap::ArgAction::Append)
            || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let values = match value {
            toml::Value::Array(items) if many => items
                .iter()
                .map(|v| scalar(key, v))
                .collect::<Result<Vec<_>, _>>()?,
            toml::Value::Array(_) => {
                return Err(format!(
                    "`{key}` takes one value, not a list; write {key} = VALUE"
                ))
            }
            one => vec![scalar(key, one)?],
        };
        match (id, arg.get_long()) {
            ("panel_args", _) => panel.extend(values),
            (_, Some(long)) => options.extend(values.into_iter().map(|v| format!("--{long}={v}"))),
            (_, None) => options.extend(values),
        }
    }
    Ok((options, panel))
}

/// One TOML value as the text a flag takes.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "`{key}` must be a string or a number, such as {key} = \"value\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve() -> Command {
        crate::Cli::command()
            .find_subcommand("serve")
            .expect("serve")
            .clone()
    }

    #[test]
    fn keys_become_flags_unless_the_command_line_gave_them() {
        let text = r#"
            apps = ["a.py", "b.py"]
            port = 8000
            live_ttl = "2h"
            allow_host = ["x.example", "y.example"]
            panel_args = ["--num-threads", "2"]
        "#;
        let (options, panel) = file_args(text, &serve(), &|id| id == "port").unwrap();
        let mut options = options;
        options.sort();
        assert_eq!(
            options,
            [
                "--allow-host=x.example",
                "--allow-host=y.example",
                "--live-ttl=2h",
                "a.py",
                "b.py"
            ]
        );
        assert_eq!(panel, ["--num-threads", "2"]);
    }

    #[test]
    fn unknown_keys_and_odd_values_are_one_sentence_naming_the_key() {
        let err = |text: &str| file_args(text, &serve(), &|_| false).unwrap_err();
        let unknown = err("prot = 5006");
        assert!(unknown.starts_with("unknown key `prot`"), "{unknown}");
        assert!(err("port = [1, 2]").contains("`port` takes one value"));
        assert!(err("state = { a = 1 }").contains("`state` must be a string"));
        assert!(err("config = \"x.toml\"").contains("unknown key `config`"));
        assert!(err("port = ").contains("one `key = value` per line"));
    }
}
