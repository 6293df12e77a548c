//! Host-side bindings, generated once per world. The shared `types` and
//! `host` interfaces are generated once (in [`base`]) and reused by the four
//! kind worlds; `wasi:*` comes from wasmtime-wasi and wasmtime-wasi-http.

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
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../../wit",
                world: $world,
                exports: { default: async },
                require_store_data_send: true,
                with: {
                    "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                    "wasi:io": wasmtime_wasi::p2::bindings::io,
                    "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                    "rollcage:plugin/types": super::base::rollcage::plugin::types,
                    "rollcage:plugin/host": super::base::rollcage::plugin::host,
                },
            });
        }
    };
}

kind_world!(provider, "rollcage:plugin/environment-provider");

/// Strategies import no `wasi:http`, so their bindings map only the
/// rollcage interfaces.
pub mod strategy {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "rollcage:plugin/strategy",
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "rollcage:plugin/types": super::base::rollcage::plugin::types,
            "rollcage:plugin/host": super::base::rollcage::plugin::host,
        },
    });
}
kind_world!(health_check, "rollcage:plugin/health-check");
kind_world!(notifier, "rollcage:plugin/notifier");

pub use base::rollcage::plugin::host;
pub use base::rollcage::plugin::types as wit;
