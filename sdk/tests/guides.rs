//! The guides in `sdk/guides/` show only code that CI builds: every fenced
//! block marked `<!-- from: PATH -->` must be a verbatim excerpt of PATH (a
//! project template, an example or a first-party plugin), and every block
//! of code without such a marker is reported.

use std::path::Path;

#[test]
fn guide_code_is_an_excerpt_of_built_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    let mut checked = 0;
    for guide in ["rust.md", "python.md", "javascript.md"] {
        let path = root.join("sdk/guides").join(guide);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(lang) = lines[i].strip_prefix("```") else {
                i += 1;
                continue;
            };
            let start = i;
            let mut body = String::new();
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            i += 1;
            let marker = start
                .checked_sub(1)
                .and_then(|p| lines[p].strip_prefix("<!-- from: "))
                .and_then(|m| m.strip_suffix(" -->"));
            match marker {
                Some(source) => {
                    let src = std::fs::read_to_string(root.join(source))
                        .unwrap_or_else(|e| panic!("{guide}:{}: {source}: {e}", start + 1));
                    checked += 1;
                    if !src.contains(&body) {
                        problems.push(format!("{guide}:{}: not an excerpt of {source}", start + 1));
                    }
                }
                None if ["python", "js", "javascript", "rust"].contains(&lang) => {
                    problems.push(format!(
                        "{guide}:{}: {lang} block without `<!-- from: PATH -->`",
                        start + 1
                    ));
                }
                None => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 30, "only {checked} blocks checked");
}
