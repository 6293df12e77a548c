//! The host interface every plugin imports (`rollcage:plugin/host`: `log`,
//! `config`, `secret`), and the per-call budget of what a plugin writes to
//! the host's log through `log`, stdout and stderr.
//!
//! A call keeps at most `limits.log_lines` lines and `limits.log_bytes`
//! bytes; a line longer than `limits.log_line_bytes` is cut, and lines past
//! the budget are dropped and counted, with one warning at the end of the
//! call. Control characters are escaped (`\n`, `\u{1b}`), so a plugin can
//! neither end a host log line and forge the next nor drive the terminal.
//!
//! The interface is linked by hand rather than through the generated
//! bindings: a generated function copies every string argument into host
//! memory before the host sees any of it, and a list can name the same
//! large string thousands of times at a few bytes of guest memory each.
//! Here strings are read in place, up to what the host keeps of them.

use rollcage_core::{Limits, PluginId};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList, WasmStr};

use crate::bindings::host::Level;
use crate::state::CallState;
use crate::text::{clip, escape_controls, floor_boundary};

/// The log budget of one call.
pub struct LogBudget {
    lines_left: u64,
    bytes_left: u64,
    line_bytes: usize,
    /// Lines dropped past the budget.
    pub dropped: u64,
    /// Lines cut to `log_line_bytes`.
    pub cut: u64,
}

impl LogBudget {
    pub fn new(limits: &Limits) -> Self {
        LogBudget {
            lines_left: limits.log_lines,
            bytes_left: limits.log_bytes,
            line_bytes: usize::try_from(limits.log_line_bytes).unwrap_or(usize::MAX),
            dropped: 0,
            cut: 0,
        }
    }

    /// The bytes the next line may have, or `None` (and the line counted as
    /// dropped) when the budget is spent.
    fn take_line(&mut self) -> Option<usize> {
        if self.lines_left == 0 || self.bytes_left == 0 {
            self.dropped += 1;
            return None;
        }
        self.lines_left -= 1;
        Some(
            self.line_bytes
                .min(usize::try_from(self.bytes_left).unwrap_or(usize::MAX)),
        )
    }

    /// Charge `line` (already within the size [`Self::take_line`] gave)
    /// and return it escaped for the log.
    fn charge(&mut self, line: &str, was_cut: bool) -> String {
        self.bytes_left = self.bytes_left.saturating_sub(line.len() as u64);
        if was_cut {
            self.cut += 1;
        }
        escape_controls(line).into_owned()
    }

    /// A line of stdout or stderr: cut, charged, escaped; `None` if dropped.
    pub fn admit(&mut self, line: &str) -> Option<String> {
        let max = self.take_line()?;
        let end = floor_boundary(line, max);
        Some(self.charge(&line[..end], end < line.len()))
    }

    /// The one warning about what the budget dropped or cut, if anything.
    pub fn report(&self, plugin: &PluginId, limits: &Limits) {
        if self.dropped > 0 || self.cut > 0 {
            tracing::warn!(
                plugin = %plugin,
                dropped = self.dropped,
                cut = self.cut,
                "plugin log over its limits: {} lines dropped (limits.log_lines = {}, limits.log_bytes = {}), {} lines cut (limits.log_line_bytes = {})",
                self.dropped,
                limits.log_lines,
                limits.log_bytes,
                self.cut,
                limits.log_line_bytes
            );
        }
    }
}

/// Link `rollcage:plugin/host` of every served contract version: the
/// interface is the same in each, so one implementation serves them all.
pub fn link(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    for version in rollcage_core::WIT_SERVED {
        let mut host = linker.instance(&format!("rollcage:plugin/host@{version}"))?;
        host.func_wrap("log", log)?;
        host.func_wrap("config", config)?;
        host.func_wrap("secret", secret)?;
    }
    Ok(())
}

/// The most bytes of a secret's name the host reads: names are short
/// identifiers (`SLACK_WEBHOOK_URL`), and the name is quoted in errors.
const SECRET_NAME_BYTES: usize = 128;

