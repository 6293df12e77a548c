//! Deployment windows: `Mon-Thu 02:00-05:00 UTC`, `Sat,Sun 00:00-24:00 UTC`,
//! `Mon-Fri 22:00-02:00 UTC` (a window may cross midnight; it then belongs to
//! the day it starts on). Only UTC is understood for now.

use std::fmt;
use std::str::FromStr;

/// A weekly deployment window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Days it opens on, Monday = 0.
    days: [bool; 7],
    /// Opening and closing minute of the day; `end <= start` crosses midnight.
    start: u32,
    end: u32,
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Option<usize> {
    DAYS.iter().position(|d| s.eq_ignore_ascii_case(d))
}

fn minute(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl FromStr for Window {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid window `{text}`: {why}; for example `Mon-Thu 02:00-05:00 UTC`")
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days_part, hours, zone] = parts.as_slice() else {
            return Err(bad("expected days, hours and a time zone"));
        };
        if !zone.eq_ignore_ascii_case("UTC") {
            return Err(bad("only UTC is supported"));
        }
        let mut days = [false; 7];
        for item in days_part.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (
                        day(a).ok_or_else(|| bad("unknown day"))?,
                        day(b).ok_or_else(|| bad("unknown day"))?,
                    );
                    let mut d = a;
                    loop {
                        days[d] = true;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => days[day(item).ok_or_else(|| bad("unknown day"))?] = true,
            }
        }
        let (s, e) = hours
            .split_once('-')
            .ok_or_else(|| bad("expected hours as HH:MM-HH:MM"))?;
        let start = minute(s).ok_or_else(|| bad("invalid start time"))?;
        let end = minute(e).ok_or_else(|| bad("invalid end time"))?;
        if start == end {
            return Err(bad("the window is empty"));
        }
        Ok(Window {
            days,
            start,
            end,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// Whether the window is open at `unix_secs` (UTC).
    pub fn is_open(&self, unix_secs: u64) -> bool {
        let days_since_epoch = unix_secs / 86_400;
        // 1970-01-01 was a Thursday (index 3).
        let weekday = ((days_since_epoch + 3) % 7) as usize;
        let minute_of_day = ((unix_secs % 86_400) / 60) as u32;
        if self.start < self.end {
            self.days[weekday] && (self.start..self.end).contains(&minute_of_day)
        } else {
            let yesterday = (weekday + 6) % 7;
            (self.days[weekday] && minute_of_day >= self.start)
                || (self.days[yesterday] && minute_of_day < self.end)
        }
    }

    /// Seconds from `unix_secs` until the window next opens (0 when open).
    pub fn wait_secs(&self, unix_secs: u64) -> u64 {
        let mut t = unix_secs;
        // Minute steps over at most eight days.
        for _ in 0..(8 * 24 * 60) {
            if self.is_open(t) {
                return t - unix_secs;
            }
            t = (t / 60 + 1) * 60;
        }
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26 is a Thursday.
    const THU_0000: u64 = 1_795_651_200;

    fn at(day_offset: u64, h: u64, m: u64) -> u64 {
        THU_0000 + day_offset * 86_400 + h * 3600 + m * 60
    }

    #[test]
    fn windows_open_and_close() {
        let w: Window = "Mon-Thu 02:00-05:00 UTC".parse().unwrap();
        assert!(w.is_open(at(0, 2, 0)));
        assert!(w.is_open(at(0, 4, 59)));
        assert!(!w.is_open(at(0, 5, 0)));
        assert!(!w.is_open(at(1, 3, 0)), "Friday");
        assert!(w.is_open(at(4, 3, 0)), "Monday");
        assert_eq!(w.wait_secs(at(0, 1, 0)), 3600);
        assert_eq!(w.wait_secs(at(1, 3, 0)), 3 * 86_400 - 3600);
    }

    #[test]
    fn windows_may_cross_midnight_and_list_days() {
        let w: Window = "Fri,Sat 22:00-02:00 UTC".parse().unwrap();
        assert!(w.is_open(at(1, 23, 0)), "Friday night");
        assert!(w.is_open(at(2, 1, 0)), "after Friday's midnight");
        assert!(!w.is_open(at(0, 23, 0)), "Thursday");
        assert!(!w.is_open(at(4, 1, 0)), "Monday early, after Sunday");
        let wrap: Window = "Sat-Mon 00:00-24:00 UTC".parse().unwrap();
        assert!(wrap.is_open(at(3, 12, 0)), "Sunday");
    }

    #[test]
    fn bad_windows_say_why() {
        for (bad, why) in [
            (
                "Mon-Thu 02:00-05:00",
                "expected days, hours and a time zone",
            ),
            ("Mon-Thu 02:00-05:00 CET", "only UTC"),
            ("Mon-Thurs 02:00-05:00 UTC", "unknown day"),
            ("Mon 2-5 UTC", "invalid start time"),
            ("Mon 25:00-05:00 UTC", "invalid start time"),
            ("Mon 05:00-05:00 UTC", "empty"),
        ] {
            let e = bad.parse::<Window>().unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("`{bad}`")),
                "{bad}: {e}"
            );
        }
    }
}
