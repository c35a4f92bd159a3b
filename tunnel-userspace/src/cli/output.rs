//! Output conventions shared by every show command: iproute2-like text by
//! default, `-j` for JSON (one document per command), `-p` to pretty-print it.

use serde_json::Value;

#[derive(Clone, Copy, Debug, Default)]
pub struct Format {
    pub json: bool,
    pub pretty: bool,
}

impl Format {
    pub fn print_json(&self, value: &Value) {
        let text = if self.pretty {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        };
        println!("{}", text.expect("JSON values always serialize"));
    }
}

/// Lower-case hex of a byte slice, space-separated per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