fn config(store: StoreContextMut<'_, CallState>, (): ()) -> wasmtime::Result<(String,)> {
    Ok((store.data().plugin.config_json.clone(),))
}

fn secret(
    mut store: StoreContextMut<'_, CallState>,
    (name,): (WasmStr,),
) -> wasmtime::Result<(Result<String, String>,)> {
    let name = clip(&name.to_str(&store)?, SECRET_NAME_BYTES).into_owned();
    let data = store.data_mut();
    let id = data.plugin.id.clone();
    if !data.plugin.grants.secrets.contains(&name) {
        data.deny("secrets", format!("secret `{name}` is not granted"));
        return Ok((Err(format!(
            "secret `{name}` is not granted to plugin `{id}`"
        )),));
    }
    Ok((data
        .plugin
        .secrets
        .get(&name)
        .ok_or_else(|| format!("secret `{name}` is granted to plugin `{id}` but has no value")),))
}

type LogArgs = (Level, WasmStr, WasmList<(WasmStr, WasmStr)>);

fn log(
    mut store: StoreContextMut<'_, CallState>,
    (level, message, fields): LogArgs,
) -> wasmtime::Result<()> {
    let Some(max) = store.data_mut().log.take_line() else {
        return Ok(());
    };
    // The message, then `k=v` pairs, read in place up to `max` bytes.
    let mut text = String::new();
    let mut cut = push_clipped(&mut text, &message.to_str(&store)?, max);
    let mut pairs = String::new();
    for i in 0..fields.len() {
        let room = max.saturating_sub(text.len());
        if pairs.len() >= room {
            cut = true;
            break;
        }
        let Some(pair) = fields.get(&mut store, i) else {
            break;
        };
        let (k, v) = pair?;
        if !pairs.is_empty() {
            cut |= push_clipped(&mut pairs, " ", room);
        }
        cut |= push_clipped(&mut pairs, &k.to_str(&store)?, room);
        cut |= push_clipped(&mut pairs, "=", room);
        cut |= push_clipped(&mut pairs, &v.to_str(&store)?, room);
    }
    let data = store.data_mut();
    let message = data.log.charge(&text, cut);
    let fields = data.log.charge(&pairs, false);
    let id = &data.plugin.id;
    match level {
        Level::Trace => tracing::trace!(plugin = %id, fields, "{message}"),
        Level::Debug => tracing::debug!(plugin = %id, fields, "{message}"),
        Level::Info => tracing::info!(plugin = %id, fields, "{message}"),
        Level::Warn => tracing::warn!(plugin = %id, fields, "{message}"),
        Level::Error => tracing::error!(plugin = %id, fields, "{message}"),
    }
    Ok(())
}

/// Append as much of `s` as fits in `max` bytes; true if some was left out.
fn push_clipped(line: &mut String, s: &str, max: usize) -> bool {
    let room = max.saturating_sub(line.len());
    let end = floor_boundary(s, room);
    line.push_str(&s[..end]);
    end < s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_cuts_long_lines_and_drops_lines_past_it() {
        let limits = Limits {
            log_lines: 3,
            log_line_bytes: 64,
            log_bytes: 100,
            ..Limits::default()
        };
        let mut b = LogBudget::new(&limits);
        assert_eq!(b.admit("short").as_deref(), Some("short"));
        let long = "x".repeat(200);
        assert_eq!(b.admit(&long).unwrap().len(), 64);
        assert_eq!(b.cut, 1);
        // 100 - 5 - 64 = 31 bytes left for the third line.
        assert_eq!(b.admit(&long).unwrap().len(), 31);
        assert_eq!(b.admit("one more"), None);
        assert_eq!(b.dropped, 1);
        assert_eq!(b.admit("a\nb").as_deref(), None);
    }

    #[test]
    fn escapes_stay_on_one_line() {
        let mut b = LogBudget::new(&Limits::default());
        assert_eq!(
            b.admit("a\nERROR forged").as_deref(),
            Some("a\\nERROR forged")
        );
    }
}
