//! Layer 8, inspect response: the answer is redacted before the caller
//! sees it, when the route redacts (or policy made the request redacted),
//! and pseudonyms the request was given are turned back into the caller's
//! values where policy allows `reidentify`.
//!
//! - A JSON answer is read whole (up to `[privacy] max_answer_bytes`), its
//!   answer texts redacted, and sent on.
//! - A streamed answer (SSE) is redacted in flight, event by event, per
//!   choice: a value split across chunks is still found (the stream
//!   redactor holds back only text that may be the start of a value, and
//!   at most `stream_hold_bytes`), and held text is released before the
//!   choice finishes. The whole answer is never buffered.
//!
//! Fail closed: an answer that cannot be inspected (not the JSON it claims
//! to be, too large, an unknown content type) is never passed on as is: a
//! JSON answer becomes 502 `answer_not_inspectable`; a stream ends with an
//! in-stream `event: error` naming the same code.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use citadel_core::{ApiError, ErrorCode};
use citadel_privacy::openai::{drop_logprobs, finished_choices, for_each_answer_text, Slot};
use citadel_privacy::{PseudonymMap, Redactor, Scanner, StreamRedactor, StreamReidentifier, Tally};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::context::{RequestInfo, Trail};
use crate::inspect::Inspected;
use crate::state::GatewayState;
use crate::{error_response, full, BoxError, GatewayBody, GatewayResponse};

/// Longest SSE event accepted before its end arrives.
const MAX_EVENT_BYTES: usize = 1 << 20;

