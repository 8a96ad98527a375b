//! Chat templates: `tokenizer.chat_template` is a Jinja template; Duet recognises the ChatML
//! form (no Jinja engine) and renders one user turn with the generation prompt:
//!
//! ```text
//! <|im_start|>system\n{default system message}<|im_end|>\n   (only if the template has one)
//! <|im_start|>user\n{message}<|im_end|>\n
//! <|im_start|>assistant\n
//! ```
//!
//! A template is taken as ChatML when it writes `'<|im_start|>' + message['role'] + '\n' +
//! message['content'] + '<|im_end|>'` (or `message.role` / `message.content`) for every
//! message and `'<|im_start|>assistant\n'` under `add_generation_prompt`. Its default system
//! message is the text of a string literal of the form `'<|im_start|>system\n...<|im_end|>'`
//! (the turn inserted when the conversation has no system message), read from the template
//! itself. Any other template is an error.

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";

/// A recognised ChatML chat template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    default_system: Option<String>,
}

/// The string literals of a Jinja template (single or double quoted, with `\n`, `\t`, `\\`
/// and quote escapes decoded), in order.
fn literals(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = template.chars();
    let mut in_code = false;
    let mut prev = '\0';
    while let Some(c) = chars.next() {
        // only text inside `{{ }}` / `{% %}` is code; quotes in the template's literal text
        // are plain characters
        if !in_code {
            if prev == '{' && (c == '{' || c == '%') {
                in_code = true;
            }
            prev = c;
            continue;
        }
        if (c == '}' && (prev == '}' || prev == '%')) && prev != '\0' {
            in_code = false;
            prev = '\0';
            continue;
        }
        prev = c;
        if c != '\'' && c != '"' {
            continue;
        }
        let quote = c;
        let mut lit = String::new();
        while let Some(d) = chars.next() {
            match d {
                '\\' => match chars.next() {
                    Some('n') => lit.push('\n'),
                    Some('t') => lit.push('\t'),
                    Some('r') => lit.push('\r'),
                    Some(e) => lit.push(e),
                    None => break,
                },
                d if d == quote => break,
                d => lit.push(d),
            }
        }
        out.push(lit);
        prev = '\0';
    }
    out
}

/// `s` with all whitespace removed and double quotes made single (to match code loosely).
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect()
}

impl ChatTemplate {
    /// Recognises a ChatML template; anything else is an error saying why.
    pub fn parse(template: &str) -> std::result::Result<Self, String> {
        let code = squash(template);
        let turn = [
            "'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'",
            "'<|im_start|>'+message.role+'\\n'+message.content+'<|im_end|>'",
        ];
        // templates may spell the newline as an escape or as a raw newline character, which
        // `squash` removed
        let turn_raw = turn.map(|t| t.replace("'\\n'", "''"));
        let has_turn = turn
            .iter()
            .map(|t| t.to_string())
            .chain(turn_raw)
            .any(|t| code.contains(&t));
        if !has_turn {
            return Err(
                "not a ChatML template (no '<|im_start|>' + role + '\\n' + content + \
                 '<|im_end|>' turn); Duet renders ChatML templates only"
                    .into(),
            );
        }
        let lits = literals(template);
        let gen_prompt = code.contains("add_generation_prompt")
            && lits
                .iter()
                .any(|l| l.starts_with("<|im_start|>assistant\n"));
        if !gen_prompt {
            return Err(
                "ChatML template without an '<|im_start|>assistant\\n' generation prompt".into(),
            );
        }
        let default_system = lits.iter().find_map(|l| {
            let rest = l.strip_prefix("<|im_start|>system\n")?;
            let (msg, _) = rest.split_once(END)?;
            Some(msg.to_string())
        });
        if let Some(m) = &default_system {
            if m.contains(START) {
                return Err("default system message contains <|im_start|>".into());
            }
        }
        Ok(Self { default_system })
    }

    /// The system message the template inserts when the conversation has none.
    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    /// The prompt for one user message followed by the assistant's turn
    /// (`add_generation_prompt`), with the template's default system message if it has one.
    pub fn render(&self, user: &str) -> String {
        let mut s = String::new();
        if let Some(sys) = &self.default_system {
            s.push_str(&format!("{START}system\n{sys}{END}\n"));
        }
        s.push_str(&format!("{START}user\n{user}{END}\n{START}assistant\n"));
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_a_default_system_message() {
        let t = ChatTemplate::parse(SMOL).unwrap();
        assert_eq!(
            t.default_system(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(
            t.render("Hi?"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn escaped_newlines_and_dotted_access() {
        // Qwen2-style: escapes in the literals, `message.role`, a default system message
        let t = r#"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"#;
        let t = ChatTemplate::parse(t).unwrap();
        assert_eq!(
            t.default_system(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
    }

    #[test]
    fn plain_chatml_has_no_system_turn() {
        let t = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ \"<|im_start|>assistant\\n\" }}{% endif %}";
        let t = ChatTemplate::parse(t).unwrap();
        assert_eq!(t.default_system(), None);
        assert_eq!(
            t.render("x"),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn other_templates_are_refused() {
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
        assert!(ChatTemplate::parse(llama3).unwrap_err().contains("ChatML"));
        assert!(ChatTemplate::parse("").is_err());
        let no_prompt = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}{% endfor %}";
        assert!(ChatTemplate::parse(no_prompt).is_err());
    }
}
