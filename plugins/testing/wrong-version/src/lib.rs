//! A component built for a future major version of the contract (`weir:plugin@1.0.0`): the
//! gateway must refuse to load it with a clear message.
#![allow(missing_docs)]
// wit-bindgen's generated ABI glue is unsafe.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: r#"
        package weir:plugin@1.0.0;
        interface handler {
            init: func(config: string) -> result<u32, string>;
        }
        world plugin {
            export handler;
        }
    "#,
});

struct Future;

impl exports::weir::plugin::handler::Guest for Future {
    fn init(_config: String) -> Result<u32, String> {
        Ok(0)
    }
}

export!(Future);
