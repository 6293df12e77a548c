//! Per-plugin resource limits (pure data, shared by the configuration, the
//! runtime and the documentation).
//!
//! A plugin's budget covers what it holds in its own instance (linear
//! memories and tables, counted together against `memory_mb`) *and* what it
//! makes the host hold for it: entries in the host's resource table,
//! outgoing HTTP requests and their bodies, log lines, and the text it
//! returns. Every limit applies to one call (each call gets a fresh
//! instance), has a default, and can be set per plugin in
//! `limits = { ... }`. [`LIMITS`] is the one table of them: the
//! configuration validates against it and the README lists it.

/// Every limit of one plugin instance. [`Limits::default`] holds the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// All linear memories and tables of the instance together, in MiB
    /// (table elements count as 8 bytes each).
    pub memory_mb: u64,
    /// Wall time of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Core instances one component may create.
    pub instances: u64,
    /// Linear memories one component may create.
    pub memories: u64,
    /// Tables one component may create.
    pub tables: u64,
    /// Entries in the host's resource table (streams, HTTP requests,
    /// responses, fields, bodies) held at once.
    pub resources: u64,
    /// Outgoing HTTP requests created in one call.
    pub http_requests: u64,
    /// Outgoing HTTP requests in flight at once (each holds a connection).
    pub http_in_flight: u64,
    /// Bytes of one outgoing request body, in KiB.
    pub request_body_kb: u64,
    /// Bytes of one response body the plugin may read, in KiB.
    pub response_body_kb: u64,
    /// Log lines (host `log` calls, stdout and stderr lines) kept per call.
    pub log_lines: u64,
    /// Bytes of one log line (message and fields); longer lines are cut.
    pub log_line_bytes: u64,
    /// Bytes of all log lines of one call together.
    pub log_bytes: u64,
    /// Bytes of any text the plugin returns (an error, a measurement's
    /// detail, a job's output) before the host logs, stores or sends it.
    pub text_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let mut limits = Limits::zero();
        for spec in LIMITS {
            (spec.set)(&mut limits, spec.default);
        }
        limits
    }
}

impl Limits {
    fn zero() -> Self {
        Limits {
            memory_mb: 0,
            timeout_ms: 0,
            instances: 0,
            memories: 0,
            tables: 0,
            resources: 0,
            http_requests: 0,
            http_in_flight: 0,
            request_body_kb: 0,
            response_body_kb: 0,
            log_lines: 0,
            log_line_bytes: 0,
            log_bytes: 0,
            text_bytes: 0,
        }
    }

