//! `openclaw-node config get KEY | set KEY VALUE | validate [FILE]`.
//!
//! - `get` prints the **effective** value (defaults + file + `OPENCLAW__` env) at a dotted key,
//!   as JSON, exactly what the node would use.
//! - `set` edits the **file's** JSON tree (not the defaults: the file stays small and keeps what
//!   the operator wrote), checks the result as the node would load it (file + env, strict
//!   deserialization, [`Config::validate`]) and only then writes it, atomically (temp file in the
//!   same folder + rename), so a running node's watcher never reads half a file. Other keys keep
//!   their values and their order (serde_json's `preserve_order`). An invalid value leaves the
//!   file untouched and names the JSON path and the reason.
//! - `validate` checks a file (default: the node's) and exits 1 with the path and reason.

use std::path::Path;

use serde_json::{json, Value};

use crate::cli::ConfigCmd;
use openclaw_server::config::{self, Config, ConfigError};

use super::Resolved;

/// `"16"` → 16, `"true"` → true, `"[\"a\"]"` → array, anything else → the string itself.
pub fn parse_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// The effective value at `key` (dotted) of a loaded config.
pub fn get_effective(cfg: &Config, key: &str) -> Result<Value, String> {
    let root = serde_json::to_value(cfg).map_err(|e| e.to_string())?;
    config::get_path(&root, key)
        .cloned()
        .ok_or_else(|| format!("no key `{key}` in the configuration"))
}

/// What `config set` wrote: the new file text, and the changes a running node applies only
/// after a restart (empty: it reloads all of it by itself).
#[derive(Debug, Clone, PartialEq)]
pub struct SetOutcome {
    pub text: String,
    pub restart_needed: Vec<String>,
}

/// Top-level keys and prefixes a running node reads only at start-up; used when the old file
/// cannot be loaded to compare with (otherwise the node's own [`config::reload::diff`] decides).
pub const RESTART_KEYS: [&str; 12] = [
    "server.listen",
    "server.node_name",
    "server.max_body_mb",
    "server.max_in_flight_requests",
    "server.restart_max",
    "server.restart_window_seconds",
    "server.restart_backoff_ms",
    "auth",
    "audit",
    "cluster",
    "agents",
    "models_mode",
];

/// Apply `key = value` to the file's text (None: no file yet) and check the result with `env`
/// overrides as the node would. Returns the new file text and what needs a restart.
pub fn set_in_text(
    label: &str,
    text: Option<&str>,
    key: &str,
    value: Value,
    env: impl Iterator<Item = (String, String)>,
) -> Result<SetOutcome, ConfigError> {
    let env: Vec<(String, String)> = env.collect();
    let mut root = match text {
        Some(t) => config::parse_json(label, t)?,
        None => json!({}),
    };
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Invalid {
            file: label.into(),
            path: key.into(),
            reason: "keys are dotted names, e.g. model_routing.default_model".into(),
        });
    }
    config::set_path(&mut root, &path, value).map_err(|reason| ConfigError::Invalid {
        file: label.into(),
        path: key.into(),
        reason,
    })?;
    let old_cfg = {
        let mut before = match text {
            Some(t) => config::parse_json(label, t)?,
            None => json!({}),
        };
        config::apply_env_overrides(&mut before, env.clone().into_iter())
            .ok()
            .and_then(|_| config::from_value(label, before).ok())
    };
    let mut effective = root.clone();
    let applied = config::apply_env_overrides(&mut effective, env.into_iter())?;
    let new_cfg =
        config::from_value(label, effective).map_err(|e| config::blame_env(e, &applied))?;
    let mut out = serde_json::to_string_pretty(&root).map_err(|e| ConfigError::Invalid {
        file: label.into(),
        path: key.into(),
        reason: e.to_string(),
    })?;
    out.push('\n');
    let restart_needed = match old_cfg {
        Some(old) => config::reload::diff(&old, &new_cfg).restart_needed,
        None => RESTART_KEYS
            .iter()
            .filter(|k| key == **k || key.starts_with(&format!("{k}.")))
            .map(|k| format!("{k} changed"))
            .collect(),
    };
    Ok(SetOutcome {
        text: out,
        restart_needed,
    })
}

