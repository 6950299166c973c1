//! The cheapest filter that can route by model, for the benchmark's floor:
//! with configuration `router` it holds the request headers and reads the
//! whole body (a router needs the model from it); `router+answer` also reads
//! every chunk of the answer as it passes (the least a filter that counts
//! tokens must do); with `upstream` it only exists (an upstream filter
//! context per attempt, as aigw's upstream role).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Floor { reads_body: false, reads_answer: false })
    });
}}

struct Floor {
    reads_body: bool,
    reads_answer: bool,
}

impl Context for Floor {}

impl RootContext for Floor {
    fn on_configure(&mut self, _size: usize) -> bool {
        let role = self.get_plugin_configuration().unwrap_or_default();
        self.reads_answer = role == b"router+answer";
        self.reads_body = role == b"router" || self.reads_answer;
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor {
            reads_body: self.reads_body,
            reads_answer: self.reads_answer,
        }))
    }
}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if self.reads_body && !end_of_stream {
            let _ = self.get_http_request_headers_bytes();
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.reads_body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let _ = self.get_http_request_body(0, size);
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _end_of_stream: bool) -> Action {
        if self.reads_answer && size > 0 {
            let _ = self.get_http_response_body(0, size);
        }
        Action::Continue
    }
}