    /// The value of the limit named `name` (a key of [`LIMITS`]).
    pub fn get(&self, name: &str) -> Option<u64> {
        LIMITS
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.get)(self))
    }

    /// Set the limit named `name`, checking its range; the error says the
    /// key, the value and the range.
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
        let spec = LIMITS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("unknown limit `{name}`"))?;
        if !(spec.min..=spec.max).contains(&value) {
            return Err(format!(
                "limits.{name} = {value} is outside {}-{}{}",
                spec.min,
                spec.max,
                spec.max_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        (spec.set)(self, value);
        Ok(())
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// One limit: its key in `limits = { ... }`, default, range and meaning.
pub struct LimitSpec {
    pub name: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    /// Why the maximum is what it is, when it is not arbitrary.
    pub max_reason: Option<&'static str>,
    /// What the limit bounds, for documentation.
    pub what: &'static str,
    /// What the plugin sees when it reaches the limit.
    pub when_hit: &'static str,
    get: fn(&Limits) -> u64,
    set: fn(&mut Limits, u64),
}

/// The largest linear memory the runtime's pooling allocator reserves; a
/// larger `memory_mb` could never be given.
pub const MEMORY_MB_MAX: u64 = 1024;
/// The most core instances, memories and tables the pooling allocator
/// reserves for one component.
pub const INSTANCES_MAX: u64 = 64;
pub const MEMORIES_MAX: u64 = 16;
pub const TABLES_MAX: u64 = 64;

macro_rules! spec {
    ($f:ident, $default:expr, $min:expr, $max:expr, $reason:expr, $what:expr, $hit:expr) => {
        LimitSpec {
            name: stringify!($f),
            default: $default,
            min: $min,
            max: $max,
            max_reason: $reason,
            what: $what,
            when_hit: $hit,
            get: |l: &Limits| l.$f,
            set: |l: &mut Limits, v: u64| l.$f = v,
        }
    };
}

/// Every limit, in the order the README lists them.
pub const LIMITS: &[LimitSpec] = &[
    spec!(
        memory_mb,
        64,
        1,
        MEMORY_MB_MAX,
        Some("the largest memory the runtime reserves"),
        "all linear memories and tables of one instance together, in MiB",
        "the call stops: `was stopped at its memory limit of N MiB`"
    ),
    spec!(
        timeout_ms,
        10_000,
        1,
        600_000,
        None,
        "wall time of one call, in milliseconds",
        "the call stops: `was stopped after its time limit of N ms`"
    ),
    spec!(
        instances,
        // A Python component (an interpreter linked from several modules)
        // creates about 40.
        64,
        1,
        INSTANCES_MAX,
        Some("what the runtime reserves per component"),
        "core instances one component creates",
        "instantiation fails: `hit its limit limits.instances`"
    ),
    spec!(
        memories,
        4,
        1,
        MEMORIES_MAX,
        Some("what the runtime reserves per component"),
        "linear memories one component creates",
        "instantiation fails: `hit its limit limits.memories`"
    ),
    spec!(
        tables,
        16,
        1,
        TABLES_MAX,
        Some("what the runtime reserves per component"),
        "tables one component creates",
        "instantiation fails: `hit its limit limits.tables`"
    ),
    spec!(
        resources,
        1_000,
        16,
        100_000,
        None,
        "host resources (streams, HTTP requests, responses, fields) held at once",
        "the call stops: `hit its limit limits.resources`"
    ),
    spec!(
        http_requests,
        100,
        0,
        10_000,
        None,
        "outgoing HTTP requests sent in one call",
        "sending one more fails with an error naming the limit"
    ),
    spec!(
        http_in_flight,
        8,
        1,
        256,
        None,
        "outgoing HTTP requests in flight at once",
        "sending one more fails with an error naming the limit until one ends"
    ),
    spec!(
        request_body_kb,
        1_024,
        0,
        1 << 20,
        None,
        "bytes of one outgoing request body, in KiB",
        "the request fails with an error naming the limit"
    ),
    spec!(
        response_body_kb,
        16_384,
        0,
        1 << 20,
        None,
        "bytes of one response body the plugin reads, in KiB",
        "reading the body fails past the limit with an error naming it"
    ),
    spec!(
        log_lines,
        200,
        0,
        100_000,
        None,
        "log lines (host `log`, stdout, stderr) kept per call",
        "further lines are dropped and counted; one warning says how many"
    ),
    spec!(
        log_line_bytes,
        4_096,
        64,
        1 << 20,
        None,
        "bytes of one log line, message and fields",
        "the line is cut; one warning counts the lines cut"
    ),
    spec!(
        log_bytes,
        65_536,
        64,
        16 << 20,
        None,
        "bytes of all log lines of one call",
        "further lines are dropped and counted; one warning says how many"
    ),
    spec!(
        text_bytes,
        4_096,
        256,
        1 << 20,
        None,
        "bytes of text a plugin returns (errors, details, job output)",
        "the text is cut, with `[cut: N bytes]` (a job's output keeps its end)"
    ),
];

/// The README's table of limits, one row per limit.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| limit | default | range | what it bounds | what the plugin sees at the limit |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for s in LIMITS {
        table.push_str(&format!(
            "| `{}` | {} | {}-{} | {} | {} |\n",
            s.name, s.default, s.min, s.max, s.what, s.when_hit
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_limit_as_the_code_has_it() {
        let readme = include_str!("../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's table of limits differs from the code; it should read:\n{table}"
        );
    }

    #[test]
    fn defaults_come_from_the_table_and_are_in_range() {
        let d = Limits::default();
        assert_eq!(d.memory_mb, 64);
        assert_eq!(d.timeout_ms, 10_000);
        for spec in LIMITS {
            let v = d.get(spec.name).unwrap();
            assert_eq!(v, spec.default, "{}", spec.name);
            assert!((spec.min..=spec.max).contains(&v), "{}", spec.name);
            assert_ne!(v, 0, "{} has no default", spec.name);
        }
    }

    #[test]
    fn setting_checks_the_range_and_names_the_key() {
        let mut l = Limits::default();
        l.set("log_lines", 10).unwrap();
        assert_eq!(l.log_lines, 10);
        assert_eq!(
            l.set("memory_mb", 4096).unwrap_err(),
            "limits.memory_mb = 4096 is outside 1-1024 (the largest memory the runtime reserves)"
        );
        assert_eq!(l.set("nope", 1).unwrap_err(), "unknown limit `nope`");
    }
}
