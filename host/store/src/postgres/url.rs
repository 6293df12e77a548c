//! Connection strings as they may be shown: in errors and logs, the
//! password of a `postgres://` URL or a `key=value` string is replaced by
//! `***`, wherever it is given (user info, `?password=` or `password=`).

/// `url` with its password, if any, replaced by `***`.
pub fn mask_password(url: &str) -> String {
    let url = url.trim();
    if let Some(rest) = strip_scheme(url) {
        let scheme = &url[..url.len() - rest.len()];
        format!("{scheme}{}", mask_url_rest(rest))
    } else {
        mask_key_values(url)
    }
}

/// What follows `postgres://` or `postgresql://`, if `url` starts so.
fn strip_scheme(url: &str) -> Option<&str> {
    ["postgres://", "postgresql://"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
}

/// `user:password@host/db?query` with the password masked in the user
/// info and in the query.
fn mask_url_rest(rest: &str) -> String {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    // The last `@`: a password written without percent-encoding may
    // hold one, a host never does.
    let main = match main.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => main.to_string(),
        },
        None => main.to_string(),
    };
    match query {
        Some(q) => format!("{main}?{}", mask_query(q)),
        None => main,
    }
}

/// `a=1&password=x` as `a=1&password=***`.
fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `host=db password='a b' user=x` as `host=db password=*** user=x`:
/// libpq's key/value form, where a value may be quoted.
fn mask_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = find_password_key(rest) {
        out.push_str(&rest[..at]);
        let after_key = &rest[at..];
        let eq = after_key.find('=').map_or(after_key.len(), |i| i + 1);
        out.push_str(&after_key[..eq]);
        out.push_str("***");
        rest = skip_value(after_key[eq..].trim_start());
    }
    out.push_str(rest);
    out
}

/// Where a `password =` key starts in `s`, at the start or after a space.
fn find_password_key(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let at = from + i;
        let starts_word = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let is_key = lower[at + "password".len()..].trim_start().starts_with('=');
        if starts_word && is_key {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// What follows a value: a quoted one ends at its closing quote (`\'` is
/// a quote inside it), a bare one at the next space.
fn skip_value(v: &str) -> &str {
    if let Some(quoted) = v.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return &quoted[i + 1..],
                _ => escaped = false,
            }
        }
        ""
    } else {
        v.find(char::is_whitespace).map_or("", |i| &v[i..])
    }
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn the_password_of_a_url_is_masked() {
        assert_eq!(
            mask_password("postgres://rollcage:s3cret@db.internal:5432/rollcage"),
            "postgres://rollcage:***@db.internal:5432/rollcage"
        );
        assert_eq!(
            mask_password("postgresql://u:p@ss:w@rd@host/db?sslmode=require"),
            "postgresql://u:***@host/db?sslmode=require"
        );
        assert_eq!(
            mask_password("postgres://u@host/db?password=x&application_name=r"),
            "postgres://u@host/db?password=***&application_name=r"
        );
    }

    #[test]
    fn a_url_without_a_password_is_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/rollcage",
            "postgres://localhost/db",
            "postgres:///db?host=/run/postgresql",
        ] {
            assert_eq!(mask_password(url), url);
        }
    }

    #[test]
    fn the_password_of_a_key_value_string_is_masked() {
        assert_eq!(
            mask_password("host=db user=r password=s3cret dbname=x"),
            "host=db user=r password=*** dbname=x"
        );
        assert_eq!(
            mask_password("host=db password = 'a \\' b' dbname=x"),
            "host=db password =*** dbname=x"
        );
        assert_eq!(mask_password("password=x"), "password=***");
        assert_eq!(mask_password("host=db passfile=/p"), "host=db passfile=/p");
    }
}
