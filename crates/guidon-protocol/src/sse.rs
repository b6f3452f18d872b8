//! A Server-Sent Events parser (the WHATWG event-stream format): bytes in,
//! events out. Lines end in LF, CRLF or CR; an event is dispatched on a
//! blank line, so an event cut off mid-way by a dropped connection is never
//! dispatched. Comments (`: heartbeat`) are reported as activity.
//!
//! Pure, as the rest of this crate: the caller reads the bytes (the SDK's
//! SSE transport, the server's test support) and feeds them in, so every
//! reader of Guidon's streams parses them the same way.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// What one line or block of input produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(SseEvent),
    /// A comment line (the server's heartbeat).
    Comment,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event exceeds {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug)]
pub struct SseParser {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The previous byte was CR: a following LF belongs to the same line end.
    after_cr: bool,
    event: String,
    id: Option<String>,
    data: String,
    has_data: bool,
    /// Bytes buffered for the current event (line + data).
    max_event: usize,
}

impl SseParser {
    pub fn new(max_event: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            id: None,
            data: String::new(),
            has_data: false,
            max_event,
        }
    }

    /// Feeds a chunk; complete events and comments are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Item>) -> Result<(), SseError> {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    self.check_size()?;
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out);
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    self.check_size()?;
                }
            }
        }
        Ok(())
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Item>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Item::Event(SseEvent {
                    event: if self.event.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.event)
                    },
                    id: self.id.clone(),
                    data: std::mem::take(&mut self.data),
                }));
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            out.push(Item::Comment);
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&*text, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Item> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).expect("parses");
        }
        out
    }

    fn ev(event: &str, id: Option<&str>, data: &str) -> Item {
        Item::Event(SseEvent {
            event: event.into(),
            id: id.map(Into::into),
            data: data.into(),
        })
    }

    #[test]
    fn events_comments_and_line_ends() {
        let input = b": heartbeat\n\nevent: snapshot\nid: 3\ndata: {\"a\":1}\n\nevent:update\r\nid:4\r\ndata:x\r\ndata: y\r\r\n";
        let want = vec![
            Item::Comment,
            ev("snapshot", Some("3"), "{\"a\":1}"),
            ev("update", Some("4"), "x\ny"),
        ];
        assert_eq!(parse_chunks(&[input]), want);
        // Byte by byte, the same.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), want);
        // A CR at the end of one chunk and LF at the start of the next is one line end.
        assert_eq!(
            parse_chunks(&[b"data: a\r", b"\n\r", b"\n"]),
            vec![ev("message", None, "a")]
        );
    }

    #[test]
    fn an_event_cut_mid_way_is_never_dispatched() {
        assert_eq!(
            parse_chunks(&[b"event: update\nid: 9\ndata: {\"type\":\"upd"]),
            vec![]
        );
        assert_eq!(parse_chunks(&[b"data: whole\n"]), vec![]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(8);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"data: 0123456789\n\n", &mut out),
            Err(SseError::TooLarge(8))
        );
    }
}
