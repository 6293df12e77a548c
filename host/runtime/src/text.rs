//! Text that comes from a plugin, made safe to log, store and send: cut to
//! a size (the plugin chose how much to write, the host chooses how much to
//! keep) and, for text logs, with control characters escaped so that a
//! plugin cannot end a log line and forge the next one.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` cut to at most `max` bytes (at a character boundary), with
/// `… [cut: N bytes]` at its end saying how much was dropped.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let end = floor_boundary(text, max);
    Cow::Owned(format!(
        "{}… [cut: {} bytes]",
        &text[..end],
        text.len() - end
    ))
}

/// `text` cut to its last `max` bytes, with `[cut: N bytes] …` at its start:
/// for output whose end matters most (a job's last lines).
pub fn clip_tail(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Cow::Owned(format!("[cut: {start} bytes] …{}", &text[start..]))
}

/// [`clip`] for an owned string, without copying when it fits.
pub fn clip_owned(text: String, max: usize) -> String {
    if text.len() <= max {
        text
    } else {
        clip(&text, max).into_owned()
    }
}

/// `text` with every control character (line breaks, escape sequences,
/// the Unicode line and paragraph separators) written as an escape, so
/// that it stays on one log line and cannot colour or move the terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let needs = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The largest character boundary at or below `max`.
pub fn floor_boundary(text: &str, max: usize) -> usize {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole_and_long_text_says_what_was_cut() {
        assert_eq!(clip("hello", 5), "hello");
        assert_eq!(clip("hello world", 5), "hello… [cut: 6 bytes]");
        // Never inside a character.
        assert_eq!(clip("ééé", 3), "é… [cut: 4 bytes]");
        assert_eq!(clip_tail("line1\nline2", 5), "[cut: 6 bytes] …line2");
        assert_eq!(clip_owned("x".repeat(10), 4), "xxxx… [cut: 6 bytes]");
    }

    #[test]
    fn control_characters_cannot_start_a_new_log_line() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR rollcage_engine: run r42 approved by admin";
        let escaped = escape_controls(forged);
        assert!(!escaped.contains('\n'));
        assert!(escaped.starts_with("ok\\n2026"));
        assert_eq!(
            escape_controls("a\u{1b}[31mred\r\u{2028}"),
            "a\\u{1b}[31mred\\r\\u{2028}"
        );
        assert!(matches!(escape_controls("plain é"), Cow::Borrowed(_)));
    }
}
