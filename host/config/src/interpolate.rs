//! `${VAR}` in configuration strings: replaced by the environment variable
//! when the configuration is read. `${secret:NAME}` is left for the plugin
//! runtime to fill in from the secret source, so a secret's value never
//! enters the parsed configuration, logs or error messages; the plugin must
//! be granted `NAME`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Replace `${VAR}` throughout `value`'s strings. Returns every problem,
/// each naming the key path under `path`.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    granted: Option<&[String]>,
    problems: &mut Vec<String>,
) {
    match value {
        Value::String(s) => match expand(s, vars, granted) {
            Ok(out) => *s = out,
            Err(e) => problems.push(format!("{path}: {e}")),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), vars, granted, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                interpolate(v, &format!("{path}.{k}"), vars, granted, problems);
            }
        }
        _ => {}
    }
}

fn expand(
    s: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    granted: Option<&[String]>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
        let name = &after[..end];
        if let Some(secret) = name.strip_prefix("secret:") {
            match granted {
                Some(g) if g.iter().any(|n| n == secret) => {
                    out.push_str(&format!("${{secret:{secret}}}"))
                }
                Some(_) => {
                    return Err(format!(
                        "`${{secret:{secret}}}` is not in this plugin's `secrets`"
                    ));
                }
                None => {
                    return Err(format!(
                        "`${{secret:{secret}}}` can only be used in a plugin's config"
                    ));
                }
            }
        } else {
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid variable `${{{name}}}`"));
            }
            out.push_str(
                &vars(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?,
            );
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fill `${secret:NAME}` references with values from `lookup`; used when a
/// plugin is loaded, never stored.
pub fn fill_secrets(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${secret:") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 9..];
                let end = after.find('}').ok_or("unclosed `${secret:`")?;
                let name = &after[..end];
                out.push_str(&lookup(name).ok_or_else(|| format!("secret `{name}` has no value"))?);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill_secrets(v, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_secrets(v, lookup)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The variables of `map`, or of the process environment.
pub fn lookup_in(map: Option<&BTreeMap<String, String>>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| match map {
        Some(m) => m.get(name).cloned(),
        None => std::env::var(name).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_and_secrets() {
        let vars = |n: &str| (n == "DB_HOST").then(|| "db.internal".to_string());
        let granted = vec!["TOKEN".to_string()];
        let mut v =
            json!({"url": "postgres://${DB_HOST}:5432", "auth": "Bearer ${secret:TOKEN}", "n": 3});
        let mut problems = Vec::new();
        interpolate(&mut v, "config", &vars, Some(&granted), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v["url"], "postgres://db.internal:5432");
        assert_eq!(v["auth"], "Bearer ${secret:TOKEN}");
        let filled = fill_secrets(&v, &|n| (n == "TOKEN").then(|| "t0k".into())).unwrap();
        assert_eq!(filled["auth"], "Bearer t0k");

        let mut bad = json!({"a": "${MISSING}", "b": ["${secret:OTHER}"], "c": "${oops"});
        interpolate(&mut bad, "config", &vars, Some(&granted), &mut problems);
        assert_eq!(
            problems,
            [
                "config.a: environment variable `MISSING` is not set",
                "config.b[0]: `${secret:OTHER}` is not in this plugin's `secrets`",
                "config.c: unclosed `${` in \"${oops\"",
            ]
        );
    }
}
