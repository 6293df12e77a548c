//! Host-side bindings, generated once per world and contract version. The
//! shared `types` and `host` interfaces are generated once per version (in
//! [`base`] and [`v0_1::base`]) and reused by that version's kind worlds;
//! `wasi:*` comes from wasmtime-wasi and wasmtime-wasi-http.
//!
//! The current contract is `wit/` (`rollcage:plugin@0.2.0`); the frozen
//! `wit/v0.1.0/` is still served so that components built before 0.2 keep
//! working. `convert` adapts each version's values to `rollcage-core`'s.

pub mod base {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rollcage:plugin/plugin",
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

macro_rules! kind_world {
    ($module:ident, $path:literal, $world:literal) => {
        pub mod $module {
            use super::base;
            wasmtime::component::bindgen!({
                path: $path,
                world: $world,
                exports: { default: async },
                require_store_data_send: true,
                with: {
                    "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                    "wasi:io": wasmtime_wasi::p2::bindings::io,
                    "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                    "rollcage:plugin/types": base::rollcage::plugin::types,
                    "rollcage:plugin/host": base::rollcage::plugin::host,
                },
            });
        }
    };
}

/// Strategies import no `wasi:http`, so their bindings map only the
/// rollcage interfaces.
macro_rules! strategy_world {
    ($path:literal) => {
        pub mod strategy {
            use super::base;
            wasmtime::component::bindgen!({
                path: $path,
                world: "rollcage:plugin/strategy",
                exports: { default: async },
                require_store_data_send: true,
                with: {
                    "rollcage:plugin/types": base::rollcage::plugin::types,
                    "rollcage:plugin/host": base::rollcage::plugin::host,
                },
            });
        }
    };
}

kind_world!(
    provider,
    "../../wit",
    "rollcage:plugin/environment-provider"
);
strategy_world!("../../wit");
kind_world!(health_check, "../../wit", "rollcage:plugin/health-check");
kind_world!(notifier, "../../wit", "rollcage:plugin/notifier");
kind_world!(exposure, "../../wit", "rollcage:plugin/exposure");

/// The frozen `rollcage:plugin@0.1.0` (`wit/v0.1.0/`): four kinds, no exposure.
pub mod v0_1 {
    pub mod base {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "rollcage:plugin/plugin",
            require_store_data_send: true,
            with: {
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    }

    kind_world!(
        provider,
        "../../wit/v0.1.0",
        "rollcage:plugin/environment-provider"
    );
    strategy_world!("../../wit/v0.1.0");
    kind_world!(
        health_check,
        "../../wit/v0.1.0",
        "rollcage:plugin/health-check"
    );
    kind_world!(notifier, "../../wit/v0.1.0", "rollcage:plugin/notifier");

    pub use base::rollcage::plugin::types as wit;
}

pub use base::rollcage::plugin::host;
pub use base::rollcage::plugin::types as wit;