/// The line `config set` prints after writing.
pub fn set_message(key: &str, value: &Value, path: &Path, restart_needed: &[String]) -> String {
    let head = format!("{key} = {value} written to {}", path.display());
    if restart_needed.is_empty() {
        format!("{head} (a running node reloads it within a few seconds)")
    } else {
        format!(
            "{head}\nneeds a restart: {} — a running node keeps its current value until it is \
             restarted (other changes are reloaded within a few seconds)",
            restart_needed.join("; ")
        )
    }
}

/// Write `text` to `path` atomically: a temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "openclaw.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = f.set_permissions(meta.permissions());
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

pub fn run(cmd: ConfigCmd, fallback: &crate::cli::ConfigLocation) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Get { location, key } => {
            let loc = Resolved::of(&super::merge_location(location, fallback));
            let cfg = loc.load()?;
            match get_effective(&cfg, &key) {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(1)
                }
            }
        }
        ConfigCmd::Set {
            location,
            key,
            value,
        } => {
            let loc = Resolved::of(&super::merge_location(location, fallback));
            let text = read_optional(&loc.config_path)?;
            if text.is_none() && loc.required {
                anyhow::bail!(
                    "{}: no such file (create it, or leave out --config to use <data-dir>/openclaw.json)",
                    loc.config_path.display()
                );
            }
            let label = loc.config_path.display().to_string();
            match set_in_text(
                &label,
                text.as_deref(),
                &key,
                parse_value(&value),
                std::env::vars(),
            ) {
                Ok(set) => {
                    write_atomic(&loc.config_path, &set.text).map_err(|e| {
                        anyhow::anyhow!("writing {}: {e}", loc.config_path.display())
                    })?;
                    println!(
                        "{}",
                        set_message(
                            &key,
                            &parse_value(&value),
                            &loc.config_path,
                            &set.restart_needed
                        )
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: not written: {e}");
                    Ok(1)
                }
            }
        }
        ConfigCmd::Validate {
            location,
            file,
            json,
        } => {
            let loc = Resolved::of(&super::merge_location(location, fallback));
            let (path, required) = match file {
                Some(f) => (f, true),
                None => (loc.config_path.clone(), loc.required),
            };
            let res = config::load(Some(&path), required);
            if json {
                let v = match &res {
                    Ok(_) => json!({"valid": true, "file": path.display().to_string()}),
                    Err(e) => {
                        json!({"valid": false, "file": path.display().to_string(), "error": e.to_string()})
                    }
                };
                super::print_json(&v)?;
            } else {
                match &res {
                    Ok(_) => println!("{}: valid", path.display()),
                    Err(e) => eprintln!("invalid: {e}"),
                }
            }
            Ok(if res.is_ok() { 0 } else { 1 })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
  "server": {"workers": 2, "node_name": "n1"},
  "models": {"fast": {"provider": "sim", "price": {"input": 0.15, "output": 0.6}},
             "smart": {"provider": "sim", "price": {"input": 2.5, "output": 10.0}}},
  "model_routing": {"default_model": "fast"},
  "auth": {"token_env": "MY_TOKEN"}
}"#;

    fn no_env() -> std::vec::IntoIter<(String, String)> {
        Vec::new().into_iter()
    }

    #[test]
    fn values_parse_as_json_else_string() {
        assert_eq!(parse_value("16"), json!(16));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("[\"a\"]"), json!(["a"]));
        assert_eq!(parse_value("gpt-4o"), json!("gpt-4o"));
        assert_eq!(parse_value("\"80\""), json!("80"));
    }

    #[test]
    fn set_keeps_other_keys_and_their_order() {
        let out = set_in_text(
            "f.json",
            Some(FILE),
            "model_routing.default_model",
            json!("smart"),
            no_env(),
        )
        .unwrap()
        .text;
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["model_routing"]["default_model"], "smart");
        assert_eq!(v["server"], json!({"workers": 2, "node_name": "n1"}));
        assert_eq!(v["auth"]["token_env"], "MY_TOKEN");
        assert!(v.get("budget").is_none(), "defaults are not written");
        // Top-level order as in the file (server, models, model_routing, auth), not sorted.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["server", "models", "model_routing", "auth"]);
        // A new nested key creates its objects.
        let out = set_in_text(
            "f.json",
            Some(&out),
            "budget.limits.total_cost_usd",
            json!(80),
            no_env(),
        )
        .unwrap()
        .text;
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["budget"]["limits"]["total_cost_usd"], json!(80));
        // No file yet: starts from {}.
        let out = set_in_text("f.json", None, "server.workers", json!(3), no_env())
            .unwrap()
            .text;
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!({"server": {"workers": 3}})
        );
    }

    #[test]
    fn invalid_values_are_rejected_with_the_path() {
        let cases = [
            (
                "model_routing.default_model",
                json!("gpt-9"),
                "model_routing.default_model",
                "unknown model",
            ),
            ("server.workers", json!(0), "server.workers", "at least 1"),
            (
                "server.workers",
                json!("many"),
                "server.workers",
                "invalid type",
            ),
            ("server.workerz", json!(3), "server", "workerz"),
            (
                "server.workers.x",
                json!(3),
                "server.workers",
                "not an object",
            ),
            ("server..workers", json!(3), "server..workers", "dotted"),
        ];
        for (key, value, path, words) in cases {
            let e = set_in_text("f.json", Some(FILE), key, value.clone(), no_env())
                .unwrap_err()
                .to_string();
            assert!(e.contains(path), "{key}={value}: `{e}` should name {path}");
            assert!(e.contains(words), "{key}={value}: `{e}` should say {words}");
        }
        // Env overrides take part in the check (what the node would load).
        let env = vec![("OPENCLAW__SERVER__WORKERS".to_string(), "0".to_string())];
        assert!(set_in_text(
            "f.json",
            Some(FILE),
            "server.node_name",
            json!("x"),
            env.into_iter()
        )
        .is_err());
        // A syntax error in the file names line and column.
        let e = set_in_text(
            "f.json",
            Some("{\n  \"server\": ,\n}"),
            "server.workers",
            json!(1),
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn set_names_the_keys_that_need_a_restart() {
        // (key, value, restart expected to mention)
        let cases = [
            ("server.workers", json!(4), None),
            ("model_routing.default_model", json!("smart"), None),
            (
                "server.listen",
                json!("127.0.0.1:3999"),
                Some("server.listen"),
            ),
            ("auth.token_env", json!("OTHER"), Some("auth")),
            ("cluster.heartbeat_ms", json!(300), Some("cluster")),
            ("cache.knowledge_cache.enabled", json!(true), None),
            (
                "cache.knowledge_cache.preload_on_startup",
                json!(true),
                Some("cache.knowledge_cache.preload_on_startup"),
            ),
            (
                "models.fast.base_url",
                json!("http://127.0.0.1:9/v1"),
                Some("models.fast"),
            ),
        ];
        for (key, value, want) in cases {
            let set = set_in_text("f.json", Some(FILE), key, value.clone(), no_env()).unwrap();
            match want {
                None => assert!(set.restart_needed.is_empty(), "{key}: {set:?}"),
                Some(w) => assert!(
                    set.restart_needed.iter().any(|r| r.contains(w)),
                    "{key}: {:?}",
                    set.restart_needed
                ),
            }
            let msg = set_message(key, &value, Path::new("f.json"), &set.restart_needed);
            assert_eq!(msg.contains("needs a restart"), want.is_some(), "{msg}");
            assert_eq!(msg.contains("reloads it within"), want.is_none(), "{msg}");
        }
        // The old file does not load: the static list decides.
        let set = set_in_text(
            "f.json",
            Some(r#"{"server": {"workers": 0}}"#),
            "server.listen",
            json!("127.0.0.1:3999"),
            no_env(),
        );
        assert!(set.is_err(), "workers 0 is still invalid");
        let set = set_in_text(
            "f.json",
            Some(r#"{"server": {"workers": 0}}"#),
            "server.workers",
            json!(2),
            no_env(),
        )
        .unwrap();
        assert!(set.restart_needed.is_empty(), "{set:?}");
    }

    #[test]
    fn get_reads_effective_values() {
        let cfg = config::from_value("f", serde_json::from_str(FILE).unwrap()).unwrap();
        assert_eq!(get_effective(&cfg, "server.workers").unwrap(), json!(2));
        // A default the file does not mention.
        assert_eq!(
            get_effective(&cfg, "server.queue_max").unwrap(),
            json!(10_000)
        );
        assert_eq!(
            get_effective(&cfg, "models.smart.price.input").unwrap(),
            json!(2.5)
        );
        assert!(get_effective(&cfg, "server.nope").is_err());
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("openclaw.json");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }
}
