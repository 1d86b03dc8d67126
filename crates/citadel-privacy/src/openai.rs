//! Where the text is in OpenAI-compatible bodies. Redaction rewrites only
//! these strings (message contents, prompts, embedding inputs, answers),
//! never model names, parameters or tool schemas, so a redacted request is
//! still the same request.

use serde_json::Value;

/// Calls `f` on every text a request body sends to the model:
/// `messages[].content` (a string, or the `text` of its `text` parts),
/// `prompt` (string or list of strings) and `input` (string or list of
/// strings; token arrays are left alone).
pub fn for_each_request_text(body: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(messages)) = obj.get_mut("messages") {
        for m in messages {
            if let Some(content) = m.get_mut("content") {
                content_texts(content, f);
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

/// Calls `f(choice index, text)` on every answer text of a response body
/// or of one streamed chunk: `choices[].message.content`,
/// `choices[].delta.content` and `choices[].text`.
pub fn for_each_answer_text(body: &mut Value, f: &mut dyn FnMut(u64, &mut String)) {
    let Some(Value::Array(choices)) = body.get_mut("choices") else {
        return;
    };
    for (i, choice) in choices.iter_mut().enumerate() {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        for holder in ["message", "delta"] {
            if let Some(Value::String(s)) =
                choice.get_mut(holder).and_then(|m| m.get_mut("content"))
            {
                f(index, s);
            }
        }
        if let Some(Value::String(s)) = choice.get_mut("text") {
            f(index, s);
        }
    }
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
        assert_eq!(seen, ["a", "b", "d", "e"]);
        assert_eq!(body["messages"][1]["content"][0]["text"], "B");
        assert_eq!(body["model"], "bob@example.org");
    }

    #[test]
    fn answers_and_deltas_are_visited_by_choice() {
        let mut body = json!({"choices": [
            {"index": 0, "message": {"content": "x"}},
            {"index": 1, "delta": {"content": "y"}, "finish_reason": "stop"},
            {"index": 2, "text": "z"}
        ]});
        let mut seen = Vec::new();
        for_each_answer_text(&mut body, &mut |i, s| seen.push((i, s.clone())));
        assert_eq!(seen, [(0, "x".into()), (1, "y".into()), (2, "z".into())]);
        assert_eq!(finished_choices(&body), [1]);
    }
}
