//! Where the text is in OpenAI-compatible bodies. Redaction rewrites only
//! these strings (message contents, prompts, embedding inputs, answers),
//! never model names, parameters or tool schemas, so a redacted request is
//! still the same request.

use serde_json::Value;

/// Calls `f` on every text a request body sends to the model:
/// `messages[].content` (a string, or the `text` of its `text` parts),
/// the `arguments` of `messages[].tool_calls` (what a model extracted
/// earlier, sent back each turn), `prompt` (string or list of strings) and
/// `input` (string or list of strings; token arrays are left alone).
pub fn for_each_request_text(body: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        for m in messages {
            if let Some(content) = m.get_mut("content") {
                content_texts(content, f);
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for call in calls {
                    if let Some(Value::String(args)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                    {
                        f(args);
                    }
                }
            }
        }
    }
    for key in ["prompt", "input"] {
        match obj.get_mut(key) {
            Some(Value::String(s)) => f(s),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::String(s) = item {
                        f(s);
                    }
                }
            }
            _ => {}
        }
    }
}

fn content_texts(content: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match content {
        Value::String(s) => f(s),
        Value::Array(parts) => {
            for part in parts {
                if part.get("type").and_then(Value::as_str) == Some("text") {
                    if let Some(Value::String(s)) = part.get_mut("text") {
                        f(s);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Which text of a choice a piece belongs to: streamed pieces of one slot
/// are joined, never pieces of two slots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `content` (chat) or `text` (completions).
    Content,
    /// `refusal`.
    Refusal,
    /// `reasoning_content`.
    Reasoning,
    /// The `arguments` of the tool call with this index.
    ToolArguments(u64),
}

/// Calls `f(choice index, slot, text)` on every answer text of a response
/// body or of one streamed chunk: in `choices[].message` and
/// `choices[].delta`, the `content` (a string or its text parts),
/// `refusal`, `reasoning_content` and each tool call's `arguments`; and
/// `choices[].text`.
pub fn for_each_answer_text(body: &mut Value, f: &mut dyn FnMut(u64, Slot, &mut String)) {
    let Some(Value::Array(choices)) = body.get_mut("choices") else {
        return;
    };
    for (i, choice) in choices.iter_mut().enumerate() {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        for holder in ["message", "delta"] {
            let Some(m) = choice.get_mut(holder) else {
                continue;
            };
            if let Some(content) = m.get_mut("content") {
                content_texts(content, &mut |s| f(index, Slot::Content, s));
            }
            for (key, slot) in [
                ("refusal", Slot::Refusal),
                ("reasoning_content", Slot::Reasoning),
            ] {
                if let Some(Value::String(s)) = m.get_mut(key) {
                    f(index, slot, s);
                }
            }
            if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                for (n, call) in calls.iter_mut().enumerate() {
                    let tool = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(n as u64);
                    if let Some(Value::String(args)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                    {
                        f(index, Slot::ToolArguments(tool), args);
                    }
                }
            }
        }
        if let Some(Value::String(s)) = choice.get_mut("text") {
            f(index, Slot::Content, s);
        }
    }
}

/// Removes token log-probabilities from every choice: they repeat the
/// answer token by token and cannot be redacted consistently with it.
/// Returns whether any were removed.
pub fn drop_logprobs(body: &mut Value) -> bool {
    let Some(Value::Array(choices)) = body.get_mut("choices") else {
        return false;
    };
    let mut dropped = false;
    for choice in choices {
        if let Some(obj) = choice.as_object_mut() {
            dropped |= obj.remove("logprobs").is_some_and(|v| !v.is_null());
        }
    }
    dropped
}

/// Whether a streamed chunk finishes choice `index` (`finish_reason` set).
pub fn finished_choices(chunk: &Value) -> Vec<u64> {
    let Some(Value::Array(choices)) = chunk.get("choices") else {
        return Vec::new();
    };
    choices
        .iter()
        .enumerate()
        .filter(|(_, c)| c.get("finish_reason").is_some_and(|r| !r.is_null()))
        .map(|(i, c)| c.get("index").and_then(Value::as_u64).unwrap_or(i as u64))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_contents_and_prompts_are_visited() {
        let mut body = json!({
            "model": "bob@example.org",
            "messages": [
                {"role": "system", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": "c"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "n", "arguments": "t"}}]},
            ],
            "prompt": ["d", 1],
            "input": "e",
            "tools": [{"function": {"description": "f"}}]
        });
        let mut seen = Vec::new();
        for_each_request_text(&mut body, &mut |s| {
            seen.push(s.clone());
            s.make_ascii_uppercase();
        });
        assert_eq!(seen, ["a", "b", "t", "d", "e"]);
        assert_eq!(body["messages"][1]["content"][0]["text"], "B");
        assert_eq!(body["model"], "bob@example.org");
    }

    #[test]
    fn answers_and_deltas_are_visited_by_choice() {
        let mut body = json!({"choices": [
            {"index": 0, "message": {"content": "x", "refusal": "r",
                "tool_calls": [{"index": 3, "function": {"arguments": "{}"}}]}, "logprobs": {"content": []}},
            {"index": 1, "delta": {"content": "y", "reasoning_content": "think"}, "finish_reason": "stop"},
            {"index": 2, "text": "z"}
        ]});
        let mut seen = Vec::new();
        for_each_answer_text(&mut body, &mut |i, slot, s| seen.push((i, slot, s.clone())));
        assert_eq!(
            seen,
            [
                (0, Slot::Content, "x".into()),
                (0, Slot::Refusal, "r".into()),
                (0, Slot::ToolArguments(3), "{}".into()),
                (1, Slot::Content, "y".into()),
                (1, Slot::Reasoning, "think".into()),
                (2, Slot::Content, "z".into()),
            ]
        );
        assert_eq!(finished_choices(&body), [1]);
        assert!(drop_logprobs(&mut body));
        assert!(body["choices"][0].get("logprobs").is_none());
    }
}
