//! EC2's XML, written by hand: an escaping element writer ([`Xml`]), the success envelope
//! (`<{Op}Response xmlns=…><requestId>…`) and the error envelope (`<Response><Errors>…`).
//! Element names are the botocore model's `locationName`s; callers pass them literally.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use trellis_model::lattice::Tags;

use super::error::Ec2Error;

const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// The members of a response, as XML text with every value escaped.
#[derive(Debug, Default)]
pub(crate) struct Xml {
    out: String,
}

/// Escapes text for element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Carriage returns would be normalised away by a parser; keep them.
            '\r' => out.push_str("&#13;"),
            // XML 1.0 cannot carry other control characters at all, even as references: an
            // echoed parameter holding one would make the whole answer unparseable.
            '\t' | '\n' => out.push(c),
            c if (c.is_control() && c < '\u{7f}') || matches!(c, '\u{fffe}' | '\u{ffff}') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A 200 answer: the operation's response element around `body`.
pub(crate) fn success(action: &str, request_id: &str, body: &Xml) -> Response {
    let text = format!(
        "{DECLARATION}<{action}Response xmlns=\"{NAMESPACE}\"><requestId>{}</requestId>{}</{action}Response>",
        escape(request_id),
        body.out
    );
    respond(StatusCode::OK, text)
}

/// An error answer: `<Response><Errors><Error>…` with the error's status.
pub(crate) fn failure(err: &Ec2Error, request_id: &str) -> Response {
    error_envelope(err.status(), err.code.as_str(), &err.message, request_id)
}

/// The `<Response><Errors>` answer of any error code (the signature checks' too).
pub(crate) fn error_envelope(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let text = format!(
        "{DECLARATION}<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    );
    respond(status, text)
}

/// A response with an XML body.
pub(crate) fn respond(status: StatusCode, text: String) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    resp
}

// === impl Xml ===

impl Xml {
    /// `<name>text</name>`, escaped.
    pub(crate) fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.out, "<{name}>{}</{name}>", escape(text));
        self
    }

    /// `<name>true|false</name>`.
    pub(crate) fn flag(&mut self, name: &str, value: bool) -> &mut Self {
        self.leaf(name, if value { "true" } else { "false" })
    }

    /// `<name>n</name>`.
    pub(crate) fn number(&mut self, name: &str, value: u64) -> &mut Self {
        let _ = write!(self.out, "<{name}>{value}</{name}>");
        self
    }

    /// `<name>`, to be closed with [`Self::close`].
    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "<{name}>");
        self
    }

    /// `</name>`.
    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "</{name}>");
        self
    }

    /// `<tagSet><item><key>…</key><value>…</value></item>…</tagSet>`; nothing when there are no
    /// tags, as AWS leaves the member out.
    pub(crate) fn tag_set(&mut self, tags: &Tags) -> &mut Self {
        if tags.is_empty() {
            return self;
        }
        self.open("tagSet");
        for (key, value) in tags {
            self.open("item").leaf("key", key).leaf("value", value).close("item");
        }
        self.close("tagSet")
    }

    /// The text written so far.
    pub(crate) fn as_str(&self) -> &str {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_xml_reserves() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("bell\u{7}\ttab\nline"), "bell\u{fffd}\ttab\nline");
        let mut x = Xml::default();
        x.leaf("key", "<&>").flag("isDefault", false).number("n", 3);
        assert_eq!(x.as_str(), "<key>&lt;&amp;&gt;</key><isDefault>false</isDefault><n>3</n>");
    }

    #[test]
    fn tag_sets_are_omitted_when_empty() {
        let mut x = Xml::default();
        x.tag_set(&Tags::new());
        assert_eq!(x.as_str(), "");
        x.tag_set(&Tags::from([("Name".to_owned(), "a'b".to_owned())]));
        assert_eq!(x.as_str(), "<tagSet><item><key>Name</key><value>a&apos;b</value></item></tagSet>");
    }
}