fn content_type(response: &GatewayResponse) -> String {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn not_inspectable(info: &RequestInfo, trail: &Trail, why: &str) -> GatewayResponse {
    tracing::warn!(request_id = %info.id, reason = why, "answer not inspectable; withheld");
    trail.update(|t| t.error = Some(ErrorCode::AnswerNotInspectable));
    error_response(
        &ApiError::new(
            ErrorCode::AnswerNotInspectable,
            format!("the model's answer could not be inspected ({why}), so it was withheld"),
        ),
        Some(&info.id),
    )
}

fn record_answer(trail: &Trail, tally: &Tally, reidentified: u64) {
    trail.update(|t| {
        let p = t.privacy.get_or_insert_with(Default::default);
        p.answer_findings = tally.counts.clone();
        p.reidentified = reidentified;
    });
}

/// Inspects the answer as [`Inspected`] says.
pub(crate) async fn inspect_answer(
    state: Arc<GatewayState>,
    inspected: Inspected,
    response: GatewayResponse,
    info: RequestInfo,
    trail: Trail,
) -> GatewayResponse {
    let (info, trail) = (&info, &trail);
    if inspected.answer_mode.is_none() && inspected.capture.is_none() {
        return response;
    }
    let kind = content_type(&response);
    let success = response.status().is_success();
    let redactor = inspected.answer_mode.map(|m| state.privacy.redactor(m));
    let scanner = state.privacy.scanner();
    if kind.starts_with("text/event-stream") {
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let body = SseInspectBody::new(body, &state, &inspected, info.clone(), trail.clone());
        return http::Response::from_parts(parts, body.boxed_unsync());
    }
    if !kind.starts_with("application/json") {
        if !success {
            // An upstream's own error page carries no model output.
            return response;
        }
        return not_inspectable(info, trail, "unexpected content type");
    }
    let (mut parts, body) = response.into_parts();
    let limit = state.privacy.config.max_answer_bytes;
    let bytes = match read_answer(body, limit).await {
        Ok(b) => b,
        Err(why) => return not_inspectable(info, trail, why),
    };
    let Ok(mut json) = serde_json::from_slice::<Value>(&bytes) else {
        return not_inspectable(info, trail, "not valid JSON");
    };
    let mut tally = Tally::default();
    let mut reidentified = 0;
    let mut own = PseudonymMap::default();
    let mut captured = Vec::new();
    if redactor.is_some() {
        drop_logprobs(&mut json);
    }
    for_each_answer_text(&mut json, &mut |_, _, text| {
        let redacted = match &redactor {
            Some(r) => {
                let found = scanner.scan(text);
                tally.add(&found);
                r.apply(text, &found, &mut own)
            }
            None => text.clone(),
        };
        if inspected.capture.is_some() {
            captured.push(redacted.clone());
        }
        *text = inspected
            .pseudonyms
            .reidentify_counting(&redacted, &mut reidentified);
    });
    record_answer(trail, &tally, reidentified);
    if let Some(target) = &inspected.capture {
        crate::capture::store_capture(
            &state,
            target,
            "answer",
            serde_json::to_string(&captured).unwrap_or_default(),
        );
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let out = serde_json::to_vec(&json).unwrap_or_default();
    http::Response::from_parts(parts, full(out))
}

/// Reads a whole answer of at most `limit` bytes.
async fn read_answer(mut body: GatewayBody, limit: usize) -> Result<Bytes, &'static str> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "the answer broke off")?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err("larger than privacy.max_answer_bytes");
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// One choice's redaction state in a stream.
struct ChoiceStream {
    /// `None` when answers are only captured, not redacted.
    redactor: Option<StreamRedactor>,
    reidentifier: StreamReidentifier,
    /// The redacted text so far, when capturing (bounded).
    captured: String,
}

impl ChoiceStream {
    fn tally(&self) -> Tally {
        self.redactor
            .as_ref()
            .map(|r| r.tally.clone())
            .unwrap_or_default()
    }
}

/// Most answer text captured per choice.
const MAX_CAPTURE_BYTES: usize = 1 << 20;

/// A streamed answer, redacted event by event.
struct SseInspectBody {
    inner: GatewayBody,
    scanner: Arc<Scanner>,
    redactor: Option<Arc<Redactor>>,
    pseudonyms: Arc<PseudonymMap>,
    hold: usize,
    info: RequestInfo,
    trail: Trail,
    capture: Option<(Arc<GatewayState>, crate::capture::CaptureTarget)>,
    /// Captured text of choices already finished.
    captured: Vec<String>,
    buffer: BytesMut,
    out: VecDeque<Bytes>,
    /// One stream per choice and slot (content, refusal, a tool call's
    /// arguments, …).
    choices: BTreeMap<(u64, Slot), ChoiceStream>,
    /// Pseudonyms made for values the answer itself carries (never given back).
    own: PseudonymMap,
    /// The last chunk seen, as the shape for chunks Citadel adds.
    template: Option<Value>,
    /// Findings of choices already finished.
    finished_tally: Tally,
    reidentified: u64,
    done: bool,
    recorded: bool,
}

impl SseInspectBody {
    fn new(
        inner: GatewayBody,
        state: &Arc<GatewayState>,
        inspected: &Inspected,
        info: RequestInfo,
        trail: Trail,
    ) -> Self {
        Self {
            inner,
            scanner: state.privacy.scanner(),
            redactor: inspected.answer_mode.map(|m| state.privacy.redactor(m)),
            pseudonyms: inspected.pseudonyms.clone(),
            hold: state.privacy.config.stream_hold_bytes,
            info,
            trail,
            capture: inspected.capture.clone().map(|t| (state.clone(), t)),
            captured: Vec::new(),
            buffer: BytesMut::new(),
            out: VecDeque::new(),
            choices: BTreeMap::new(),
            own: PseudonymMap::default(),
            template: None,
            finished_tally: Tally::default(),
            reidentified: 0,
            done: false,
            recorded: false,
        }
    }

    fn choice(&mut self, key: (u64, Slot)) -> &mut ChoiceStream {
        let (scanner, redactor, hold) = (self.scanner.clone(), self.redactor.clone(), self.hold);
        self.choices.entry(key).or_insert_with(|| ChoiceStream {
            redactor: redactor.map(|r| StreamRedactor::new(scanner, r, hold)),
            reidentifier: StreamReidentifier::default(),
            captured: String::new(),
        })
    }

    /// Redacts one piece of a choice's text.
    fn pass(&mut self, key: (u64, Slot), text: &str) -> String {
        let pseudonyms = self.pseudonyms.clone();
        let mut own = std::mem::take(&mut self.own);
        let capturing = self.capture.is_some();
        let c = self.choice(key);
        let redacted = match &mut c.redactor {
            Some(r) => r.push(text, &mut own),
            None => text.to_owned(),
        };
        if capturing && c.captured.len() < MAX_CAPTURE_BYTES {
            c.captured.push_str(&redacted);
        }
        let out = c.reidentifier.push(&redacted, &pseudonyms);
        self.own = own;
        out
    }

    /// Everything a choice's slot still holds.
    fn flush(&mut self, key: &(u64, Slot)) -> String {
        let pseudonyms = self.pseudonyms.clone();
        let mut own = std::mem::take(&mut self.own);
        let Some(c) = self.choices.get_mut(key) else {
            self.own = own;
            return String::new();
        };
        let redacted = match &mut c.redactor {
            Some(r) => r.finish(&mut own),
            None => String::new(),
        };
        if c.captured.len() < MAX_CAPTURE_BYTES {
            c.captured.push_str(&redacted);
        }
        let mut out = c.reidentifier.push(&redacted, &pseudonyms);
        out.push_str(&c.reidentifier.finish(&pseudonyms));
        self.own = own;
        out
    }

    /// A chunk in the stream's own shape carrying `text` for a choice's slot.
    fn synthesized(&self, key: &(u64, Slot), text: String) -> Option<Bytes> {
        let mut chunk = self.template.clone()?;
        let completion = chunk.get("object").and_then(Value::as_str) == Some("text_completion");
        let index = key.0;
        let delta = match &key.1 {
            Slot::Content => json!({"content": text}),
            Slot::Refusal => json!({"refusal": text}),
            Slot::Reasoning => json!({"reasoning_content": text}),
            Slot::ToolArguments(tool) => {
                json!({"tool_calls": [{"index": tool, "function": {"arguments": text}}]})
            }
        };
        let choice = if completion {
            json!({"index": index, "text": text, "finish_reason": null})
        } else {
            json!({"index": index, "delta": delta, "finish_reason": null})
        };
        chunk["choices"] = json!([choice]);
        if let Some(obj) = chunk.as_object_mut() {
            obj.remove("usage");
        }
        Some(Bytes::from(format!("data: {chunk}\n\n")))
    }

    /// Releases what every choice holds, as chunks of their own.
    fn flush_all(&mut self) {
        let keys: Vec<(u64, Slot)> = self.choices.keys().cloned().collect();
        for key in keys {
            let text = self.flush(&key);
            if !text.is_empty() {
                if let Some(event) = self.synthesized(&key, text) {
                    self.out.push_back(event);
                }
            }
        }
    }

    /// Ends the stream: the answer could not be inspected.
    fn fail(&mut self, why: &str) {
        tracing::warn!(request_id = %self.info.id, reason = why, "streamed answer not inspectable; stream ended");
        self.trail
            .update(|t| t.error = Some(ErrorCode::AnswerNotInspectable));
        self.out.push_back(crate::body::sse_error_event(
            ErrorCode::AnswerNotInspectable,
            &format!("the rest of this answer could not be inspected ({why}), so it was withheld"),
            &self.info.id,
        ));
        for c in std::mem::take(&mut self.choices).into_values() {
            self.finished_tally.merge(&c.tally());
            self.reidentified += c.reidentifier.replaced;
            self.captured.push(c.captured);
        }
        self.done = true;
    }

    /// One whole SSE event (without its blank line).
    fn event(&mut self, raw: &str) {
        let mut other = Vec::new();
        let mut data: Option<String> = None;
        for line in raw.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(rest) = line.strip_prefix("data:") {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(rest);
                    }
                    None => data = Some(rest.to_owned()),
                }
            } else {
                other.push(line);
            }
        }
        let Some(data) = data else {
            self.out.push_back(Bytes::from(format!("{raw}\n\n")));
            return;
        };
        if data.trim() == "[DONE]" {
            self.flush_all();
            self.out.push_back(Bytes::from(format!("{raw}\n\n")));
            return;
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else {
            self.fail("a chunk is not JSON");
            return;
        };
        if chunk.get("error").is_some() && chunk.get("choices").is_none() {
            // An error event (the upstream's, or a revocation's) carries
            // no answer text.
            self.out.push_back(Bytes::from(format!("{raw}\n\n")));
            return;
        }
        if self.redactor.is_some() {
            drop_logprobs(&mut chunk);
        }
        let finished = finished_choices(&chunk);
        // Each text of the chunk, in order, and what goes out in its place.
        let mut texts: Vec<((u64, Slot), String)> = Vec::new();
        for_each_answer_text(&mut chunk, &mut |index, slot, text| {
            texts.push(((index, slot), std::mem::take(text)));
        });
        let mut outputs: Vec<String> = Vec::with_capacity(texts.len());
        for (key, text) in &texts {
            outputs.push(self.pass(key.clone(), text));
        }
        for index in &finished {
            let keys: Vec<(u64, Slot)> = self
                .choices
                .keys()
                .filter(|k| k.0 == *index)
                .cloned()
                .collect();
            for key in keys {
                let rest = self.flush(&key);
                match texts.iter().rposition(|(k, _)| *k == key) {
                    Some(at) => outputs[at].push_str(&rest),
                    None if !rest.is_empty() => {
                        self.template.get_or_insert_with(|| chunk.clone());
                        if let Some(event) = self.synthesized(&key, rest) {
                            self.out.push_back(event);
                        }
                    }
                    None => {}
                }
                if let Some(c) = self.choices.remove(&key) {
                    self.finished_tally.merge(&c.tally());
                    self.reidentified += c.reidentifier.replaced;
                    self.captured.push(c.captured);
                }
            }
        }
        let mut next = outputs.into_iter();
        for_each_answer_text(&mut chunk, &mut |_, _, text| {
            if let Some(out) = next.next() {
                *text = out;
            }
        });
        self.template = Some(chunk.clone());
        let mut event = String::new();
        for line in other {
            event.push_str(line);
            event.push('\n');
        }
        event.push_str("data: ");
        event.push_str(&chunk.to_string());
        event.push_str("\n\n");
        self.out.push_back(Bytes::from(event));
    }

    /// Splits the buffer into whole events and handles each.
    fn drain_events(&mut self) {
        loop {
            let Some((end, sep)) = find_event_end(&self.buffer) else {
                if self.buffer.len() > MAX_EVENT_BYTES {
                    self.fail("an event is too large");
                }
                return;
            };
            let raw = self.buffer.split_to(end + sep);
            let Ok(text) = std::str::from_utf8(&raw[..end]) else {
                self.fail("an event is not UTF-8");
                return;
            };
            let text = text.to_owned();
            self.event(&text);
            if self.done {
                return;
            }
        }
    }

    fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let mut tally = self.finished_tally.clone();
        let mut reidentified = self.reidentified;
        let mut captured = std::mem::take(&mut self.captured);
        for c in self.choices.values() {
            tally.merge(&c.tally());
            reidentified += c.reidentifier.replaced;
            captured.push(c.captured.clone());
        }
        record_answer(&self.trail, &tally, reidentified);
        if let Some((state, target)) = &self.capture {
            crate::capture::store_capture(
                state,
                target,
                "answer",
                serde_json::to_string(&captured).unwrap_or_default(),
            );
        }
    }
}

/// Where the first event ends: its length and the separator's.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

impl Drop for SseInspectBody {
    fn drop(&mut self) {
        // The client went away mid-stream: what was found and captured so
        // far is still recorded.
        self.record();
    }
}

impl Body for SseInspectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                this.record();
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if !this.buffer.is_empty() {
                        let rest = this.buffer.split();
                        match std::str::from_utf8(&rest) {
                            Ok(text) if !text.trim().is_empty() => {
                                let text = text.trim_end().to_owned();
                                this.event(&text);
                            }
                            Ok(_) => {}
                            Err(_) => this.fail("an event is not UTF-8"),
                        }
                    }
                    if !this.done {
                        this.flush_all();
                    }
                    this.done = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    // The upstream broke off: what is held is dropped, never
                    // released unredacted.
                    this.done = true;
                    this.record();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                        this.drain_events();
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }
}
