//! `unknown-import`: a wasi:http test component that ALSO imports `zero:nonexistent/thing@1.0.0`, an
//! interface no host provides, so the host can check that such a component is refused with a clear
//! error (at deploy/instantiate time) instead of misbehaving. The import is genuinely used: a
//! request carrying the header `x-poke` calls `thing.poke()`.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wit_bindgen::generate!({
    inline: r"
        package zero:nonexistent@1.0.0;

        interface thing {
            poke: func() -> u32;
        }

        world w {
            import thing;
        }
    ",
    world: "zero:nonexistent/w@1.0.0",
});

struct Component;

wasi::http::proxy::export!(Component);

impl Guest for Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body_text = if request.headers().has("x-poke") {
            format!("poked: {}\n", zero::nonexistent::thing::poke())
        } else {
            "not poked (send x-poke to call zero:nonexistent/thing.poke)\n".to_string()
        };

        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("outgoing body");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let out = body.write().expect("outgoing stream");
            out.blocking_write_and_flush(body_text.as_bytes())
                .expect("write body");
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
